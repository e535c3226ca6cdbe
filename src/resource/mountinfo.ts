// /proc/self/mountinfo (proc(5)): parsing, and which mounts sit at or below a path. Reads are async: they run
// on the shim's request paths, and mountinfo can be large on a busy host.
import fsp from 'node:fs/promises';
import path from 'node:path';

export interface MountInfo {
  id: number;
  parentId: number;
  root: string;
  mountPoint: string;
  mountOptions: string[];
  /** Optional fields: "shared:N", "master:N", ... */
  optional: string[];
  fstype: string;
  source: string;
  /** Per-superblock options (for cgroup v1 mounts: the controllers). */
  superOptions: string[];
}

// mountinfo escapes space, tab, newline and backslash as \ooo.
function unescapeOctal(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
}

/** Parses mountinfo text (proc(5)); lines without the "-" separator are skipped. */
export function parseMountInfo(text: string): MountInfo[] {
  const out: MountInfo[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    const f = line.split(' ');
    const sep = f.indexOf('-', 6);
    if (sep < 0) continue;
    out.push({
      id: Number(f[0]),
      parentId: Number(f[1]),
      root: unescapeOctal(f[3]!),
      mountPoint: unescapeOctal(f[4]!),
      mountOptions: f[5]!.split(','),
      optional: f.slice(6, sep),
      fstype: f[sep + 1]!,
      source: unescapeOctal(f[sep + 2] ?? ''),
      superOptions: (f[sep + 3] ?? '').split(','),
    });
  }
  return out;
}

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
