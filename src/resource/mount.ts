// Mount primitives over libc (src/native): mount(2), umount2(2) and the new mount API (open_tree, mount_setattr,
// move_mount); option parsing is common/mount-options.ts, mountinfo reading mountinfo.ts. Syscalls are synchronous:
// mount syscalls are short and a worker round-trip would cost more than it saves.
import fs from 'node:fs';
import {
  MS_BIND,
  MS_NOATIME,
  MS_NODEV,
  MS_NODIRATIME,
  MS_NOEXEC,
  MS_NOSUID,
  MS_RDONLY,
  MS_REC,
  MS_RELATIME,
  MS_REMOUNT,
  parseMountOptions,
} from '../common/mount-options.js';
import { type MountAttr, errnoName, libc } from '../native/libc.js';
import { type MountInfo, mountsAt, mountsUnder, readMountInfo, realpathExisting } from './mountinfo.js';

export * from '../common/mount-options.js';
export { isMountPoint, mountsUnder, readMountInfo, realpathExisting } from './mountinfo.js';

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

function sysError(what: string, source: string | undefined, target: string | undefined): MountError {
  const c = libc();
  const errno = c.errno();
  const code = errnoName(errno);
  return new MountError(`${what}: ${code} (${c.strerror(errno)})`, code, source, target);
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
  const errno = libc().errno();
  const code = errnoName(errno);
  if (code === 'EINVAL' || code === 'ENOENT') return false;
  throw new MountError(
    `unmount ${target}${detach ? ' (lazy)' : ''}: ${code} (${libc().strerror(errno)})`,
    code,
    undefined,
    target,
  );
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
  if (c.newMountApi && opts.readonly && !opts.legacy) {
    const fd = c.newMountApi.openTree(
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
          c.newMountApi.mountSetattr(
            fd,
            '',
            AT_EMPTY_PATH | (opts.recursive ? AT_RECURSIVE : 0),
            attr,
            32,
          ) !== 0
        ) {
          throw sysError(`${what}: mount_setattr`, source, target);
        }
        if (c.newMountApi.moveMount(fd, '', AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH) !== 0) {
          throw sysError(`${what}: move_mount`, source, target);
        }
        return;
      } finally {
        // Closing the fd of a clone that was never attached discards it.
        fs.closeSync(fd);
      }
    }
    const code = errnoName(c.errno());
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
