// Mounting and the mount table, for storages and the agent's own mounts. Options and mountinfo are parsed by
// common/mount-options.ts, the same code the host uses, so an option means one thing on both sides.
import fs from 'node:fs';
import {
  MS_BIND,
  MS_RDONLY,
  MS_REMOUNT,
  type MountInfo,
  parseMountInfo,
  parseMountOptions,
} from '../common/mount-options.js';
import { MNT_DETACH, SyscallError, mount as sysMount, umount as sysUmount } from './native.js';

export { type MountInfo, parseMountInfo, parseMountOptions };

export function mountTable(): MountInfo[] {
  return parseMountInfo(fs.readFileSync('/proc/self/mountinfo', 'utf8'));
}

/** The topmost mount at exactly this path, if any. */
export function mountAt(mountPoint: string): MountInfo | undefined {
  return mountTable()
    .filter((m) => m.mountPoint === mountPoint)
    .pop();
}

export function doMount(source: string, target: string, fstype: string, options: readonly string[]): void {
  const o = parseMountOptions(options);
  const bindRo = (o.flags & MS_BIND) !== 0 && (o.flags & MS_RDONLY) !== 0;
  sysMount(source, target, fstype, o.flags, o.data);
  if (bindRo) sysMount('', target, '', o.flags | MS_REMOUNT, ''); // read-only binds take a remount
  if (o.propagation) sysMount('', target, '', o.propagation, '');
}

/** Unmounts, falling back to a lazy detach when busy. Returns false when nothing was mounted. */
export function doUnmount(target: string): boolean {
  try {
    sysUmount(target);
    return true;
  } catch (e) {
    if (e instanceof SyscallError && e.code === 'EINVAL') return false; // not a mount point
    if (e instanceof SyscallError && e.code === 'EBUSY') {
      sysUmount(target, MNT_DETACH);
      return true;
    }
    throw e;
  }
}
