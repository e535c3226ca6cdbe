import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { pollUntil } from '../../src/common/poll.js';
import { probeAccelerator, resolveAccelerator } from '../../src/hypervisor/accel.js';
import { readGuestManifest } from '../../src/hypervisor/guest-manifest.js';
import { SupervisedChild, TailBuffer } from '../../src/hypervisor/supervisor.js';
import { virtiofsdArgs } from '../../src/hypervisor/virtiofsd.js';
import {
  allocateGuestCid,
  chooseAgentChannel,
  listGuestCids,
  releaseGuestCid,
} from '../../src/hypervisor/vsock.js';
import { testKataConfig } from './hypervisor-fixtures.js';

const silent = pino({ level: 'silent' });
const tmp = mkdtempSync(path.join(os.tmpdir(), 'hv-helpers-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('virtiofsd arguments', () => {
  const base = {
    binary: '/usr/lib/qemu/virtiofsd',
    sharedDir: '/run/kata-containers/shared/sandboxes/sb/shared',
    socketPath: '/run/vc/vm/sb/vhost-fs.sock',
    cache: 'auto',
    extraArgs: [] as string[],
    debug: false,
  };

  it('C daemon: socket, source, cache, chroot sandbox', () => {
    expect(virtiofsdArgs(base, 'c')).toEqual([
      '--socket-path=/run/vc/vm/sb/vhost-fs.sock',
      '-o',
      'source=/run/kata-containers/shared/sandboxes/sb/shared',
      '-o',
      'cache=auto',
      '-o',
      'sandbox=chroot',
    ]);
  });

  it('C daemon: maps Kata cache names and translates Rust-style extra args', () => {
    const args = virtiofsdArgs(
      {
        ...base,
        cache: 'never',
        debug: true,
        extraArgs: [
          '--thread-pool-size=1',
          '--announce-submounts',
          '--xattr',
          '--cache=always',
          '-o',
          'flock',
        ],
      },
      'c',
    );
    expect(args.join(' ')).toBe(
      '--socket-path=/run/vc/vm/sb/vhost-fs.sock -o source=/run/kata-containers/shared/sandboxes/sb/shared ' +
        '-o cache=none -o sandbox=chroot -o log_level=debug --thread-pool-size=1 -o announce_submounts -o xattr ' +
        '-o cache=always -o flock',
    );
  });

  it('Rust daemon: long options and extra args verbatim', () => {
    expect(virtiofsdArgs({ ...base, extraArgs: ['--announce-submounts'] }, 'rust')).toEqual([
      '--socket-path=/run/vc/vm/sb/vhost-fs.sock',
      '--shared-dir=/run/kata-containers/shared/sandboxes/sb/shared',
      '--cache=auto',
      '--sandbox=chroot',
      '--announce-submounts',
    ]);
  });
});

describe('vsock', () => {
  it('auto picks vsock only with /dev/vhost-vsock; explicit vsock without it is an error', () => {
    expect(chooseAgentChannel('auto', false)).toBe('virtio-serial');
    expect(chooseAgentChannel('auto', true)).toBe('vsock');
    expect(chooseAgentChannel('virtio-serial', true)).toBe('virtio-serial');
    expect(() => chooseAgentChannel('vsock', false)).toThrow(/vhost-vsock/);
  });

  it('allocates unique guest CIDs and releases them', async () => {
    const dir = path.join(tmp, 'cids');
    const cids = await Promise.all(Array.from({ length: 20 }, (_, i) => allocateGuestCid(`sb${i}`, dir)));
    expect(new Set(cids).size).toBe(20);
    for (const c of cids) expect(c).toBeGreaterThanOrEqual(3);
    const listed = await listGuestCids(dir);
    expect(listed.get(cids[3]!)).toBe('sb3');
    for (const c of cids) await releaseGuestCid(c, dir);
    await releaseGuestCid(cids[0]!, dir); // twice is fine
    expect((await listGuestCids(dir)).size).toBe(0);
  });
});

describe('guest manifest', () => {
  it('reads kernel params (string or list) and rootfs type beside the kernel; absent is fine', async () => {
    const d = path.join(tmp, 'guest');
    const kernel = path.join(d, 'vmlinuz.container');
    expect(await readGuestManifest(kernel)).toBeUndefined();
    const { mkdirSync } = await import('node:fs');
    mkdirSync(d);
    writeFileSync(path.join(d, 'manifest.json'), JSON.stringify({ kernel_params: 'init=/init  quiet' }));
    expect((await readGuestManifest(kernel))?.kernelParams).toEqual(['init=/init', 'quiet']);
    writeFileSync(
      path.join(d, 'manifest.json'),
      JSON.stringify({ kernelParams: ['a=1'], rootfs_type: 'erofs' }),
    );
    expect(await readGuestManifest(kernel)).toMatchObject({ kernelParams: ['a=1'], rootfsType: 'erofs' });
    writeFileSync(path.join(d, 'manifest.json'), '{bad');
    await expect(readGuestManifest(kernel)).rejects.toThrow(/manifest.json is not valid JSON/);
  });
});

describe('supervised child', () => {
  it('keeps only the tail of the output', () => {
    const t = new TailBuffer(8);
    t.push(Buffer.from('0123456789'));
    t.push(Buffer.from('ab'));
    expect(t.toString()).toBe('456789ab');
  });

  it('reports exit code and stderr tail', async () => {
    const c = SupervisedChild.spawn('sh', '/bin/sh', ['-c', 'echo boom >&2; exit 3'], { log: silent });
    const e = await c.exited;
    expect(e.code).toBe(3);
    expect(e.stderrTail).toContain('boom');
    expect(c.running).toBe(false);
  });

  it('reports a binary that cannot be started', async () => {
    const c = SupervisedChild.spawn('nope', '/nonexistent/binary', [], { log: silent });
    const e = await c.exited;
    expect(e.spawnError).toMatch(/ENOENT/);
  });

  it('terminate escalates to SIGKILL when SIGTERM is ignored', async () => {
    const c = SupervisedChild.spawn(
      'sh',
      '/bin/sh',
      ['-c', 'trap "" TERM; echo ready; while :; do sleep 0.05; done'],
      {
        log: silent,
      },
    );
    while (!c.stderrTail().includes('ready')) await new Promise((r) => setTimeout(r, 10));
    const e = await c.terminate(200);
    expect(e.signal).toBe('SIGKILL');
  });
});

describe('accelerator probe (with a fake QEMU)', () => {
  const kernel = path.join(tmp, 'vmlinuz');
  writeFileSync(kernel, 'kernel');
  const kvmDevice = path.join(tmp, 'kvm');
  writeFileSync(kvmDevice, '');
  const fakeQemu = (name: string, body: string) => {
    const p = path.join(tmp, name);
    writeFileSync(p, `#!/bin/sh\n${body}\n`);
    chmodSync(p, 0o755);
    return p;
  };

  it('kvm when the guest reaches its panic, cached the second time', async () => {
    const qemu = fakeQemu(
      'qemu-ok',
      'echo "Linux version 6.1"; echo "Kernel panic - not syncing: VFS"; exec sleep 5',
    );
    const cacheFile = path.join(tmp, 'accel-ok.json');
    const cfg = testKataConfig({ path: qemu, kernel, accel: 'auto' });
    const first = await probeAccelerator(cfg, { cacheFile, kvmDevice, log: silent });
    expect(first).toMatchObject({ accel: 'kvm', cached: false });
    const second = await probeAccelerator(cfg, { cacheFile, kvmDevice, log: silent });
    expect(second).toMatchObject({ accel: 'kvm', cached: true });
    const key = Object.keys(JSON.parse(readFileSync(cacheFile, 'utf8')))[0]!;
    expect(key).toContain(readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim());
    expect(key).toContain(qemu);
  });

  it('tcg when the KVM guest hangs', async () => {
    const pidFile = path.join(tmp, 'qemu-hang.pid');
    const qemu = fakeQemu('qemu-hang', `echo $$ > ${pidFile}; exec sleep 30`);
    const cfg = testKataConfig({ path: qemu, kernel, accel: 'auto' });
    const r = await probeAccelerator(cfg, {
      cacheFile: path.join(tmp, 'a2.json'),
      kvmDevice,
      timeoutMs: 300,
      log: silent,
    });
    expect(r).toMatchObject({ accel: 'tcg', cached: false });
    expect(r.reason).toMatch(/printed nothing within 300 ms/);
    // The hung "QEMU" (under coreutils timeout) is gone with it: a probe leaves no process behind.
    // (SIGKILLed with its group; reaped by init a moment later, hence the poll)
    const pid = Number(readFileSync(pidFile, 'utf8'));
    const alive = () => {
      try {
        process.kill(pid, 0);
        return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
      } catch {
        return false;
      }
    };
    await pollUntil(async () => !alive() || undefined, {
      timeoutMs: 2000,
      intervalMs: 20,
      what: 'the hung QEMU to go',
    });
  });

  it('tcg when QEMU refuses KVM, with its message', async () => {
    const qemu = fakeQemu('qemu-nokvm', 'echo "Could not access KVM kernel module" >&2; exit 1');
    const cfg = testKataConfig({ path: qemu, kernel, accel: 'auto' });
    const r = await probeAccelerator(cfg, { cacheFile: path.join(tmp, 'a3.json'), kvmDevice, log: silent });
    expect(r.accel).toBe('tcg');
    expect(r.reason).toContain('Could not access KVM');
  });

  it('a sandbox waits only waitMs for an uncached probe: TCG now, the verdict cached for the next one', async () => {
    const qemu = fakeQemu(
      'qemu-slow-ok',
      'sleep 0.6; echo "Linux version 6.1"; echo "Kernel panic - not syncing: VFS"; exec sleep 5',
    );
    const cacheFile = path.join(tmp, 'accel-slow.json');
    const cfg = testKataConfig({ path: qemu, kernel, accel: 'auto' });
    const opts = { cacheFile, kvmDevice, log: silent, waitMs: 100 };
    const t0 = Date.now();
    const first = await resolveAccelerator(cfg, opts);
    expect(Date.now() - t0).toBeLessThan(400);
    expect(first).toMatchObject({ accel: 'tcg', cached: false });
    expect(first.reason).toMatch(/had not decided within 100 ms/);
    await pollUntil(async () => existsSync(cacheFile) || undefined, {
      timeoutMs: 5000,
      intervalMs: 50,
      what: 'the probe cache',
    });
    expect(await resolveAccelerator(cfg, opts)).toMatchObject({ accel: 'kvm', cached: true });
  });

  it('tcg without a usable /dev/kvm; explicit config is honoured by resolveAccelerator', async () => {
    const cfg = testKataConfig({ kernel, accel: 'auto' });
    const r = await probeAccelerator(cfg, { kvmDevice: path.join(tmp, 'no-kvm'), log: silent });
    expect(r).toMatchObject({ accel: 'tcg', cached: false });
    expect(await resolveAccelerator(testKataConfig({ accel: 'kvm' }))).toMatchObject({ accel: 'kvm' });
    expect(await resolveAccelerator(testKataConfig({ accel: 'tcg' }))).toMatchObject({ accel: 'tcg' });
  });
});
