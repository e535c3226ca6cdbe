// Real VMs under TCG: boot, QMP control, virtiofsd (incl. mounts made after it started), block/cpu/memory
// hotplug, failures with QEMU's stderr, and that nothing (process, run dir) is left behind.
import { execFileSync } from 'node:child_process';
import {
  constants,
  accessSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  rmSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { QemuConfig } from '../../src/config/types.js';
import { probeAccelerator } from '../../src/hypervisor/accel.js';
import type { VmConfig } from '../../src/hypervisor/hypervisor.js';
import { createHypervisor, stopFromState } from '../../src/hypervisor/index.js';
import type { QemuHypervisor } from '../../src/hypervisor/qemu/qemu.js';
import { AGENT_VSOCK_PORT, VHOST_VSOCK_DEVICE } from '../../src/hypervisor/vsock.js';
import { useLeftoverCheck } from '../helpers/leftovers.js';
import { testKataConfig } from '../unit/hypervisor-fixtures.js';
import { type TestGuest, ensureTestGuest, processesMentioning, waitConsole } from './hypervisor-guest.js';

const log = pino({ level: process.env.KATA_LOG_LEVEL ?? 'silent' });
let guest: TestGuest;
const created: string[] = [];
const mounts: string[] = [];

const ids: string[] = [];
// First hook of the file: its after-hook runs last, after the clean-up below.
useLeftoverCheck({ per: 'file', ids: () => ids });

function sandboxId(tag: string): string {
  const id = `hvtest-${tag}-${process.pid}-${Date.now().toString(36)}`;
  ids.push(id);
  return id;
}

function sharedDirFor(id: string): string {
  const d = `/run/kata-containers/shared/sandboxes/${id}/shared`;
  mkdirSync(d, { recursive: true });
  created.push(path.dirname(d));
  return d;
}

function vmConfig(id: string, over: Partial<VmConfig> = {}): VmConfig {
  return {
    sandboxId: id,
    runDir: `/run/vc/vm/${id}`,
    vcpus: 1,
    maxVcpus: 2,
    memoryMiB: 512,
    maxMemoryMiB: 1024,
    devices: [],
    ...over,
  };
}

function config(mode: string, over: Partial<QemuConfig> = {}) {
  return testKataConfig({
    kernel: guest.kernel,
    initrd: guest.initrd,
    kernel_params: `test.mode=${mode}`,
    accel: 'tcg',
    agent_channel: 'auto',
    ...over,
  });
}

function kvmUsable(): boolean {
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

function expectNothingLeft(id: string, runDir: string): void {
  expect(processesMentioning(id)).toEqual([]);
  expect(existsSync(runDir)).toBe(false);
}

beforeAll(() => {
  guest = ensureTestGuest();
});

afterAll(() => {
  for (const m of mounts.reverse()) {
    try {
      execFileSync('umount', ['-l', m]);
    } catch {
      // already unmounted
    }
  }
  for (const d of created) rmSync(d, { recursive: true, force: true });
});

describe('QEMU hypervisor (TCG)', () => {
  it('boots with virtio-fs and virtio-serial, is controlled over QMP, hotplugs, and stops cleanly', async () => {
    const id = sandboxId('full');
    const shared = sharedDirFor(id);
    const vm = vmConfig(id, {
      devices: [{ kind: 'virtio-fs', id: 'shared', tag: 'kataShared', sharedDir: shared }],
    });
    const hv = createHypervisor(
      // virtio-serial pinned: the test guest reports the agent.channel.0 port it sees.
      config('full', { block_device_driver: 'virtio-scsi', agent_channel: 'virtio-serial' }),
      log,
    ) as QemuHypervisor;
    const consoleLog = path.join(vm.runDir, 'console.log');
    try {
      await hv.prepareVm(vm);
      expect(hv.agentEndpoint()).toEqual({ kind: 'virtio-serial', socketPath: `${vm.runDir}/agent.sock` });
      await hv.startVm(60_000);

      const pids = hv.getPids();
      expect(pids).toHaveLength(2);
      expect(hv.saveState()).toMatchObject({
        hypervisor: 'qemu',
        sandboxId: id,
        pid: pids[0],
        virtiofsdPid: pids[1],
      });
      expect(await hv.status()).toBe('running');
      expect(existsSync(`${vm.runDir}/qmp.sock`)).toBe(true);
      expect(existsSync(`${vm.runDir}/agent.sock`)).toBe(true);

      await waitConsole(consoleLog, /T: BOOTED/);
      await waitConsole(consoleLog, /T: PORT agent\.channel\.0/);
      await waitConsole(consoleLog, /T: VIRTIOFS MOUNTED/);

      // A mount made under the shared dir after virtiofsd started must be visible in the guest.
      const later = path.join(shared, 'later');
      mkdirSync(later);
      execFileSync('mount', ['-t', 'tmpfs', 'tmpfs', later]);
      mounts.push(later);
      writeFileSync(path.join(later, 'marker'), 'mounted-after-start');
      await waitConsole(consoleLog, /T: LATER mounted-after-start/);

      await hv.pauseVm();
      expect(await hv.status()).toBe('paused');
      await hv.resumeVm();
      expect(await hv.status()).toBe('running');

      const disk = path.join(os.tmpdir(), `${id}.img`);
      writeFileSync(disk, Buffer.concat([Buffer.from('KATABLK1'), Buffer.alloc(1024 * 1024 - 8)]));
      try {
        const info = await hv.addDevice({
          kind: 'block',
          id: 'disk1',
          path: disk,
          readOnly: true,
          driver: 'virtio-blk-pci',
        });
        expect(info.pciPath).toMatch(/^[0-9a-f]{2}\/00$/);
        await waitConsole(consoleLog, /T: BLK KATABLK1/);
        await expect(
          hv.addDevice({ kind: 'block', id: 'disk1', path: disk, readOnly: true, driver: 'virtio-blk-pci' }),
        ).rejects.toThrow(/already attached/);
        await hv.removeDevice({
          kind: 'block',
          id: 'disk1',
          path: disk,
          readOnly: true,
          driver: 'virtio-blk-pci',
        });
        await waitConsole(consoleLog, /T: BLK GONE/);
      } finally {
        unlinkSync(disk);
      }
      await expect(
        hv.addDevice({ kind: 'network', id: 'eth0', tapName: 'tap0', mac: '02:00:00:00:00:01' }),
      ).rejects.toThrow(/not supported yet/);

      expect(await hv.resizeVcpus(2)).toEqual({ old: 1, new: 2 });
      expect(await hv.resizeVcpus(8)).toEqual({ old: 2, new: 2 }); // clamped to maxVcpus
      expect(await hv.resizeMemory(600)).toBe(640); // +128 MiB block
      expect(await hv.resizeMemory(512)).toBe(640); // no hot-unplug

      await hv.stopVm();
      const exit = await hv.exited;
      expect(exit.reason).toBe('stopped by stopVm');
      for (const pid of pids)
        expect(existsSync(`/proc/${pid}/cmdline`) && processesMentioning(id).includes(pid)).toBe(false);
      expect(hv.getPids()).toEqual([]);
      await hv.stopVm(); // idempotent
      await hv.cleanup();
      expectNothingLeft(id, vm.runDir);
    } finally {
      await hv.cleanup();
    }
  });

  it('notices the guest powering off by itself, and stops virtiofsd with it', async () => {
    const id = sandboxId('poweroff');
    const shared = sharedDirFor(id);
    const vm = vmConfig(id, {
      devices: [{ kind: 'virtio-fs', id: 'shared', tag: 'kataShared', sharedDir: shared }],
    });
    const hv = createHypervisor(config('poweroff'), log);
    try {
      await hv.prepareVm(vm);
      await hv.startVm(60_000);
      const exit = await hv.exited;
      expect(exit.code).toBe(0);
      expect(exit.reason).toMatch(/exited with code 0/);
      await waitConsole(path.join(vm.runDir, 'console.log'), /T: POWEROFF/);
      await hv.cleanup();
      expectNothingLeft(id, vm.runDir);
    } finally {
      await hv.cleanup();
    }
  });

  it('stops the VM when virtiofsd dies', async () => {
    const id = sandboxId('vfsdeath');
    const shared = sharedDirFor(id);
    const vm = vmConfig(id, {
      devices: [{ kind: 'virtio-fs', id: 'shared', tag: 'kataShared', sharedDir: shared }],
    });
    const hv = createHypervisor(config('idle'), log);
    try {
      await hv.prepareVm(vm);
      await hv.startVm(60_000);
      const vfsPid = hv.saveState().virtiofsdPid!;
      process.kill(vfsPid, 'SIGKILL');
      const exit = await hv.exited;
      expect(exit.reason).toMatch(/virtiofsd .* died/);
      await hv.cleanup();
      expectNothingLeft(id, vm.runDir);
    } finally {
      await hv.cleanup();
    }
  });

  it('a bad QEMU option fails startVm with the stderr tail and leaves nothing', async () => {
    const id = sandboxId('badopt');
    const vm = vmConfig(id);
    const hv = createHypervisor(config('idle', { machine_accelerators: 'no-such-option=on' }), log);
    await hv.prepareVm(vm);
    const err = await hv.startVm(30_000).catch((e: Error) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toMatch(/QEMU exited with code 1/);
    expect((err as Error).message).toMatch(/qemu stderr \(tail\)[\s\S]*no-such-option/);
    expect((await hv.exited).reason).toMatch(/start failed/);
    expectNothingLeft(id, vm.runDir);
  });

  it('a start timeout names what it waited for and leaves nothing', async () => {
    const id = sandboxId('timeout');
    const vm = vmConfig(id);
    const hv = createHypervisor(config('idle'), log);
    await hv.prepareVm(vm);
    await expect(hv.startVm(1)).rejects.toThrow(
      /waiting for the QMP socket \/run\/vc\/vm\/.*\/qmp\.sock\): timed out/,
    );
    expect((await hv.exited).reason).toMatch(/start failed/);
    expectNothingLeft(id, vm.runDir);
  });

  it('a missing kernel fails prepareVm by name, or startVm with QEMU stderr if it vanishes later', async () => {
    const id = sandboxId('nokernel');
    const vm = vmConfig(id);
    const hv = createHypervisor(config('idle', { kernel: '/nonexistent/vmlinuz' }), log);
    await expect(hv.prepareVm(vm)).rejects.toThrow(/kernel \/nonexistent\/vmlinuz does not exist/);
    expectNothingLeft(id, vm.runDir);

    const dir = mkdtempSync(path.join(os.tmpdir(), 'hv-kernel-'));
    try {
      const kernel = path.join(dir, 'vmlinuz');
      copyFileSync(guest.kernel, kernel);
      const hv2 = createHypervisor(config('idle', { kernel }), log);
      await hv2.prepareVm(vm);
      unlinkSync(kernel);
      const err = await hv2.startVm(30_000).catch((e: Error) => e);
      expect((err as Error).message).toMatch(/qemu stderr \(tail\)[\s\S]*kernel/i);
      expectNothingLeft(id, vm.runDir);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a missing shared dir fails prepareVm and leaves nothing', async () => {
    const id = sandboxId('noshare');
    const vm = vmConfig(id, {
      devices: [
        {
          kind: 'virtio-fs',
          id: 'shared',
          tag: 'kataShared',
          sharedDir: `/run/kata-containers/shared/sandboxes/${id}/nope`,
        },
      ],
    });
    const hv = createHypervisor(config('idle'), log);
    await expect(hv.prepareVm(vm)).rejects.toThrow(/shared dir .* does not exist/);
    expectNothingLeft(id, vm.runDir);
  });

  it('stopFromState kills a VM without its Hypervisor object (shim delete after a crash)', async () => {
    const id = sandboxId('fromstate');
    const shared = sharedDirFor(id);
    const vm = vmConfig(id, {
      devices: [{ kind: 'virtio-fs', id: 'shared', tag: 'kataShared', sharedDir: shared }],
    });
    const hv = createHypervisor(config('idle'), log);
    try {
      await hv.prepareVm(vm);
      await hv.startVm(60_000);
      const state = JSON.parse(JSON.stringify(hv.saveState()));
      expect(processesMentioning(id)).toHaveLength(2);
      await stopFromState(state, log);
      expectNothingLeft(id, vm.runDir);
      expect((await hv.exited).reason).toMatch(/qemu (exited|was killed)/);
    } finally {
      await hv.cleanup();
    }
  });

  it('agent_channel auto: vsock where this host has /dev/vhost-vsock, else virtio-serial', async () => {
    const id = sandboxId('chan');
    const vm = vmConfig(id);
    const hv = createHypervisor(config('idle'), log) as QemuHypervisor;
    try {
      await hv.prepareVm(vm);
      if (existsSync(VHOST_VSOCK_DEVICE)) {
        expect(hv.agentEndpoint()).toEqual({
          kind: 'vsock',
          cid: expect.any(Number),
          port: AGENT_VSOCK_PORT,
        });
      } else {
        expect(hv.agentEndpoint()).toEqual({ kind: 'virtio-serial', socketPath: `${vm.runDir}/agent.sock` });
      }
    } finally {
      await hv.cleanup();
    }
    expectNothingLeft(id, vm.runDir);
  });

  it('accel probe: tcg without a usable /dev/kvm, else the verdict of a KVM boot; cached the second time', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'hv-accel-'));
    try {
      const cfg = config('idle', { accel: 'auto' });
      const cacheFile = path.join(dir, 'accel.json');
      const first = await probeAccelerator(cfg, { cacheFile, log });
      expect(first.cached).toBe(false);
      if (!kvmUsable()) {
        expect(first).toMatchObject({
          accel: 'tcg',
          reason: expect.stringMatching(/\/dev\/kvm is not usable/),
        });
        // Nothing to probe with: no verdict is cached.
        expect(await probeAccelerator(cfg, { cacheFile, log })).toEqual(first);
        return;
      }
      // With /dev/kvm the probe boots the kernel under KVM; its reason says which way that went.
      expect(first.reason).toMatch(first.accel === 'kvm' ? /booted to the end/ : /falling back to TCG/);
      const second = await probeAccelerator(cfg, { cacheFile, log });
      expect(second).toEqual({ ...first, cached: true });
      expect(processesMentioning('rdinit=/nonexistent')).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
