// Mount primitives over libc (koffi): mount(2), umount2(2) and the new mount API (open_tree, mount_setattr,
// move_mount), containerd-style option parsing; mountinfo reading is in mountinfo.ts. Syscalls are synchronous:
// mount syscalls are short and a worker round-trip would cost more than it saves.
import fs from 'node:fs';
import { createRequire } from 'node:module';
import util from 'node:util';
import type Koffi from 'koffi';
import { type MountInfo, mountsAt, mountsUnder, readMountInfo, realpathExisting } from './mountinfo.js';

export {
  type MountInfo,
  isMountPoint,
  mountsUnder,
  parseMountInfo,
  readMountInfo,
  realpathExisting,
} from './mountinfo.js';

export const MS_RDONLY = 0x1;
export const MS_NOSUID = 0x2;
export const MS_NODEV = 0x4;
export const MS_NOEXEC = 0x8;
export const MS_SYNCHRONOUS = 0x10;
export const MS_REMOUNT = 0x20;
export const MS_MANDLOCK = 0x40;
export const MS_DIRSYNC = 0x80;
export const MS_NOATIME = 0x400;
export const MS_NODIRATIME = 0x800;
export const MS_BIND = 0x1000;
export const MS_MOVE = 0x2000;
export const MS_REC = 0x4000;
export const MS_SILENT = 0x8000;
export const MS_UNBINDABLE = 1 << 17;
export const MS_PRIVATE = 1 << 18;
export const MS_SLAVE = 1 << 19;
export const MS_SHARED = 1 << 20;
export const MS_RELATIME = 1 << 21;
export const MS_STRICTATIME = 1 << 24;
const PROPAGATION = MS_SHARED | MS_PRIVATE | MS_SLAVE | MS_UNBINDABLE;

const MNT_DETACH = 0x2;
const UMOUNT_NOFOLLOW = 0x8;
const AT_FDCWD = -100;
const AT_EMPTY_PATH = 0x1000;
const AT_RECURSIVE = 0x8000;
const OPEN_TREE_CLONE = 0x1;
const OPEN_TREE_CLOEXEC = 0o2000000;
const MOVE_MOUNT_F_EMPTY_PATH = 0x4;
const MOUNT_ATTR_RDONLY = 0x1;

/** A failed mount operation; the message names the operation, source and target. */
export class MountError extends Error {
  constructor(
    message: string,
    readonly code: string,
    readonly source?: string,
    readonly target?: string,
  ) {
    super(message);
    this.name = 'MountError';
  }
}

interface MountAttr {
  attr_set: bigint;
  attr_clr: bigint;
  propagation: bigint;
  userns_fd: bigint;
}

interface Libc {
  mount(src: string | null, tgt: string, fstype: string | null, flags: number, data: string | null): number;
  umount2(tgt: string, flags: number): number;
  strerror(errno: number): string;
  /** Absent on glibc < 2.36; bind sharing then falls back to bind + remount. */
  newApi?: {
    openTree(dfd: number, p: string, flags: number): number;
    mountSetattr(dfd: number, p: string, flags: number, attr: MountAttr, size: number): number;
    moveMount(fromFd: number, fromPath: string, toFd: number, toPath: string, flags: number): number;
  };
}

let libcCache: Libc | undefined;
let koffiModule: typeof Koffi | undefined;

/** koffi is loaded on first use: `shim start` and `shim delete` never mount, and loading it costs 20-35 ms. */
function koffi(): typeof Koffi {
  koffiModule ??= createRequire(import.meta.url)('koffi') as typeof Koffi;
  return koffiModule;
}

function libc(): Libc {
  if (libcCache) return libcCache;
  const lib = koffi().load('libc.so.6');
  const c: Libc = {
    mount: lib.func(
      'int mount(const char *src, const char *tgt, const char *fstype, unsigned long flags, const char *data)',
    ),
    umount2: lib.func('int umount2(const char *tgt, int flags)'),
    strerror: lib.func('const char *strerror(int errnum)'),
  };
  try {
    koffi().struct('kata_mount_attr', {
      attr_set: 'uint64',
      attr_clr: 'uint64',
      propagation: 'uint64',
      userns_fd: 'uint64',
    });
    c.newApi = {
      openTree: lib.func('int open_tree(int dfd, const char *path, unsigned int flags)'),
      mountSetattr: lib.func(
        'int mount_setattr(int dfd, const char *path, unsigned int flags, kata_mount_attr *attr, size_t size)',
      ),
      moveMount: lib.func(
        'int move_mount(int from_dfd, const char *from_path, int to_dfd, const char *to_path, unsigned int flags)',
      ),
    };
  } catch {
    c.newApi = undefined;
  }
  libcCache = c;
  return c;
}

function errnoName(errno: number): string {
  try {
    return util.getSystemErrorName(-errno);
  } catch {
    return `E${errno}`;
  }
}

function sysError(what: string, source: string | undefined, target: string | undefined): MountError {
  const errno = koffi().errno();
  const code = errnoName(errno);
  return new MountError(`${what}: ${code} (${libc().strerror(errno)})`, code, source, target);
}

/** Raw mount(2); throws a MountError naming the operation. */
export function sysMount(
  source: string | null,
  target: string,
  fstype: string | null,
  flags: number,
  data: string | null,
  what?: string,
): void {
  if (libc().mount(source, target, fstype, flags >>> 0, data) !== 0) {
    const desc = what ?? `mount ${source ?? '(none)'} on ${target}${fstype ? ` (type ${fstype})` : ''}`;
    throw sysError(desc, source ?? undefined, target);
  }
}

/** umount2(2). Returns false when target was not a mount point (EINVAL) or is gone (ENOENT). */
export function sysUmount(target: string, detach = false): boolean {
  const flags = UMOUNT_NOFOLLOW | (detach ? MNT_DETACH : 0);
  if (libc().umount2(target, flags) === 0) return true;
  const errno = koffi().errno();
  const code = errnoName(errno);
  if (code === 'EINVAL' || code === 'ENOENT') return false;
  throw new MountError(
    `unmount ${target}${detach ? ' (lazy)' : ''}: ${code} (${libc().strerror(errno)})`,
    code,
    undefined,
    target,
  );
}

export interface ParsedOptions {
  /** Flags for the main mount call (no propagation flags). */
  flags: number;
  /** Propagation flags (with MS_REC when recursive), applied by a second call. */
  propagation: number;
  /** Options the filesystem interprets (overlay's lowerdir=..., tmpfs's size=...). */
  data: string;
}

// Same vocabulary as containerd's mount package, so CreateTaskRequest.rootfs options mean what they mean there.
const FLAG_OPTIONS: Record<string, { set?: number; clear?: number }> = {
  async: { clear: MS_SYNCHRONOUS },
  atime: { clear: MS_NOATIME },
  bind: { set: MS_BIND },
  defaults: {},
  dev: { clear: MS_NODEV },
  diratime: { clear: MS_NODIRATIME },
  dirsync: { set: MS_DIRSYNC },
  exec: { clear: MS_NOEXEC },
  mand: { set: MS_MANDLOCK },
  noatime: { set: MS_NOATIME },
  nodev: { set: MS_NODEV },
  nodiratime: { set: MS_NODIRATIME },
  noexec: { set: MS_NOEXEC },
  nomand: { clear: MS_MANDLOCK },
  norelatime: { clear: MS_RELATIME },
  nostrictatime: { clear: MS_STRICTATIME },
  nosuid: { set: MS_NOSUID },
  rbind: { set: MS_BIND | MS_REC },
  relatime: { set: MS_RELATIME },
  remount: { set: MS_REMOUNT },
  ro: { set: MS_RDONLY },
  rw: { clear: MS_RDONLY },
  strictatime: { set: MS_STRICTATIME },
  suid: { clear: MS_NOSUID },
  sync: { set: MS_SYNCHRONOUS },
};
const PROPAGATION_OPTIONS: Record<string, number> = {
  private: MS_PRIVATE,
  rprivate: MS_PRIVATE | MS_REC,
  shared: MS_SHARED,
  rshared: MS_SHARED | MS_REC,
  slave: MS_SLAVE,
  rslave: MS_SLAVE | MS_REC,
  unbindable: MS_UNBINDABLE,
  runbindable: MS_UNBINDABLE | MS_REC,
};

export function parseMountOptions(options: readonly string[]): ParsedOptions {
  let flags = 0;
  let propagation = 0;
  const data: string[] = [];
  for (const o of options) {
    const f = FLAG_OPTIONS[o];
    if (f) {
      if (f.set) flags |= f.set;
      if (f.clear) flags &= ~f.clear;
      continue;
    }
    const p = PROPAGATION_OPTIONS[o];
    if (p !== undefined) {
      propagation |= p;
      continue;
    }
    data.push(o);
  }
  return { flags, propagation, data: data.join(',') };
}

const PAGE_SIZE = 4096;

/**
 * Mounts one containerd Mount (as in CreateTaskRequest.rootfs) at target, the way containerd's runc shim does:
 * the mount, then propagation, then a read-only remount for bind mounts (MS_BIND ignores MS_RDONLY).
 */
export function mountEntry(
  m: { type: string; source: string; options: readonly string[] },
  target: string,
): void {
  const { flags, propagation, data } = parseMountOptions(m.options);
  if (data.length >= PAGE_SIZE) {
    throw new MountError(
      `mount ${m.source} on ${target} (type ${m.type}): options are ${data.length} bytes, over the ${PAGE_SIZE}-byte limit`,
      'E2BIG',
      m.source,
      target,
    );
  }
  if ((flags & MS_REMOUNT) === 0 || data !== '') {
    sysMount(m.source, target, m.type || null, flags, data || null);
  }
  if (propagation !== 0) {
    sysMount(null, target, null, propagation | (flags & MS_REC), null, `set propagation of ${target}`);
  }
  if ((flags & (MS_BIND | MS_RDONLY)) === (MS_BIND | MS_RDONLY)) {
    sysMount(null, target, null, flags | MS_REMOUNT, null, `remount ${target} read-only`);
  }
}

/**
 * Bind-mounts source onto target (which must exist). When readonly, the new mount is read-only before it becomes
 * visible: with the new mount API the tree is cloned detached, made read-only, then attached, so copies that
 * propagate to peer namespaces (virtiofsd's sandbox) are read-only too. Without it (glibc < 2.36 or kernel
 * < 5.12) this falls back to bind + remount, where already-propagated copies stay writable.
 */
export async function bindMount(
  source: string,
  target: string,
  opts: {
    recursive?: boolean;
    readonly?: boolean /** Use the mount(2) fallback even where the new API exists. */;
    legacy?: boolean;
  } = {},
): Promise<void> {
  const c = libc();
  const what = `bind mount ${source} on ${target}${opts.readonly ? ' read-only' : ''}`;
  if (c.newApi && opts.readonly && !opts.legacy) {
    const fd = c.newApi.openTree(
      AT_FDCWD,
      source,
      OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (opts.recursive ? AT_RECURSIVE : 0),
    );
    if (fd >= 0) {
      try {
        const attr: MountAttr = {
          attr_set: BigInt(MOUNT_ATTR_RDONLY),
          attr_clr: 0n,
          propagation: 0n,
          userns_fd: 0n,
        };
        if (
          c.newApi.mountSetattr(fd, '', AT_EMPTY_PATH | (opts.recursive ? AT_RECURSIVE : 0), attr, 32) !== 0
        ) {
          throw sysError(`${what}: mount_setattr`, source, target);
        }
        if (c.newApi.moveMount(fd, '', AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH) !== 0) {
          throw sysError(`${what}: move_mount`, source, target);
        }
        return;
      } finally {
        // Closing the fd of a clone that was never attached discards it.
        fs.closeSync(fd);
      }
    }
    const code = errnoName(koffi().errno());
    if (code !== 'ENOSYS') throw sysError(`${what}: open_tree`, source, target);
  }
  sysMount(source, target, null, MS_BIND | (opts.recursive ? MS_REC : 0), null, what);
  if (opts.readonly) {
    try {
      for (const m of (await mountsUnder(target)).reverse()) {
        sysMount(
          null,
          m.mountPoint,
          null,
          MS_REMOUNT | MS_BIND | MS_RDONLY | keptFlags(m.mountOptions),
          null,
          `${what}: remount ${m.mountPoint} read-only`,
        );
      }
    } catch (err) {
      await unmountTree(target);
      throw err;
    }
  }
}

// Per-mount flags a bind remount must restate or lose.
function keptFlags(options: readonly string[]): number {
  let f = 0;
  for (const o of options) {
    if (o === 'nosuid') f |= MS_NOSUID;
    else if (o === 'nodev') f |= MS_NODEV;
    else if (o === 'noexec') f |= MS_NOEXEC;
    else if (o === 'noatime') f |= MS_NOATIME;
    else if (o === 'nodiratime') f |= MS_NODIRATIME;
    else if (o === 'relatime') f |= MS_RELATIME;
  }
  return f;
}

/** Makes an existing mount point shared/private/slave (MS_* propagation flag). */
export function setPropagation(target: string, propagation: number): void {
  sysMount(null, target, null, propagation, null, `set propagation of ${target}`);
}

/**
 * Unmounts everything at or below dir, deepest first (stacked mounts newest first); a mount that stays busy is
 * lazily detached. Returns the mount points that needed a lazy detach. Throws if anything remains.
 * mountinfo is read once per round: the list to unmount comes from one read, and the next read (fresh, since
 * unmounting changed it) both checks the result and lists what a further round must do. infos, a snapshot the
 * caller read in this operation, stands in for the first read; a stale entry in it only costs an EINVAL.
 */
export async function unmountTree(dir: string, infos?: readonly MountInfo[]): Promise<string[]> {
  const lazy: string[] = [];
  // dir is resolved once: unmounting does not move it, and a dir that vanishes maps the same way.
  const real = await realpathExisting(dir);
  let mounts = mountsAt(infos ?? (await readMountInfo()), real);
  for (let round = 0; round < 8 && mounts.length > 0; round++) {
    const ordered = mounts
      .map((m, i) => ({ m, i, depth: m.mountPoint.split('/').length }))
      .sort((a, b) => b.depth - a.depth || b.i - a.i);
    for (const { m } of ordered) {
      try {
        sysUmount(m.mountPoint);
      } catch (err) {
        if (!(err instanceof MountError) || err.code !== 'EBUSY') throw err;
        sysUmount(m.mountPoint, true);
        lazy.push(m.mountPoint);
      }
    }
    mounts = mountsAt(await readMountInfo(), real);
  }
  if (mounts.length > 0) {
    throw new MountError(
      `unmount everything under ${dir}: still mounted: ${mounts.map((m) => m.mountPoint).join(', ')}`,
      'EBUSY',
      undefined,
      dir,
    );
  }
  return lazy;
}
