// containerd → containerd-shim-kata-v2 → QEMU VM → kata-agent, driven with `ctr` like a user would: one private
// containerd for the file, busybox imported from a local OCI tar, every container in its own TCG VM.
// After every test nothing of the sandbox may be left: no QEMU, virtiofsd or shim process, mount or directory.
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { KATA_RUNTIME } from '../helpers/containerd.js';
import { leftovers, waitNoLeftovers } from '../helpers/leftovers.js';
import { guestKernelVersion } from './shim-fixtures.js';
import { useKataSuite } from './shim-suite.js';

const suite = useKataSuite();
const id = (prefix: string) => suite.id(prefix);

/** Fails with containerd's log (where the shim's log lines are) when ctr did not do what was expected. */

describe('ctr run with io.containerd.kata.v2', () => {
  it('runs in a VM: uname -r is the guest kernel, not the host one', async () => {
    const r = await suite.k.run(['--rm', suite.k.image, id('uname'), 'uname', '-r']);
    expect(r.code, suite.explain(r)).toBe(0);
    const guest = r.stdout.trim();
    expect(guest).not.toBe(os.release());
    const want = guestKernelVersion(suite.k.guest);
    if (want) expect(guest).toBe(want);
  });

  it('returns the exit code of the process', async () => {
    const r = await suite.k.run(['--rm', suite.k.image, id('exit'), 'sh', '-c', 'exit 7']);
    expect(r.code, suite.explain(r)).toBe(7);
  });

  it('delivers 5,000 lines of stdout in order', async () => {
    const r = await suite.k.run(['--rm', suite.k.image, id('lines'), 'seq', '1', '5000']);
    expect(r.code, suite.explain(r)).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines.length).toBe(5000);
    expect(lines.every((l, i) => l === String(i + 1))).toBe(true);
  });

  it('passes stdin to the process and ends it on EOF', async () => {
    const r = await suite.k.run(['--rm', suite.k.image, id('stdin'), 'sh', '-c', 'cat; echo done'], {
      input: 'hello from the host\n',
    });
    expect(r.code, suite.explain(r)).toBe(0);
    expect(r.stdout).toBe('hello from the host\ndone\n');
  });

  it('moves 16 MiB of binary stdout and stdin intact', async () => {
    const MiB = 1 << 20;
    const hash = (b: Buffer) => createHash('sha256').update(b).digest('hex');
    // stdout: the guest's random bytes on stdout, their sha256 on stderr.
    const out = await suite.k.ctrd.ctrBytes(
      [
        'run',
        '--rm',
        '--runtime',
        KATA_RUNTIME,
        suite.k.image,
        id('stdout16'),
        'sh',
        '-c',
        'dd if=/dev/urandom of=/tmp/d bs=1M count=16 2>/dev/null && sha256sum /tmp/d >&2 && cat /tmp/d',
      ],
      { timeoutMs: 180_000 },
    );
    expect(out.code, out.stderr.toString()).toBe(0);
    expect(out.stdout.length).toBe(16 * MiB);
    expect(out.stderr.toString().split(' ')[0]).toBe(hash(out.stdout));
    // stdin: the host's random bytes into sha256sum in the guest.
    const data = randomBytes(16 * MiB);
    const sum = await suite.k.ctrd.ctrBytes(
      ['run', '--rm', '--runtime', KATA_RUNTIME, suite.k.image, id('stdin16'), 'sha256sum'],
      { input: data, timeoutMs: 180_000 },
    );
    expect(sum.code, sum.stderr.toString()).toBe(0);
    expect(sum.stdout.toString().split(' ')[0]).toBe(hash(data));
  });

  it('gives a tty with -t', async () => {
    const cid = id('tty');
    const ctr = [
      'ctr',
      '--address',
      suite.k.ctrd.socket,
      '-n',
      suite.k.ctrd.namespace,
      'run',
      '--rm',
      '-t',
      '--runtime',
      KATA_RUNTIME,
    ];
    const cmd = [...ctr, suite.k.image, cid, 'sh', '-c', 'tty; [ -t 1 ] && echo IS-A-TTY']
      .map((a) => `'${a}'`)
      .join(' ');
    // ctr -t needs a terminal of its own: script(1) gives it one.
    const out = await new Promise<{ code: number | null; out: string }>((resolve) => {
      const c = spawn('script', ['-qec', cmd, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] });
      let buf = '';
      c.stdout.on('data', (d: Buffer) => {
        buf += d.toString();
      });
      c.stderr.on('data', (d: Buffer) => {
        buf += d.toString();
      });
      c.on('close', (code) => resolve({ code, out: buf }));
    });
    expect(out.code, out.out).toBe(0);
    expect(out.out).toMatch(/\/dev\/pts\/\d+/);
    expect(out.out).toContain('IS-A-TTY');
  });

  it('applies --env and --cwd', async () => {
    const r = await suite.k.run([
      '--rm',
      '--env',
      'GREETING=kata',
      '--cwd',
      '/tmp',
      suite.k.image,
      id('env'),
      'sh',
      '-c',
      'echo $GREETING; pwd',
    ]);
    expect(r.code, suite.explain(r)).toBe(0);
    expect(r.stdout).toBe('kata\n/tmp\n');
  });

  it('shows a read-only bind mount of a host dir and refuses writes', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kata-ts-bind-'));
    try {
      fs.writeFileSync(path.join(dir, 'hello.txt'), 'from the host\n');
      const r = await suite.k.run([
        '--rm',
        '--mount',
        `type=bind,src=${dir},dst=/data,options=rbind:ro`,
        suite.k.image,
        id('bind'),
        'sh',
        '-c',
        'cat /data/hello.txt; if touch /data/new 2>/dev/null; then echo WRITABLE; else echo REFUSED; fi',
      ]);
      expect(r.code, suite.explain(r)).toBe(0);
      expect(r.stdout).toBe('from the host\nREFUSED\n');
      expect(fs.existsSync(path.join(dir, 'new'))).toBe(false);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('enforces --memory-limit in the guest cgroup', async () => {
    const r = await suite.k.run([
      '--rm',
      '--memory-limit',
      String(64 * 1024 * 1024),
      suite.k.image,
      id('mem'),
      'sh',
      '-c',
      // tail keeps a whole "line" of zeros in memory: 16 MiB fits under the limit, 200 MiB (which the VM itself
      // would have room for) does not and is OOM-killed by the container's cgroup.
      'head -c 16m /dev/zero | tail > /dev/null; echo small=$?; head -c 200m /dev/zero | tail > /dev/null; echo big=$?',
    ]);
    expect(r.code, suite.explain(r)).toBe(0);
    expect(r.stdout).toBe('small=0\nbig=137\n');
  });

  it('runs detached: exec, ps, pause/resume, metrics, SIGTERM', async () => {
    const cid = id('detached');
    const r = await suite.k.run([
      '-d',
      suite.k.image,
      cid,
      'sh',
      '-c',
      'trap "exit 42" TERM; while true; do sleep 1; done',
    ]);
    expect(r.code, suite.explain(r)).toBe(0);
    try {
      const ex = await suite.k.ctrd.ctr([
        'task',
        'exec',
        '--exec-id',
        'e1',
        cid,
        'sh',
        '-c',
        'echo in-exec; exit 5',
      ]);
      expect(ex.stdout).toBe('in-exec\n');
      expect(ex.code).toBe(5);

      const ps = await suite.k.ctrd.ctr(['task', 'ps', cid]);
      expect(ps.code, suite.explain(ps)).toBe(0);
      expect(ps.stdout).toMatch(/^\s*\d+/m);

      expect((await suite.k.ctrd.ctr(['task', 'pause', cid])).code).toBe(0);
      expect((await suite.k.ctrd.ctr(['task', 'ls'])).stdout).toMatch(new RegExp(`${cid}\\s+\\d+\\s+PAUSED`));
      expect((await suite.k.ctrd.ctr(['task', 'resume', cid])).code).toBe(0);
      expect((await suite.k.ctrd.ctr(['task', 'ls'])).stdout).toMatch(
        new RegExp(`${cid}\\s+\\d+\\s+RUNNING`),
      );

      const m = await suite.k.ctrd.ctr(['task', 'metrics', cid]);
      expect(m.code, suite.explain(m)).toBe(0);
      expect(m.stdout).toMatch(/memory\.usage_in_bytes\s+\d+/);

      expect((await suite.k.ctrd.ctr(['task', 'kill', '-s', 'SIGTERM', cid])).code).toBe(0);
      const deadline = Date.now() + 60_000;
      while (
        Date.now() < deadline &&
        !new RegExp(`${cid}\\s+\\d+\\s+STOPPED`).test((await suite.k.ctrd.ctr(['task', 'ls'])).stdout)
      ) {
        await new Promise((res) => setTimeout(res, 200));
      }
      const del = await suite.k.ctrd.ctr(['task', 'delete', cid]);
      expect(del.code, suite.explain(del)).toBe(0);
      expect(del.stderr).toMatch(/exit code 42/);
    } finally {
      await suite.k.ctrd.ctr(['task', 'kill', '-s', 'SIGKILL', cid]);
      await suite.k.ctrd.ctr(['task', 'delete', '--force', cid]);
      await suite.k.ctrd.ctr(['container', 'delete', cid]);
    }
  });

  it('runs two sandboxes at once, each in its own VM', async () => {
    const a = id('two-a');
    const b = id('two-b');
    const [ra, rb] = await Promise.all([
      suite.k.run(['--rm', suite.k.image, a, 'sh', '-c', 'sleep 2; cat /proc/sys/kernel/random/boot_id']),
      suite.k.run(['--rm', suite.k.image, b, 'sh', '-c', 'sleep 2; cat /proc/sys/kernel/random/boot_id']),
    ]);
    expect(ra.code, suite.explain(ra)).toBe(0);
    expect(rb.code, suite.explain(rb)).toBe(0);
    // Two kernels booted: two boot ids.
    expect(ra.stdout.trim()).toMatch(/^[0-9a-f-]{36}$/);
    expect(ra.stdout.trim()).not.toBe(rb.stdout.trim());
  });

  it("runs a pod's containers in the sandbox's VM and shim (CRI annotations)", async () => {
    const sid = id('pod');
    const cid = id('podc');
    const cri = (type: string) => [
      '--annotation',
      `io.kubernetes.cri.container-type=${type}`,
      '--annotation',
      `io.kubernetes.cri.sandbox-id=${sid}`,
    ];
    const r = await suite.k.run(['-d', ...cri('sandbox'), suite.k.image, sid, 'sleep', '600']);
    expect(r.code, suite.explain(r)).toBe(0);
    try {
      const sbBoot = await suite.k.ctrd.ctr([
        'task',
        'exec',
        '--exec-id',
        'b',
        sid,
        'cat',
        '/proc/sys/kernel/random/boot_id',
      ]);
      expect(sbBoot.code, suite.explain(sbBoot)).toBe(0);
      const c = await suite.k.run([
        '--rm',
        ...cri('container'),
        suite.k.image,
        cid,
        'cat',
        '/proc/sys/kernel/random/boot_id',
      ]);
      expect(c.code, suite.explain(c)).toBe(0);
      // Same kernel: the container ran in the sandbox's VM, served by the sandbox's shim.
      expect(c.stdout.trim()).toBe(sbBoot.stdout.trim());
      expect(leftovers([cid]).filter((l) => l.startsWith('processes'))).toEqual([]);
      const qemus = leftovers([sid]).filter((l) => /qemu-system/.test(l));
      expect(qemus.length).toBe(1);
    } finally {
      await suite.k.ctrd.ctr(['task', 'kill', '-s', 'SIGKILL', sid]);
      for (let i = 0; i < 100 && (await suite.k.ctrd.ctr(['task', 'delete', sid])).code !== 0; i++) {
        await new Promise((res) => setTimeout(res, 100));
      }
      await suite.k.ctrd.ctr(['container', 'delete', sid]);
    }
  });

  it('cleans up after a shim that was killed (containerd runs shim delete)', async () => {
    const cid = id('crash');
    const r = await suite.k.run(['-d', suite.k.image, cid, 'sleep', '600']);
    expect(r.code, suite.explain(r)).toBe(0);
    try {
      const bundle = path.join(
        suite.k.ctrd.dir,
        'state/io.containerd.runtime.v2.task',
        suite.k.ctrd.namespace,
        cid,
      );
      const shimPid = Number(fs.readFileSync(path.join(bundle, 'shim.pid'), 'utf8'));
      expect(fs.existsSync(`/run/kata/${cid}/state.json`)).toBe(true);
      process.kill(shimPid, 'SIGKILL');
      // containerd notices the closed connection, runs `shim delete`, which kills QEMU and virtiofsd and unmounts.
      expect(await waitNoLeftovers([cid], { timeoutMs: 60_000 })).toEqual([]);
      const ls = await suite.k.ctrd.ctr(['task', 'ls']);
      expect(ls.stdout).not.toMatch(new RegExp(`${cid}\\s+\\d+\\s+RUNNING`));
    } finally {
      await suite.k.ctrd.ctr(['task', 'delete', '--force', cid]);
      await suite.k.ctrd.ctr(['container', 'delete', cid]);
    }
  });

  it('takes the configuration from --runtime-config-path (guest memory)', async () => {
    const small = suite.k.writeConfig('small.toml', { 'hypervisor.qemu': { default_memory: 512 } });
    const big = suite.k.writeConfig('big.toml', { 'hypervisor.qemu': { default_memory: 1536 } });
    const memTotal = async (conf: string) => {
      const r = await suite.k.run([
        '--rm',
        '--runtime-config-path',
        conf,
        suite.k.image,
        id('meminfo'),
        'grep',
        'MemTotal',
        '/proc/meminfo',
      ]);
      expect(r.code, suite.explain(r)).toBe(0);
      return Number(/MemTotal:\s+(\d+)/.exec(r.stdout)?.[1]) / 1024;
    };
    const s = await memTotal(small);
    const b = await memTotal(big);
    expect(s).toBeLessThanOrEqual(512);
    expect(s).toBeGreaterThan(512 * 0.7);
    expect(b).toBeLessThanOrEqual(1536);
    expect(b).toBeGreaterThan(1536 * 0.7);
  });
});
