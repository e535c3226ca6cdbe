import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { GUEST_SHARED_DIR, SHARED_FS_TAG } from '../../src/contract/index.js';
import { SharedFs } from '../../src/resource/index.js';
import { bindMount, readMountInfo, unmountTree } from '../../src/resource/mount.js';

const tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'kata-sfs-')));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

async function mountsIn(dir: string) {
  return (await readMountInfo()).filter((m) => m.mountPoint === dir || m.mountPoint.startsWith(`${dir}/`));
}

describe('SharedFs', () => {
  it('sets up a shared-propagation mount point and cleans up to nothing, idempotently', async () => {
    const root = path.join(tmp, 'a');
    const sfs = new SharedFs('sandbox1', { root });
    expect(sfs.hostSharedDir).toBe(path.join(root, 'sandbox1', 'shared'));
    await sfs.setup();
    await sfs.setup();
    const m = await mountsIn(sfs.hostSharedDir);
    expect(m).toHaveLength(1);
    expect(m[0]!.optional.some((o) => o.startsWith('shared:'))).toBe(true);
    expect(sfs.guestStorage()).toMatchObject({
      driver: 'virtio-fs',
      source: SHARED_FS_TAG,
      fstype: 'virtiofs',
      mountPoint: GUEST_SHARED_DIR,
    });
    await sfs.cleanup();
    await sfs.cleanup();
    expect(await mountsIn(root)).toEqual([]);
    expect(fs.readdirSync(root)).toEqual([]);
  });

  it('cleans up after a crash from the sandbox id alone: nested and stacked mounts, host data untouched', async () => {
    const root = path.join(tmp, 'b');
    const src = path.join(tmp, 'b-src');
    fs.mkdirSync(path.join(src, 'sub'), { recursive: true });
    fs.writeFileSync(path.join(src, 'keep'), 'precious');
    const first = new SharedFs('sandbox2', { root });
    await first.setup();
    const a = path.join(first.hostSharedDir, 'x');
    fs.mkdirSync(a);
    await bindMount(src, a);
    await bindMount(src, a, { readonly: true });
    await bindMount(src, path.join(a, 'sub'));
    // A new object, as a restarted shim would make, knows only the id.
    await new SharedFs('sandbox2', { root }).cleanup();
    expect(await mountsIn(root)).toEqual([]);
    expect(fs.existsSync(path.join(root, 'sandbox2'))).toBe(false);
    expect(fs.readFileSync(path.join(src, 'keep'), 'utf8')).toBe('precious');
  });

  it('rejects ids that are not path-safe', () => {
    expect(() => new SharedFs('../etc')).toThrow(/invalid sandbox id/);
    expect(() => new SharedFs('')).toThrow(/invalid sandbox id/);
  });
});

describe('bindMount', () => {
  it.each([false, true])(
    'makes a recursive read-only bind read-only all the way down (legacy=%s)',
    async (legacy) => {
      const src = path.join(tmp, `c-src-${legacy}`);
      const inner = path.join(tmp, `c-inner-${legacy}`);
      const dst = path.join(tmp, `c-dst-${legacy}`);
      for (const d of [path.join(src, 'sub'), inner, dst]) fs.mkdirSync(d, { recursive: true });
      fs.writeFileSync(path.join(inner, 'f'), 'inner');
      await bindMount(inner, path.join(src, 'sub'), { readonly: false });
      try {
        await bindMount(src, dst, { recursive: true, readonly: true, legacy });
        expect(fs.readFileSync(path.join(dst, 'sub', 'f'), 'utf8')).toBe('inner');
        expect(() => fs.writeFileSync(path.join(dst, 'x'), '')).toThrow(/EROFS/);
        expect(() => fs.writeFileSync(path.join(dst, 'sub', 'f'), '')).toThrow(/EROFS/);
        // The source stays writable.
        fs.writeFileSync(path.join(src, 'sub', 'f'), 'still rw');
      } finally {
        await unmountTree(dst);
        await unmountTree(src);
      }
      expect(await mountsIn(tmp)).toEqual([]);
    },
  );

  it('names source and target when it fails', async () => {
    await expect(bindMount(path.join(tmp, 'missing'), path.join(tmp, 'also-missing'))).rejects.toThrow(
      `bind mount ${tmp}/missing on ${tmp}/also-missing: ENOENT (No such file or directory)`,
    );
  });
});
