// mount(2) flags, containerd's mount-option vocabulary and /proc/self/mountinfo parsing: pure, and shared by
// the host (src/resource) and the guest agent, so an option means one thing on both sides of the VM.

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
export const MS_LAZYTIME = 1 << 25;

// containerd's mount package vocabulary, so CreateTaskRequest.rootfs and storage options mean what they mean there.
const FLAG_OPTIONS: Record<string, { set?: number; clear?: number }> = {
  async: { clear: MS_SYNCHRONOUS },
  atime: { clear: MS_NOATIME },
  bind: { set: MS_BIND },
  defaults: {},
  dev: { clear: MS_NODEV },
  diratime: { clear: MS_NODIRATIME },
  dirsync: { set: MS_DIRSYNC },
  exec: { clear: MS_NOEXEC },
  lazytime: { set: MS_LAZYTIME },
  loud: { clear: MS_SILENT },
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
  silent: { set: MS_SILENT },
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

export interface ParsedMountOptions {
  /** Flags for the main mount call (no propagation flags). */
  flags: number;
  /** Propagation flags (with MS_REC when recursive), applied by a second mount(2) call; 0 if none. */
  propagation: number;
  /** Options the filesystem interprets (overlay's lowerdir=..., tmpfs's size=...), comma-joined. */
  data: string;
}

/** Options as containerd and the OCI spec give them; an entry may itself be comma-separated. */
export function parseMountOptions(options: readonly string[]): ParsedMountOptions {
  let flags = 0;
  let propagation = 0;
  const data: string[] = [];
  for (const o of options.flatMap((raw) => raw.split(','))) {
    if (o === '') continue;
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
