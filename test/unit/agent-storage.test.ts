import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { mountAt, parseMountInfo, parseMountOptions } from '../../src/agent/mount.js';
import { pciBlockDeviceName } from '../../src/agent/storage.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kt-storage-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('mount options and the mount table', () => {
  it('splits flags, propagation and filesystem data', () => {
    expect(
      parseMountOptions(['ro', 'nosuid,nodev', 'rbind', 'rslave', 'size=1m', 'mode=755', 'defaults']),
    ).toEqual({
      flags: 0x1 | 0x2 | 0x4 | 0x1000 | 0x4000,
      propagation: (1 << 19) | 0x4000,
      data: 'size=1m,mode=755',
    });
    expect(parseMountOptions(['ro', 'rw']).flags).toBe(0);
  });

  it('parses mountinfo lines, with escaped spaces', () => {
    const m = parseMountInfo(
      '36 35 98:0 / /mnt/with\\040space rw,noatime master:1 - virtiofs kataShared rw\n37 1 0:5 / /dev rw - devtmpfs udev rw\n',
    );
    expect(m).toMatchObject([
      { mountPoint: '/mnt/with space', fstype: 'virtiofs', source: 'kataShared' },
      { mountPoint: '/dev', fstype: 'devtmpfs', source: 'udev' },
    ]);
  });
});

describe('PCI paths', () => {
  const sys = path.join(tmp, 'sys');
  const bridge = path.join(sys, 'devices/pci0000:00/0000:00:02.0');
  fs.mkdirSync(path.join(bridge, 'pci_bus/0000:01'), { recursive: true });
  fs.mkdirSync(path.join(bridge, '0000:01:03.0/virtio4/block/vdb'), { recursive: true });
  fs.mkdirSync(path.join(sys, 'devices/pci0000:00/0000:00:05.0/virtio2/block/vda'), { recursive: true });

  it('walks bridges to the virtio block device', () => {
    expect(pciBlockDeviceName(sys, '05')).toBe('vda');
    expect(pciBlockDeviceName(sys, '02/03')).toBe('vdb');
    expect(pciBlockDeviceName(sys, '02/04')).toBeUndefined();
    expect(() => pciBlockDeviceName(sys, '02/../x')).toThrow(/invalid PCI path/);
  });
});
