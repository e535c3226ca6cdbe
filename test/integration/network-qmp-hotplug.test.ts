// Root + QEMU: a paused q35 VM (no guest needed) gets a tap opened in a test netns through QMP getfd
// (SCM_RIGHTS) + netdev_add + device_add on a root port; then device_del + netdev_del detach it and the tap
// (held by QEMU alone) disappears from the netns. Cold-plug args are checked by booting QEMU with them.
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { logger } from '../../src/common/log.js';
import { pollUntil } from '../../src/common/poll.js';
import {
  ColdPlugNics,
  QmpNicHotplug,
  connectQmpWithFdPassing,
  nicDeviceId,
  rootPorts,
} from '../../src/hypervisor/qemu/netdev.js';
import type { QmpClient } from '../../src/hypervisor/qemu/qmp.js';
import { openTapInNetns } from '../../src/native/netns.js';
import { TestNetns, isRoot } from './network-helpers.js';

const QEMU = '/usr/bin/qemu-system-x86_64';
const nets = new TestNetns();
const procs: ChildProcess[] = [];
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kt-qmp-'));
afterAll(() => {
  for (const p of procs) p.kill('SIGKILL');
  nets.destroyAll();
  fs.rmSync(dir, { recursive: true, force: true });
});
const log = logger('test-netdev');

function startQemu(sock: string, extra: string[] = [], extraFds: number[] = []): ChildProcess {
  const ports = [0, 1].flatMap((i) => [
    '-device',
    `pcie-root-port,id=rp${i},bus=pcie.0,chassis=${i + 1},slot=${i + 1},port=${i + 1}`,
  ]);
  const p = spawn(
    QEMU,
    [
      '-machine',
      'q35',
      '-accel',
      'tcg',
      '-nodefaults',
      '-nographic',
      '-S',
      '-global',
      'ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off',
      '-qmp',
      `unix:${sock},server=on,wait=off`,
      ...ports,
      ...extra,
    ],
    { stdio: ['ignore', 'ignore', 'pipe', ...extraFds] },
  );
  procs.push(p);
  return p;
}

const tapExists = (ns: string) => {
  try {
    nets.exec(ns, ['ip', 'link', 'show', 'tap0_kata']);
    return true;
  } catch {
    return false;
  }
};

async function connect(sock: string) {
  await pollUntil(() => fs.existsSync(sock), { timeoutMs: 10_000, what: 'QMP socket' });
  return connectQmpWithFdPassing(sock, { timeoutMs: 10_000, log });
}

async function nicOnPort(qmp: QmpClient, id: string): Promise<boolean> {
  // query-pci does not show devices behind root ports before firmware numbered the buses (-S): ask QOM.
  const list = await qmp.execute<{ name: string }[]>('qom-list', { path: '/machine/peripheral' });
  if (!list.some((p) => p.name === nicDeviceId(id))) return false;
  const bus = await qmp.execute<string>('qom-get', {
    path: `/machine/peripheral/${nicDeviceId(id)}`,
    property: 'parent_bus',
  });
  return typeof bus === 'string' && bus.includes('rp0');
}

describe.skipIf(!isRoot || !fs.existsSync(QEMU))('QEMU NIC over a tap fd from a netns', () => {
  it('hotplugs through getfd + netdev_add + device_add and unplugs', async () => {
    const pod = nets.add();
    const sock = path.join(dir, 'hot.sock');
    startQemu(sock);
    const { qmp, sendFds } = await connect(sock);
    try {
      const tap = await openTapInNetns(pod.path, 'tap0_kata');
      const sink = new QmpNicHotplug(qmp, sendFds, rootPorts(['rp0', 'rp1']), log);
      await sink.attachNic({
        id: 'net0',
        mac: '02:11:22:33:44:55',
        queues: 1,
        tapFds: tap.fds,
        vhostFds: [],
      });
      // our fd is closed by the sink: only QEMU's copy keeps the tap alive
      expect(tapExists(pod.name)).toBe(true);
      expect(await nicOnPort(qmp, 'net0')).toBe(true);
      const info = await qmp.execute<string>('human-monitor-command', { 'command-line': 'info network' });
      expect(info).toContain('netdev-net0');
      expect(info).toContain('02:11:22:33:44:55');
      await sink.detachNic('net0');
      expect(await nicOnPort(qmp, 'net0')).toBe(false);
      await pollUntil(() => !tapExists(pod.name), { timeoutMs: 5000, what: 'tap gone after netdev_del' });
    } finally {
      await qmp.quit();
    }
  });

  it('cold-plugs with the fds as extra stdio entries', async () => {
    const pod = nets.add();
    const sock = path.join(dir, 'cold.sock');
    const tap = await openTapInNetns(pod.path, 'tap0_kata');
    const cold = new ColdPlugNics();
    await cold.attachNic({ id: 'net0', mac: '02:aa:bb:cc:dd:ee', queues: 1, tapFds: tap.fds, vhostFds: [] });
    const { args, extraFds } = cold.build(3, () => 'rp0');
    expect(args).toEqual([
      '-netdev',
      'tap,id=netdev-net0,fd=3',
      '-device',
      'virtio-net-pci,id=nic-net0,netdev=netdev-net0,mac=02:aa:bb:cc:dd:ee,disable-modern=off,romfile=,bus=rp0,addr=0',
    ]);
    const p = startQemu(sock, args, extraFds);
    cold.release();
    const { qmp } = await connect(sock);
    try {
      expect(await nicOnPort(qmp, 'net0')).toBe(true);
      expect(tapExists(pod.name)).toBe(true);
      await qmp.quit();
      await new Promise((r) => (p.exitCode !== null ? r(undefined) : p.once('exit', r)));
      await pollUntil(() => !tapExists(pod.name), { timeoutMs: 5000, what: 'tap gone with QEMU' });
    } finally {
      qmp.close();
    }
  });
});
