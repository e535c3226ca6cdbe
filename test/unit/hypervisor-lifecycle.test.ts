// The QEMU driver's host-facing rules without booting anything: the config/host checks shared with
// `kata-ctl check`, process identity by pid + start time, and undoing a dead VM from its persisted state.
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { runChecks } from '../../src/ctl/check.js';
import type { VmState } from '../../src/hypervisor/hypervisor.js';
import { cleanupDeadVm } from '../../src/hypervisor/index.js';
import { isAlive, processFromPidFile, processIdentity, terminateProcess } from '../../src/hypervisor/proc.js';
import { assertQemuConfig, checkQemuConfig } from '../../src/hypervisor/qemu/config-check.js';
import { testKataConfig } from './hypervisor-fixtures.js';

const log = pino({ level: 'silent' });
let tmp: string;
const children: ChildProcess[] = [];
beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hv-lifecycle-'));
});
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  fs.rmSync(tmp, { recursive: true, force: true });
});

function sleeper(): ChildProcess {
  const c = spawn('sleep', ['600'], { stdio: 'ignore' });
  children.push(c);
  return c;
}

const exited = (c: ChildProcess) =>
  c.exitCode !== null || c.signalCode !== null
    ? Promise.resolve()
    : new Promise<void>((r) => c.once('exit', () => r()));

/** Files the checks accept: an executable "QEMU" and "virtiofsd", a readable kernel and initrd. */
function hostFiles() {
  const f = (name: string, mode: number) => {
    const p = path.join(tmp, name);
    fs.writeFileSync(p, '#!/bin/sh\n', { mode });
    return p;
  };
  return {
    path: f('qemu-system-x86_64', 0o755),
    virtio_fs_daemon: f('virtiofsd', 0o755),
    kernel: f('vmlinuz', 0o644),
    initrd: f('initrd.img', 0o644),
  };
}

describe('QEMU config checks (driver and kata-ctl check share them)', () => {
  it('passes a complete config and names each rule', () => {
    const cfg = testKataConfig({ ...hostFiles(), shared_fs: 'virtio-fs' });
    const checks = checkQemuConfig(cfg, { hasVsock: false });
    expect(checks.every((c) => c.ok)).toBe(true);
    expect(checks.map((c) => c.name)).toEqual([
      'hypervisor',
      'kernel',
      'initrd',
      'virtio-fs daemon',
      'agent channel',
    ]);
    expect(() => assertQemuConfig(cfg, { hasVsock: false })).not.toThrow();
  });

  it('valid_*_paths are glob lists, as Kata reads them', () => {
    const files = hostFiles();
    const ok = testKataConfig({ ...files, valid_hypervisor_paths: [path.join(tmp, 'qemu-system-*')] });
    expect(checkQemuConfig(ok, { hasVsock: false }).every((c) => c.ok)).toBe(true);
    const bad = testKataConfig({ ...files, valid_hypervisor_paths: ['/usr/bin/qemu-system-*'] });
    expect(() => assertQemuConfig(bad, { hasVsock: false })).toThrow(/not in valid_hypervisor_paths/);
  });

  it('reports every broken rule; the driver throws the first', async () => {
    const files = hostFiles();
    const cfg = testKataConfig({
      ...files,
      kernel: path.join(tmp, 'missing-kernel'),
      image: path.join(tmp, 'rootfs.img'),
      shared_fs: 'virtio-fs',
      valid_virtio_fs_daemon_paths: ['/usr/libexec/virtiofsd'],
      agent_channel: 'vsock',
    });
    const failed = checkQemuConfig(cfg, { hasVsock: false }).filter((c) => !c.ok);
    expect(failed.map((c) => c.detail)).toEqual([
      expect.stringMatching(/^kernel .*missing-kernel does not exist or is not accessible/),
      expect.stringMatching(/are exclusive; set only one/),
      expect.stringMatching(/is not in valid_virtio_fs_daemon_paths/),
      expect.stringMatching(/vhost-vsock/),
    ]);
    expect(() => assertQemuConfig(cfg, { hasVsock: false })).toThrow(
      /^hypervisor\.qemu: kernel .*missing-kernel/,
    );
    // kata-ctl check lists the same failures (it adds configuration, accelerator and cgroup items).
    const items = await runChecks(testKataConfig({ ...cfg.hypervisor, accel: 'tcg' }), []);
    const ctlFailed = items.filter((i) => i.status === 'fail').map((i) => i.detail);
    // It also says whether NICs get vhost-net (never a failure: plain tap works everywhere).
    expect(items.find((i) => i.name === 'vhost-net')).toMatchObject({
      status: expect.stringMatching(/^(ok|warn)$/),
    });
    expect(ctlFailed.slice(0, 3)).toEqual(failed.slice(0, 3).map((c) => c.detail));
  });
});

describe('process identity (pid + start time)', () => {
  it('knows a live process, not a recycled pid, not a dead one', async () => {
    const c = sleeper();
    const id = await processIdentity(c.pid!);
    expect(id).toMatchObject({ pid: c.pid });
    expect(await isAlive(id!)).toBe(true);
    expect(await isAlive({ pid: c.pid!, startTime: id!.startTime + 1 })).toBe(false);
    expect(
      await terminateProcess({ ...id!, startTime: id!.startTime + 1 }, { graceMs: 0, log, what: 'x' }),
    ).toBe(false);
    expect(c.exitCode).toBeNull();
    expect(await terminateProcess(id!, { graceMs: 500, log, what: 'sleeper' })).toBe(true);
    await exited(c);
    expect(await processIdentity(c.pid!)).toBeUndefined();
  });

  it('trusts a pid file only for the process that wrote it', async () => {
    const c = sleeper();
    await new Promise((r) => setTimeout(r, 50));
    const pidFile = path.join(tmp, 'pid');
    fs.writeFileSync(pidFile, `${c.pid}\n`);
    expect(await processFromPidFile(pidFile)).toMatchObject({ pid: c.pid });
    // A file older than the process names someone else's pid (the writer died, the pid was reused).
    const old = new Date(Date.now() - 60_000);
    fs.utimesSync(pidFile, old, old);
    expect(await processFromPidFile(pidFile)).toBeUndefined();
  });
});

describe('cleanupDeadVm', () => {
  it('kills the recorded processes and the pid file one, removes the run dir, frees only its own CIDs', async () => {
    const sid = 'sb-dead';
    const runDir = path.join(tmp, 'vm', sid);
    fs.mkdirSync(runDir, { recursive: true });
    const vmm = sleeper();
    const unrecorded = sleeper(); // spawned, then the shim died before persisting it
    const bystander = sleeper();
    await new Promise((r) => setTimeout(r, 50));
    fs.writeFileSync(path.join(runDir, 'pid'), `${unrecorded.pid}`);
    const cidDir = path.join(tmp, 'cids');
    fs.mkdirSync(cidDir);
    fs.writeFileSync(path.join(cidDir, '5'), sid);
    fs.writeFileSync(path.join(cidDir, '6'), 'other');
    const vmmId = (await processIdentity(vmm.pid!))!;
    const byId = (await processIdentity(bystander.pid!))!;
    const state: VmState = {
      hypervisor: 'qemu',
      sandboxId: sid,
      pid: vmm.pid!,
      runDir,
      agent: { kind: 'vsock', cid: 6, port: 1024 }, // a CID another VM holds now: not ours to free
      accel: 'tcg',
      processes: [
        { role: 'vmm', ...vmmId },
        { role: 'virtiofsd', pid: bystander.pid!, startTime: byId.startTime + 7 },
      ],
      vsockCid: 6,
    };
    await cleanupDeadVm(JSON.parse(JSON.stringify(state)), log, { cidDir, graceMs: 500 });
    await Promise.all([exited(vmm), exited(unrecorded)]);
    expect(bystander.exitCode).toBeNull();
    expect(fs.existsSync(runDir)).toBe(false);
    expect(fs.readdirSync(cidDir)).toEqual(['6']);
    // Idempotent.
    await cleanupDeadVm(state, log, { cidDir });
  });

  it('refuses a run dir not named after the sandbox', async () => {
    const keep = path.join(tmp, 'precious');
    fs.mkdirSync(keep);
    const state: VmState = {
      hypervisor: 'qemu',
      sandboxId: 'sb-x',
      pid: 0,
      runDir: keep,
      agent: { kind: 'virtio-serial', socketPath: path.join(keep, 'agent.sock') },
      accel: 'tcg',
    };
    await expect(cleanupDeadVm(state, log, { cidDir: path.join(tmp, 'cids') })).rejects.toThrow(/refusing/);
    expect(fs.existsSync(keep)).toBe(true);
  });
});
