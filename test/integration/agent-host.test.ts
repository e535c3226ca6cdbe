// The agent's container RPCs end to end on this host: createAgentService behind a real ttrpc server,
// real crun, a busybox rootfs, a private cgroup parent. Needs root and crun.
import fs from 'node:fs';
import path from 'node:path';
import { create } from '@bufbuild/protobuf';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LinuxResourcesSchema } from '../../src/protocols/gen/oci_pb.js';
import { Code } from '../../src/protocols/ttrpc/index.js';
import {
  type HostAgent,
  busyboxSpec,
  cgroupDirs,
  mountsUnder,
  processesInCgroup,
  readAll,
  startHostAgent,
} from '../e2e/agent-fixtures.js';

const canRun = process.getuid?.() === 0 && fs.existsSync('/usr/bin/crun');

describe.skipIf(!canRun)('agent container RPCs on the host (crun)', () => {
  let env: HostAgent;

  let fdsAtStart = 0;
  // libuv keeps one inotify descriptor for the loop's lifetime once anything is watched: not a leak
  const openFds = () =>
    fs.readdirSync('/proc/self/fd').filter((f) => {
      try {
        return fs.readlinkSync(`/proc/self/fd/${f}`) !== 'anon_inode:inotify';
      } catch {
        return false;
      }
    }).length;

  beforeAll(async () => {
    env = await startHostAgent();
    fdsAtStart = openFds();
  });

  afterAll(async () => {
    await env?.close();
  });

  const cgroupFile = (cid: string, v1: string, v2: string): string => {
    const dirs = cgroupDirs(`${env.cgroupParent}/${cid}`);
    const v2dir = dirs.find((d) => fs.existsSync(path.join(d, 'cgroup.controllers')));
    if (v2dir) return path.join(v2dir, v2);
    const [ctrl, file] = v1.split('/') as [string, string];
    return path.join('/sys/fs/cgroup', ctrl, env.cgroupParent, cid, file);
  };

  it('answers health checks and leaves unknown RPCs unimplemented', async () => {
    expect((await env.health.check({})).status).toBe(1);
    expect((await env.health.version({})).agentVersion).toMatch(/\d/);
    await expect(env.agent.getIPTables({})).rejects.toMatchObject({ code: Code.Unimplemented });
  });

  it('answers the guest-wide RPCs (applying nothing machine-wide on a dev host)', async () => {
    await env.agent.reseedRandomDev({ data: Buffer.alloc(64, 7) });
    await expect(env.agent.reseedRandomDev({ data: Buffer.alloc(0) })).rejects.toMatchObject({
      code: Code.InvalidArgument,
    });
    await env.agent.setGuestDateTime({ Sec: BigInt(Math.floor(Date.now() / 1000)), Usec: 0n });
    const d = await env.agent.getGuestDetails({ memBlockSize: true, memHotplugProbe: true });
    expect(d.agentDetails?.initDaemon).toBe(false);
    expect((await env.agent.getMetrics({})).metrics).toContain('kata_agent_containers');
  });

  it('creates a sandbox with an ephemeral storage', async () => {
    const mp = path.join(env.kataRunDir, 'sandbox/ephemeral/scratch');
    await env.agent.createSandbox({
      sandboxId: 'sb1',
      hostname: 'sb1',
      storages: [
        { driver: 'ephemeral', source: 'tmpfs', fstype: 'tmpfs', mountPoint: mp, options: ['size=1m'] },
      ],
    });
    expect(mountsUnder(env.dir)).toContain(mp);
  });

  it('runs nothing before StartContainer, then reports output and the exact exit code', async () => {
    const cid = 'echo1';
    await env.agent.createContainer({
      containerId: cid,
      OCI: busyboxSpec(env, cid, ['sh', '-c', 'touch /started; echo hello; echo oops >&2; exit 7']),
    });
    const rootfs = path.join(env.sharedDir, cid, 'rootfs');
    await new Promise((r) => setTimeout(r, 300));
    expect(fs.existsSync(path.join(rootfs, 'started'))).toBe(false);
    await env.agent.startContainer({ containerId: cid });
    const [out, err] = await Promise.all([readAll(env, 'stdout', cid), readAll(env, 'stderr', cid)]);
    expect(out).toBe('hello\n');
    expect(err).toBe('oops\n');
    // EOF was the empty answer; a read after that is an error status (OutOfRange "EOF")
    await expect(env.agent.readStdout({ containerId: cid, execId: '', len: 10 })).rejects.toMatchObject({
      code: Code.OutOfRange,
    });
    expect((await env.agent.waitProcess({ containerId: cid, execId: '' })).status).toBe(7);
    expect(fs.existsSync(path.join(rootfs, 'started'))).toBe(true);
    await env.agent.removeContainer({ containerId: cid });
  });

  it('passes stdin through, with EOF on CloseStdin, and keeps every byte of large output', async () => {
    const cid = 'cat1';
    await env.agent.createContainer({
      containerId: cid,
      OCI: busyboxSpec(env, cid, ['sh', '-c', 'cat; head -c 3000000 /dev/zero | tr "\\0" x']),
    });
    await env.agent.startContainer({ containerId: cid });
    expect(
      (await env.agent.writeStdin({ containerId: cid, execId: '', data: Buffer.from('abc\n') })).len,
    ).toBe(4);
    await env.agent.closeStdin({ containerId: cid, execId: '' });
    // read slowly at first: the agent must hold back (pause the pipe), not lose or duplicate
    await new Promise((r) => setTimeout(r, 500));
    const out = await readAll(env, 'stdout', cid);
    expect(out.slice(0, 4)).toBe('abc\n');
    expect(out.length).toBe(4 + 3_000_000);
    expect(/^x+$/.test(out.slice(4))).toBe(true);
    expect((await env.agent.waitProcess({ containerId: cid, execId: '' })).status).toBe(0);
    await env.agent.removeContainer({ containerId: cid });
  });

  describe('a long-running container', () => {
    const cid = 'sleeper';

    beforeAll(async () => {
      await env.agent.createContainer({ containerId: cid, OCI: busyboxSpec(env, cid, ['sleep', '1000']) });
      await env.agent.startContainer({ containerId: cid });
    });

    it('execs a process without a terminal', async () => {
      await env.agent.execProcess({
        containerId: cid,
        execId: 'e1',
        process: {
          Args: ['sh', '-c', 'echo exec-out; echo exec-err >&2; exit 5'],
          Env: ['PATH=/bin'],
          Cwd: '/',
          User: {},
        },
      });
      expect(await readAll(env, 'stdout', cid, 'e1')).toBe('exec-out\n');
      expect(await readAll(env, 'stderr', cid, 'e1')).toBe('exec-err\n');
      expect((await env.agent.waitProcess({ containerId: cid, execId: 'e1' })).status).toBe(5);
    });

    it('execs a process with a terminal and resizes it', async () => {
      await env.agent.execProcess({
        containerId: cid,
        execId: 't1',
        process: {
          Terminal: true,
          ConsoleSize: { Height: 20, Width: 70 },
          Args: ['sh'],
          Env: ['PATH=/bin', 'TERM=xterm'],
          Cwd: '/',
          User: {},
        },
      });
      await env.agent.ttyWinResize({ containerId: cid, execId: 't1', row: 33, column: 101 });
      await env.agent.writeStdin({
        containerId: cid,
        execId: 't1',
        data: Buffer.from('stty size; tty; exit 4\n'),
      });
      const out = await readAll(env, 'stdout', cid, 't1');
      expect(out).toContain('33 101');
      expect(out).toMatch(/\/dev\/pts\/\d+/);
      expect((await env.agent.waitProcess({ containerId: cid, execId: 't1' })).status).toBe(4);
    });

    it('reports 137 for a process killed by SIGKILL', async () => {
      await env.agent.execProcess({
        containerId: cid,
        execId: 'k1',
        process: { Args: ['sleep', '1000'], Env: ['PATH=/bin'], Cwd: '/', User: {} },
      });
      await env.agent.signalProcess({ containerId: cid, execId: 'k1', signal: 9 });
      expect((await env.agent.waitProcess({ containerId: cid, execId: 'k1' })).status).toBe(137);
    });

    it('reports cgroup statistics', async () => {
      const r = await env.agent.statsContainer({ containerId: cid });
      const s = r.cgroupStats!;
      expect(s.memoryStats!.usage!.usage).toBeGreaterThan(0n);
      expect(s.pidsStats!.current).toBeGreaterThanOrEqual(1n);
      expect(s.cpuStats!.cpuUsage!.totalUsage).toBeGreaterThan(0n);
    });

    it('updates the memory limit', async () => {
      await env.agent.updateContainer({ containerId: cid, resources: { Memory: { Limit: 64n << 20n } } });
      const f = cgroupFile(cid, 'memory/memory.limit_in_bytes', 'memory.max');
      expect(fs.readFileSync(f, 'utf8').trim()).toBe(String(64 << 20));
      const s = (await env.agent.statsContainer({ containerId: cid })).cgroupStats!;
      expect(s.memoryStats!.usage!.limit).toBe(64n << 20n);
    });

    it('pauses and resumes through the freezer', async () => {
      const f = cgroupFile(cid, 'freezer/freezer.state', 'cgroup.freeze');
      await env.agent.pauseContainer({ containerId: cid });
      expect(fs.readFileSync(f, 'utf8').trim()).toMatch(/^(FROZEN|1)$/);
      await env.agent.resumeContainer({ containerId: cid });
      expect(fs.readFileSync(f, 'utf8').trim()).toMatch(/^(THAWED|0)$/);
    });

    it('stops an init without a SIGTERM handler on SIGTERM (as SIGKILL: 137)', async () => {
      await env.agent.signalProcess({ containerId: cid, execId: '', signal: 15 });
      expect((await env.agent.waitProcess({ containerId: cid, execId: '' })).status).toBe(137);
      await env.agent.removeContainer({ containerId: cid });
      expect(cgroupDirs(`${env.cgroupParent}/${cid}`)).toEqual([]);
    });
  });

  it('bind-mounts a volume from the share (pinned source) and drains output held open by a background child', async () => {
    const cid = 'vol1';
    const vol = path.join(env.sharedDir, `${cid}-data`);
    fs.mkdirSync(vol, { recursive: true });
    fs.writeFileSync(path.join(vol, 'msg'), 'from-the-host\n');
    await env.agent.createContainer({
      containerId: cid,
      OCI: busyboxSpec(
        env,
        cid,
        [
          'sh',
          '-c',
          'cat /data/msg; touch /data/new 2>/dev/null || echo read-only; echo x > /guest-null; sleep 1000',
        ],
        {
          mounts: [
            { destination: '/data', type: 'bind', source: vol, options: ['rbind', 'ro'] },
            { destination: '/guest-null', type: 'bind', source: '/dev/null', options: ['bind'] },
          ],
        },
      ),
    });
    await env.agent.startContainer({ containerId: cid });
    // an exec whose background child keeps stdout open after the exec'd shell exits
    await env.agent.execProcess({
      containerId: cid,
      execId: 'bg',
      process: { Args: ['sh', '-c', 'sleep 1000 & echo started'], Env: ['PATH=/bin'], Cwd: '/', User: {} },
    });
    expect(await readAll(env, 'stdout', cid, 'bg')).toBe('started\n');
    expect((await env.agent.waitProcess({ containerId: cid, execId: 'bg' })).status).toBe(0);
    const first = await env.agent.readStdout({ containerId: cid, execId: '', len: 100 });
    let out = Buffer.from(first.data).toString();
    while (!out.includes('read-only')) {
      out += Buffer.from(
        (await env.agent.readStdout({ containerId: cid, execId: '', len: 100 })).data,
      ).toString();
    }
    expect(out).toBe('from-the-host\nread-only\n');
    await env.agent.removeContainer({ containerId: cid });
    expect(processesInCgroup(`${env.cgroupParent}/${cid}`)).toEqual([]);
  });

  it('reports an OOM kill through GetOOMEvent', async () => {
    const cid = 'oom1';
    const spec = busyboxSpec(env, cid, ['sh', '-c', 'tail /dev/zero; sleep 1000']);
    spec.Linux!.Resources = create(LinuxResourcesSchema, { Memory: { Limit: 24n << 20n } });
    await env.agent.createContainer({ containerId: cid, OCI: spec });
    await env.agent.startContainer({ containerId: cid });
    const ev = await env.agent.getOOMEvent({}, { timeoutMs: 60_000 });
    expect(ev.containerId).toBe(cid);
    await env.agent.removeContainer({ containerId: cid });
  });

  it("shares the first container's IPC, UTS and (with sandbox_pidns) PID namespaces with later ones", async () => {
    const podSpec = (cid: string, args: string[]) => {
      const spec = busyboxSpec(env, cid, args);
      spec.Hostname = 'pod';
      return spec;
    };
    await env.agent.createContainer({ containerId: 'pause', OCI: podSpec('pause', ['sleep', '1000']) });
    await env.agent.startContainer({ containerId: 'pause' });
    await env.agent.createContainer({
      containerId: 'member',
      sandboxPidns: true,
      OCI: podSpec('member', [
        'sh',
        '-c',
        'hostname; readlink /proc/self/ns/ipc; ps -o pid,args | grep -c "[s]leep 1000"',
      ]),
    });
    await env.agent.startContainer({ containerId: 'member' });
    const out = (await readAll(env, 'stdout', 'member')).trim().split('\n');
    expect((await env.agent.waitProcess({ containerId: 'member', execId: '' })).status).toBe(0);
    await env.agent.execProcess({
      containerId: 'pause',
      execId: 'ns',
      process: { Args: ['readlink', '/proc/self/ns/ipc'], Env: ['PATH=/bin'], Cwd: '/', User: {} },
    });
    const pauseIpc = (await readAll(env, 'stdout', 'pause', 'ns')).trim();
    await env.agent.waitProcess({ containerId: 'pause', execId: 'ns' });
    expect(out[0]).toBe('pod');
    expect(out[1]).toBe(pauseIpc);
    expect(Number(out[2])).toBeGreaterThanOrEqual(1); // the pause container's sleep is visible
    await env.agent.removeContainer({ containerId: 'member' });
    await env.agent.removeContainer({ containerId: 'pause' });
  });

  it('runs a container whose init has a terminal', async () => {
    const cid = 'tty1';
    const spec = busyboxSpec(env, cid, ['sh', '-c', 'tty; stty size; read line; echo "got $line"; exit 3'], {
      terminal: true,
    });
    spec.Process!.ConsoleSize = { $typeName: 'grpc.Box', Height: 25, Width: 90 };
    await env.agent.createContainer({ containerId: cid, OCI: spec });
    await env.agent.startContainer({ containerId: cid });
    await env.agent.writeStdin({ containerId: cid, execId: '', data: Buffer.from('hi\n') });
    const out = await readAll(env, 'stdout', cid);
    expect(out).toMatch(/\/dev\/pts\/0/);
    expect(out).toContain('25 90');
    expect(out).toContain('got hi');
    expect(await readAll(env, 'stderr', cid)).toBe(''); // merged into the terminal
    expect((await env.agent.waitProcess({ containerId: cid, execId: '' })).status).toBe(3);
    await env.agent.removeContainer({ containerId: cid });
  });

  it('fails an exec of a missing program cleanly, and refuses duplicates and execs in stopped containers', async () => {
    const cid = 'execfail';
    await env.agent.createContainer({ containerId: cid, OCI: busyboxSpec(env, cid, ['sleep', '1000']) });
    await env.agent.startContainer({ containerId: cid });
    const proc = { Args: ['/no/such/program'], Env: ['PATH=/bin'], Cwd: '/', User: {} };
    await expect(env.agent.execProcess({ containerId: cid, execId: 'x1', process: proc })).rejects.toThrow(
      /no\/such\/program|not found|No such file/,
    );
    await expect(env.agent.waitProcess({ containerId: cid, execId: 'x1' })).rejects.toMatchObject({
      code: Code.NotFound,
    });
    const ok = { Args: ['sleep', '1000'], Env: ['PATH=/bin'], Cwd: '/', User: {} };
    await env.agent.execProcess({ containerId: cid, execId: 'x2', process: ok });
    await expect(
      env.agent.execProcess({ containerId: cid, execId: 'x2', process: ok }),
    ).rejects.toMatchObject({ code: Code.AlreadyExists });
    await expect(
      env.agent.createContainer({ containerId: cid, OCI: busyboxSpec(env, cid, ['true']) }),
    ).rejects.toMatchObject({
      code: Code.AlreadyExists,
    });
    await env.agent.signalProcess({ containerId: cid, execId: '', signal: 9 });
    expect((await env.agent.waitProcess({ containerId: cid, execId: '' })).status).toBe(137);
    expect((await env.agent.waitProcess({ containerId: cid, execId: 'x2' })).status).toBe(137);
    await expect(
      env.agent.execProcess({ containerId: cid, execId: 'x3', process: ok }),
    ).rejects.toMatchObject({
      code: Code.FailedPrecondition,
    });
    await env.agent.removeContainer({ containerId: cid });
  });

  it('answers NotFound for unknown containers and processes', async () => {
    for (const call of [
      () => env.agent.startContainer({ containerId: 'nope' }),
      () => env.agent.waitProcess({ containerId: 'nope', execId: '' }),
      () => env.agent.readStdout({ containerId: 'nope', execId: '', len: 10 }),
      () => env.agent.signalProcess({ containerId: 'nope', execId: '', signal: 9 }),
      () => env.agent.statsContainer({ containerId: 'nope' }),
      () => env.agent.removeContainer({ containerId: 'nope' }),
    ]) {
      await expect(call()).rejects.toMatchObject({ code: Code.NotFound });
    }
  });

  it('refuses escaping paths and malformed requests, leaving nothing behind', async () => {
    const bundles = path.join(env.stateDir, 'containers');
    const mountsBefore = mountsUnder(env.dir);
    const bad = async (
      cid: string,
      spec: ReturnType<typeof busyboxSpec> | undefined,
      extra: Record<string, unknown> = {},
    ) =>
      expect(env.agent.createContainer({ containerId: cid, OCI: spec, ...extra })).rejects.toMatchObject({
        code: Code.InvalidArgument,
      });
    // a mount destination climbing out with '..'
    await bad(
      'bad1',
      busyboxSpec(env, 'bad1', ['true'], {
        mounts: [{ destination: '/../../etc/x', type: 'tmpfs', source: 'tmpfs' }],
      }),
    );
    // a bind source under the share that is a symlink to the guest's /etc
    fs.symlinkSync('/etc', path.join(env.sharedDir, 'evil-link'));
    await bad(
      'bad2',
      busyboxSpec(env, 'bad2', ['true'], {
        mounts: [
          {
            destination: '/mnt',
            type: 'bind',
            source: path.join(env.sharedDir, 'evil-link'),
            options: ['rbind'],
          },
        ],
      }),
    );
    // a bind source with '..'
    await bad(
      'bad3',
      busyboxSpec(env, 'bad3', ['true'], {
        mounts: [
          { destination: '/mnt', type: 'bind', source: `${env.sharedDir}/../../../etc`, options: ['rbind'] },
        ],
      }),
    );
    // a bind source that is neither in the share nor a guest device/proc/sys file
    await bad(
      'bad3b',
      busyboxSpec(env, 'bad3b', ['true'], {
        mounts: [{ destination: '/mnt', type: 'bind', source: '/etc', options: ['rbind'] }],
      }),
    );
    // a storage mount point outside the Kata directory
    await bad('bad4', busyboxSpec(env, 'bad4', ['true']), {
      storages: [{ driver: 'ephemeral', source: 'tmpfs', fstype: 'tmpfs', mountPoint: '/tmp/kt-agent-evil' }],
    });
    // a rootfs that is a symlink out of the share
    fs.mkdirSync(path.join(env.sharedDir, 'bad5'), { recursive: true });
    fs.symlinkSync('/', path.join(env.sharedDir, 'bad5', 'rootfs'));
    const spec5 = busyboxSpec(env, 'bad4', ['true']);
    spec5.Root!.Path = path.join(env.sharedDir, 'bad5', 'rootfs');
    await bad('bad5', spec5);
    await bad('../x', busyboxSpec(env, 'bad6', ['true']));
    await bad('bad7', undefined);
    expect(fs.existsSync('/tmp/kt-agent-evil')).toBe(false);
    expect(fs.existsSync(bundles) ? fs.readdirSync(bundles) : []).toEqual([]);
    expect(mountsUnder(env.dir)).toEqual(mountsBefore);
  });

  it('copies files into the share and refuses paths outside it', async () => {
    const target = path.join(env.sharedDir, 'cf', 'hostname');
    await env.agent.copyFile({
      path: target,
      fileSize: 5n,
      fileMode: 0o100644,
      dirMode: 0o755,
      data: Buffer.from('host\n'),
    });
    expect(fs.readFileSync(target, 'utf8')).toBe('host\n');
    await expect(
      env.agent.copyFile({
        path: `${env.sharedDir}/../../escape`,
        fileSize: 1n,
        fileMode: 0o100644,
        data: Buffer.from('x'),
      }),
    ).rejects.toMatchObject({ code: Code.InvalidArgument });
    fs.symlinkSync('/tmp', path.join(env.sharedDir, 'tmp-link'));
    await expect(
      env.agent.copyFile({
        path: path.join(env.sharedDir, 'tmp-link', 'kt-agent-escape'),
        fileSize: 1n,
        fileMode: 0o100644,
        data: Buffer.from('x'),
      }),
    ).rejects.toMatchObject({ code: Code.InvalidArgument });
    expect(fs.existsSync('/tmp/kt-agent-escape')).toBe(false);
  });

  it('destroys the sandbox: containers, processes and mounts gone', async () => {
    const cid = 'last';
    await env.agent.createContainer({ containerId: cid, OCI: busyboxSpec(env, cid, ['sleep', '1000']) });
    await env.agent.startContainer({ containerId: cid });
    await env.agent.pauseContainer({ containerId: cid }); // a paused container must go too
    await env.agent.destroySandbox({});
    await new Promise((r) => setImmediate(r));
    expect(env.destroyed).toBe(1);
    expect(processesInCgroup(env.cgroupParent)).toEqual([]);
    expect(mountsUnder(env.dir)).toEqual([]);
    expect(fs.readdirSync(path.join(env.stateDir, 'containers'))).toEqual([]);
    // every container's cgroup is gone, only the (test's) parent directories remain
    for (const d of cgroupDirs(env.cgroupParent)) {
      expect(fs.readdirSync(d, { withFileTypes: true }).filter((e) => e.isDirectory())).toEqual([]);
    }
    // no pipe, pty, socket or watch descriptor leaked in the agent (this process)
    expect(openFds()).toBe(fdsAtStart);
  });
});
