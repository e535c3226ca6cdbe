// Resolving host-supplied paths under an allowed root: `..` components are refused outright, symlinks are
// followed physically and the result must stay under the root. The guest trusts nothing the host names
// (the shared directory is writable by the host, so it may plant symlinks there).
import fs from 'node:fs';
import path from 'node:path';
import { GUEST_KATA_DIR, idProblem } from '../contract/index.js';

/** A path from the host that is malformed or leaves its allowed root. */
export class SafePathError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SafePathError';
  }
}

const MAX_SYMLINKS = 40;

/** Checks that an untrusted path is absolute, has no NUL and no `..` component; returns it normalized. */
export function checkAbsolute(p: string, what = 'path'): string {
  if (typeof p !== 'string' || p.length === 0) throw new SafePathError(`${what} is empty`);
  if (p.includes('\0')) throw new SafePathError(`${what} ${JSON.stringify(p)} contains a NUL byte`);
  if (!p.startsWith('/')) throw new SafePathError(`${what} ${JSON.stringify(p)} is not absolute`);
  if (p.split('/').includes('..')) throw new SafePathError(`${what} ${JSON.stringify(p)} contains '..'`);
  return path.posix.normalize(p).replace(/(.)\/$/, '$1');
}

export function isWithin(root: string, p: string): boolean {
  return p === root || p.startsWith(root.endsWith('/') ? root : `${root}/`);
}

/**
 * A path the host names under the guest's Kata dir (GUEST_KATA_DIR), for an agent whose Kata dir is elsewhere
 * (an agent run on a host, as the integration tests do): the same path under kataRunDir. Anything else as is.
 */
export function inKataDir(kataRunDir: string, p: string): string {
  if (kataRunDir === GUEST_KATA_DIR || typeof p !== 'string' || !isWithin(GUEST_KATA_DIR, p)) return p;
  return kataRunDir + p.slice(GUEST_KATA_DIR.length);
}

function realRootOf(root: string): string {
  try {
    return fs.realpathSync(root);
  } catch (e) {
    throw new SafePathError(`allowed root ${root} cannot be resolved: ${(e as Error).message}`);
  }
}

/**
 * Resolves the absolute path `p`, which must lie under `root`, to a physical path without symlinks.
 * Components that do not exist yet are kept as they are (for directories about to be created).
 * Throws SafePathError when `p` is outside `root`, contains `..`, or a symlink takes it out of `root`.
 */
export function resolveUnder(root: string, p: string, what = 'path'): string {
  const wanted = checkAbsolute(p, what);
  const lexRoot = path.posix.normalize(root).replace(/(.)\/$/, '$1');
  if (!isWithin(lexRoot, wanted)) throw new SafePathError(`${what} ${p} is not under ${lexRoot}`);
  const realRoot = realRootOf(lexRoot);
  const pending = wanted
    .slice(lexRoot.length)
    .split('/')
    .filter((c) => c !== '' && c !== '.')
    .reverse();
  let cur = realRoot;
  let missing = false;
  let links = 0;
  while (pending.length > 0) {
    const comp = pending.pop()!;
    if (comp === '.' || comp === '') continue;
    if (comp === '..') {
      // Only symlink targets can bring '..' here; resolve it physically.
      cur = path.posix.dirname(cur);
      continue;
    }
    const next = cur === '/' ? `/${comp}` : `${cur}/${comp}`;
    if (missing) {
      cur = next;
      continue;
    }
    let st: fs.Stats;
    try {
      st = fs.lstatSync(next);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT')
        throw new SafePathError(`${what} ${p}: cannot inspect ${next}: ${(e as Error).message}`);
      missing = true;
      cur = next;
      continue;
    }
    if (st.isSymbolicLink()) {
      if (++links > MAX_SYMLINKS) throw new SafePathError(`${what} ${p}: too many levels of symbolic links`);
      const target = fs.readlinkSync(next);
      if (target.startsWith('/')) cur = '/';
      pending.push(
        ...target
          .split('/')
          .filter((c) => c !== '')
          .reverse(),
      );
      continue;
    }
    if (pending.length > 0 && !st.isDirectory()) {
      throw new SafePathError(`${what} ${p}: ${next} is not a directory`);
    }
    cur = next;
  }
  if (!isWithin(realRoot, cur)) {
    throw new SafePathError(`${what} ${p} escapes ${lexRoot} through a symlink (resolves to ${cur})`);
  }
  return cur;
}

/** Like resolveUnder, but the path must exist. */
export function resolveExistingUnder(root: string, p: string, what = 'path'): string {
  const real = resolveUnder(root, p, what);
  if (!fs.existsSync(real)) throw new SafePathError(`${what} ${p} does not exist`);
  return real;
}

/**
 * Opens an existing path under `root` (O_PATH, so it pins the object, not its name) and checks where the
 * opened object really is. The returned `/proc/<pid>/fd/<n>` path can be handed to other processes
 * (crun) and cannot be redirected by a later symlink swap. Call close() when done.
 */
export function pinUnder(
  root: string,
  p: string,
  what = 'path',
): { fd: number; procPath: string; realPath: string; close(): void } {
  checkAbsolute(p, what);
  resolveExistingUnder(root, p, what); // gives precise error messages for the common cases
  const O_PATH = 0o10000000;
  const O_CLOEXEC = 0o2000000;
  let fd: number;
  try {
    fd = fs.openSync(p, O_PATH | O_CLOEXEC);
  } catch (e) {
    throw new SafePathError(`${what} ${p} cannot be opened: ${(e as Error).message}`);
  }
  const realPath = fs.readlinkSync(`/proc/self/fd/${fd}`);
  const realRoot = realRootOf(root);
  if (!isWithin(realRoot, realPath)) {
    fs.closeSync(fd);
    throw new SafePathError(`${what} ${p} escapes ${root} (it is ${realPath})`);
  }
  let open = true;
  return {
    fd,
    procPath: `/proc/${process.pid}/fd/${fd}`,
    realPath,
    close: () => {
      if (open) fs.closeSync(fd);
      open = false;
    },
  };
}

/**
 * mkdir -p for a path under `root` that refuses to walk through symlinks (each created or existing
 * component is checked with lstat). Returns the physical path and the directories it created
 * (outermost first) so that a caller can undo them.
 */
export function mkdirUnder(
  root: string,
  p: string,
  mode = 0o755,
  what = 'directory',
): { path: string; created: string[] } {
  const real = resolveUnder(root, p, what);
  const realRoot = realRootOf(root);
  const created: string[] = [];
  let cur = realRoot;
  for (const comp of real.slice(realRoot.length).split('/').filter(Boolean)) {
    cur = `${cur}/${comp}`;
    try {
      fs.mkdirSync(cur, { mode });
      created.push(cur);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new SafePathError(`creating ${what} ${p}: ${(e as Error).message}`);
      }
    }
    const st = fs.lstatSync(cur);
    if (st.isSymbolicLink()) throw new SafePathError(`creating ${what} ${p}: ${cur} turned into a symlink`);
    if (!st.isDirectory()) throw new SafePathError(`creating ${what} ${p}: ${cur} is not a directory`);
  }
  return { path: real, created };
}

/**
 * Container and sandbox ids end up in paths and cgroup names. The host checked them already; the guest trusts
 * nothing the host sends, so it checks again, with the contract's grammar (the only one).
 */
export function checkId(id: string, what = 'container id'): string {
  const problem = idProblem(id);
  if (problem) throw new SafePathError(`invalid ${what} ${JSON.stringify(id)}: ${problem}`);
  return id;
}

/** A path inside a container (mount destination): absolute, no NUL, no `..`. */
export function checkContainerPath(p: string, what = 'container path'): string {
  return checkAbsolute(p, what);
}
