// /proc/self/mountinfo (proc(5)) on the host: reading it, and which mounts sit at or below a path (parsing is
// common/mount-options.ts). Reads are async: they run on the shim's request paths, and mountinfo can be large
// on a busy host.
import fsp from 'node:fs/promises';
import path from 'node:path';
import { type MountInfo, parseMountInfo } from '../common/mount-options.js';

export { type MountInfo, parseMountInfo };

export async function readMountInfo(file = '/proc/self/mountinfo'): Promise<MountInfo[]> {
  return parseMountInfo(await fsp.readFile(file, 'utf8'));
}

/** Mounts at or below real (a path realpathExisting already resolved), in mountinfo order. */
export function mountsAt(infos: readonly MountInfo[], real: string): MountInfo[] {
  return infos.filter((m) => m.mountPoint === real || m.mountPoint.startsWith(`${real}/`));
}

/**
 * Mounts at or below dir (dir resolved through symlinks as far as it exists), in mountinfo order. infos is a
 * mountinfo snapshot the caller already read in this operation; without it /proc/self/mountinfo is read.
 */
export async function mountsUnder(dir: string, infos?: readonly MountInfo[]): Promise<MountInfo[]> {
  const real = await realpathExisting(dir);
  return mountsAt(infos ?? (await readMountInfo()), real);
}

export async function isMountPoint(p: string): Promise<boolean> {
  const real = await realpathExisting(p);
  return (await readMountInfo()).some((m) => m.mountPoint === real);
}

/** Resolves the longest existing prefix of p, so a path that no longer exists still maps to mountinfo's view. */
export async function realpathExisting(p: string): Promise<string> {
  let cur = path.resolve(p);
  const rest: string[] = [];
  for (;;) {
    try {
      return path.join(await fsp.realpath(cur), ...rest);
    } catch {
      const parent = path.dirname(cur);
      if (parent === cur) return path.resolve(p);
      rest.unshift(path.basename(cur));
      cur = parent;
    }
  }
}
