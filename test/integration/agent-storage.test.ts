import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { type MessageInitShape, create } from '@bufbuild/protobuf';
import { afterAll, describe, expect, it } from 'vitest';
import { mountAt } from '../../src/agent/mount.js';
import { StorageManager } from '../../src/agent/storage.js';
import { logger } from '../../src/common/log.js';
import { StorageSchema } from '../../src/protocols/gen/agent_pb.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kt-storage-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('StorageManager (root: mounts)', () => {
  const root = path.join(tmp, 'kata');
  fs.mkdirSync(root);
  const sm = new StorageManager({ root, log: logger('test'), deviceTimeoutMs: 100 });
  const storage = (s: MessageInitShape<typeof StorageSchema>) => create(StorageSchema, s);

  it('mounts once per mount point, reference-counted, and cleans up what it created', async () => {
    const mp = path.join(root, 'sandbox/ephemeral/e1');
    const eph = storage({
      driver: 'ephemeral',
      source: 'tmpfs',
      fstype: 'tmpfs',
      mountPoint: mp,
      options: ['size=1m'],
    });
    const a = await sm.add([eph]);
    const b = await sm.add([eph]);
    expect(a).toEqual([mp]);
    expect(b).toEqual([mp]);
    expect(mountAt(mp)?.fstype).toBe('tmpfs');
    sm.release(a);
    expect(mountAt(mp)?.fstype).toBe('tmpfs');
    sm.release(b);
    expect(mountAt(mp)).toBeUndefined();
    expect(fs.existsSync(path.join(root, 'sandbox'))).toBe(false);
  });

  it('creates local storage directories with the requested mode', async () => {
    const mp = path.join(root, 'sandbox/local/l1');
    const added = await sm.add([
      storage({ driver: 'local', source: 'local', mountPoint: mp, options: ['mode=0750'] }),
    ]);
    expect(fs.statSync(mp).mode & 0o7777).toBe(0o750);
    sm.release(added);
  });

  it("gives an ephemeral tmpfs kubelet's fsGroup (Kata's fsgid option, not passed to mount)", async () => {
    const mp = path.join(root, 'sandbox/ephemeral/cache');
    const eph = (options: string[]) =>
      storage({ driver: 'ephemeral', source: 'tmpfs', fstype: 'tmpfs', mountPoint: mp, options });
    const added = await sm.add([eph(['fsgid=2000'])]);
    expect(mountAt(mp)?.fstype).toBe('tmpfs');
    const st = fs.statSync(mp);
    expect(st.gid).toBe(2000);
    expect(st.mode & 0o2000).toBe(0o2000);
    sm.release(added);
    await expect(sm.add([eph(['fsgid=staff'])])).rejects.toThrow(
      /ephemeral storage .*cache: bad fsgid staff/,
    );
    expect(mountAt(mp)).toBeUndefined();
  });

  it('bind-mounts a source under the root and refuses one outside it', async () => {
    const src = path.join(root, 'shared/vol');
    fs.mkdirSync(src, { recursive: true });
    fs.writeFileSync(path.join(src, 'f'), 'v');
    const mp = path.join(root, 'sandbox/bind1');
    const added = await sm.add([storage({ driver: 'bind', source: src, mountPoint: mp, options: ['ro'] })]);
    expect(fs.readFileSync(path.join(mp, 'f'), 'utf8')).toBe('v');
    expect(() => fs.writeFileSync(path.join(mp, 'g'), 'x')).toThrow(/EROFS/);
    sm.release(added);
    expect(mountAt(mp)).toBeUndefined();
    await expect(
      sm.add([storage({ driver: 'bind', source: '/etc', mountPoint: path.join(root, 'b2') })]),
    ).rejects.toThrow(/not under/);
  });

  it('is all-or-nothing and names bad drivers and missing devices', async () => {
    const ok = storage({
      driver: 'ephemeral',
      source: 'tmpfs',
      fstype: 'tmpfs',
      mountPoint: path.join(root, 'e2'),
    });
    const bad = storage({ driver: 'nfs-magic', source: 'x', mountPoint: path.join(root, 'e3') });
    await expect(sm.add([ok, bad])).rejects.toThrow(/unsupported storage driver "nfs-magic"/);
    expect(mountAt(path.join(root, 'e2'))).toBeUndefined();
    expect(sm.mountPoints).toEqual([]);
    const blk = storage({
      driver: 'blk',
      source: '/dev/kt-no-such-disk',
      fstype: 'ext4',
      mountPoint: path.join(root, 'b'),
    });
    await expect(sm.add([blk])).rejects.toThrow(/did not appear within 100 ms/);
    expect(fs.existsSync(path.join(root, 'b'))).toBe(false);
  });
});
