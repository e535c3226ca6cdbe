// The container rootfs on the host: containerd's snapshot mounts at <bundle>/rootfs (as its runc shim does), or
// the bundle's own root.path when containerd sends no mounts.
import type fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { BUNDLE_ROOTFS } from './layout.js';
import { mountEntry, unmountTree } from './mount.js';
import type { OciSpec, RootfsMount } from './types.js';

function describe(m: RootfsMount): string {
  return `${m.type || 'mount'} ${m.source} (options ${m.options.join(',') || 'none'})`;
}

/**
 * Mounts containerd's rootfs entries, in order, at <bundle>/rootfs. On failure unmounts what it mounted and
 * throws an error naming the entry. Returns the mount point.
 */
export async function mountBundleRootfs(
  containerId: string,
  bundle: string,
  mounts: readonly RootfsMount[],
): Promise<string> {
  const target = path.join(bundle, BUNDLE_ROOTFS);
  await fsp.mkdir(target, { recursive: true, mode: 0o711 });
  for (const m of mounts) {
    try {
      mountEntry(m, target);
    } catch (err) {
      try {
        await unmountTree(target);
      } catch (undoErr) {
        throw new Error(
          `container ${containerId}: mount rootfs ${describe(m)} at ${target} failed (${(err as Error).message}), ` +
            `and undoing it failed too: ${(undoErr as Error).message}`,
          { cause: err },
        );
      }
      throw new Error(
        `container ${containerId}: mount rootfs ${describe(m)} at ${target}: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
  }
  return target;
}

/** The host dir of spec.root.path (relative to the bundle), checked to be a directory. */
export async function specRootDir(containerId: string, bundle: string, spec: OciSpec): Promise<string> {
  const p = spec.root?.path;
  if (typeof p !== 'string' || p === '') {
    throw new Error(`container ${containerId}: no rootfs mounts were given and the spec has no root.path`);
  }
  const dir = path.resolve(bundle, p);
  let st: fs.Stats;
  try {
    st = await fsp.stat(dir);
  } catch (err) {
    throw new Error(
      `container ${containerId}: spec root.path ${dir} is not usable: ${(err as NodeJS.ErrnoException).code ?? err}`,
    );
  }
  if (!st.isDirectory())
    throw new Error(`container ${containerId}: spec root.path ${dir} is not a directory`);
  return dir;
}
