// mount(2) options and the mount table, for storages and the agent's own mounts.
import fs from 'node:fs';
import { MNT_DETACH, SyscallError, mount as sysMount, umount as sysUmount } from './native.js';

const FLAGS: Record<string, [set: boolean, flag: number]> = {
  ro: [true, 0x1],
  rw: [false, 0x1],
  nosuid: [true, 0x2],
  suid: [false, 0x2],
  nodev: [true, 0x4],
  dev: [false, 0x4],
  noexec: [true, 0x8],
  exec: [false, 0x8],
  sync: [true, 0x10],
  async: [false, 0x10],
  remount: [true, 0x20],
  mand: [true, 0x40],
  nomand: [false, 0x40],
  dirsync: [true, 0x80],
  noatime: [true, 0x400],
  atime: [false, 0x400],
  nodiratime: [true, 0x800],
  diratime: [false, 0x800],
  bind: [true, 0x1000],
  rbind: [true, 0x1000 | 0x4000],
  relatime: [true, 0x200000],
  norelatime: [false, 0x200000],
  strictatime: [true, 0x1000000],
  lazytime: [true, 0x2000000],
  silent: [true, 0x8000],
  loud: [false, 0x8000],
};

export const MS_BIND = 0x1000;
export const MS_REC = 0x4000;
export const MS_RDONLY = 0x1;
export const MS_REMOUNT = 0x20;

const PROPAGATION: Record<string, number> = {
  private: 1 << 18,
  rprivate: (1 << 18) | MS_REC,
  shared: 1 << 20,
  rshared: (1 << 20) | MS_REC,
  slave: 1 << 19,
  rslave: (1 << 19) | MS_REC,
  unbindable: 1 << 17,
  runbindable: (1 << 17) | MS_REC,
};

export interface ParsedMountOptions {
  flags: number;
  /** Propagation change to apply after the mount (a separate mount(2) call), 0 if none. */
  propagation: number;
  /** Filesystem-specific options, comma-joined. */
  data: string;
}

export function parseMountOptions(options: readonly string[]): ParsedMountOptions {
  let flags = 0;
  let propagation = 0;
  const data: string[] = [];
  for (const raw of options) {
    for (const o of raw.split(',')) {
      if (o === '' || o === 'defaults') continue;
      const f = FLAGS[o];
      if (f) {
        flags = f[0] ? flags | f[1] : flags & ~f[1];
        continue;
      }
      const p = PROPAGATION[o];
      if (p !== undefined) {
        propagation |= p;
        continue;
      }
      data.push(o);
    }
  }
  return { flags, propagation, data: data.join(',') };
}

export interface MountInfo {
  mountPoint: string;
  fstype: string;
  source: string;
}

function unescapeOctal(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
}

export function parseMountInfo(text: string): MountInfo[] {
  const out: MountInfo[] = [];
  for (const line of text.split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const left = line.slice(0, sep).split(' ');
    const right = line.slice(sep + 3).split(' ');
    if (left.length < 5 || right.length < 2) continue;
    out.push({ mountPoint: unescapeOctal(left[4]!), fstype: right[0]!, source: unescapeOctal(right[1]!) });
  }
  return out;
}

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
