import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Guest } from '../../src/agent/guest.js';
import { logger } from '../../src/common/log.js';

const sys = fs.mkdtempSync(path.join(os.tmpdir(), 'kt-sysfs-'));
afterAll(() => fs.rmSync(sys, { recursive: true, force: true }));

function put(rel: string, content: string): void {
  fs.mkdirSync(path.dirname(path.join(sys, rel)), { recursive: true });
  fs.writeFileSync(path.join(sys, rel), content);
}

describe('guest RPC helpers on a fake sysfs', () => {
  put('devices/system/cpu/cpu0/online', '1\n');
  put('devices/system/cpu/cpu1/online', '0\n');
  put('devices/system/cpu/cpu2/online', '0\n');
  put('devices/system/cpu/cpu3/online', '0\n');
  put('devices/system/memory/block_size_bytes', '8000000\n');
  put('devices/system/memory/memory0/online', '1\n');
  put('devices/system/memory/memory8/online', '0\n');
  put('devices/system/memory/probe', '');
  const guest = new Guest({ sysRoot: sys, manageGuest: false, log: logger('test') });
  const read = (rel: string) => fs.readFileSync(path.join(sys, rel), 'utf8').trim();

  it('onlines as many CPUs as asked, then memory blocks', async () => {
    const r = await guest.onlineCpuMem(2, false);
    expect(r).toEqual({ cpus: 2, memoryBlocks: 1 });
    const states = ['cpu1', 'cpu2', 'cpu3'].map((c) => read(`devices/system/cpu/${c}/online`));
    expect(states.filter((s) => s === '1')).toHaveLength(2);
    expect(read('devices/system/memory/memory8/online')).toBe('1');
  });

  it('fails clearly when the CPUs never show up', async () => {
    await expect(guest.onlineCpuMem(5, true, 200)).rejects.toThrow(/onlined 1 of 5 requested CPUs/);
  });

  it('reports memory block size, probe support and agent details', () => {
    const d = guest.details(true, true);
    expect(d.memBlockSizeBytes).toBe(0x8000000n);
    expect(d.supportMemHotplugProbe).toBe(true);
    expect(d.agentDetails?.storageHandlers).toContain('virtio-fs');
  });

  it('probes hotplugged memory by address', () => {
    guest.memHotplugByProbe([0x100000000n]);
    expect(read('devices/system/memory/probe')).toBe('0x100000000');
  });

  it('validates clock, hostname and DNS input even when not applying it', async () => {
    expect(() => guest.setDateTime(-1n, 0n)).toThrow(/invalid time/);
    expect(() => guest.setDateTime(1n, 1_000_000n)).toThrow(/invalid time/);
    guest.setDateTime(1700000000n, 5n);
    expect(() => guest.setHostname('bad name')).toThrow(/invalid hostname/);
    expect(() => guest.setDns(['nameserver 1.1.1.1\nevil'])).toThrow(/invalid DNS/);
    await expect(guest.loadModules([{ name: '../x', parameters: [] } as never])).rejects.toThrow(
      /invalid kernel module/,
    );
  });

  it('exposes Prometheus metrics', () => {
    const m = guest.metrics(2);
    expect(m).toContain('# TYPE kata_guest_meminfo gauge');
    expect(m).toMatch(/kata_guest_meminfo\{item="MemTotal"\} \d+/);
    expect(m).toContain('kata_agent_containers 2');
  });
});
