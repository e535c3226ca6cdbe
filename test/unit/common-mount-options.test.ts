import { describe, expect, it } from 'vitest';
import {
  MS_BIND,
  MS_LAZYTIME,
  MS_NODEV,
  MS_NOSUID,
  MS_PRIVATE,
  MS_RDONLY,
  MS_REC,
  MS_SHARED,
  parseMountInfo,
  parseMountOptions,
} from '../../src/common/mount-options.js';

describe('mount options (host and guest share one vocabulary)', () => {
  it('splits flags, propagation and filesystem data as containerd does', () => {
    expect(parseMountOptions(['rbind', 'ro', 'nosuid', 'rprivate', 'size=64m'])).toEqual({
      flags: MS_BIND | MS_REC | MS_RDONLY | MS_NOSUID,
      propagation: MS_PRIVATE | MS_REC,
      data: 'size=64m',
    });
  });

  it('reads comma-joined entries (OCI specs and storages give them so) and lets a later option win', () => {
    expect(parseMountOptions(['ro,nodev', 'rw', 'defaults', '', 'lazytime,shared,mode=755,uid=0'])).toEqual({
      flags: MS_NODEV | MS_LAZYTIME,
      propagation: MS_SHARED,
      data: 'mode=755,uid=0',
    });
  });
});

describe('mountinfo', () => {
  it('parses optional fields and unescapes octal in paths', () => {
    const text =
      '36 35 98:0 /mnt1 /mnt\\040two rw,noatime master:1 shared:2 - ext3 /dev/root rw,errors=continue\n' +
      'garbage line\n';
    expect(parseMountInfo(text)).toEqual([
      {
        id: 36,
        parentId: 35,
        root: '/mnt1',
        mountPoint: '/mnt two',
        mountOptions: ['rw', 'noatime'],
        optional: ['master:1', 'shared:2'],
        fstype: 'ext3',
        source: '/dev/root',
        superOptions: ['rw', 'errors=continue'],
      },
    ]);
  });
});
