// The filesystems PID 1 mounts before anything else (proc, sys, dev, cgroup2, ...), and what / is.
import fs from 'node:fs';
import { MS_NODEV, MS_NOEXEC, MS_NOSUID } from '../../common/mount-options.js';
import { mount } from '../native.js';

interface MountSpec {
  source: string;
  target: string;
  fstype: string;
  flags: number;
  /** Mount options; '' for none. */
  data: string;
}

const BASE_MOUNTS: MountSpec[] = [
  { source: 'proc', target: '/proc', fstype: 'proc', flags: MS_NOSUID | MS_NODEV | MS_NOEXEC, data: '' },
  { source: 'sysfs', target: '/sys', fstype: 'sysfs', flags: MS_NOSUID | MS_NODEV | MS_NOEXEC, data: '' },
  { source: 'devtmpfs', target: '/dev', fstype: 'devtmpfs', flags: MS_NOSUID, data: 'mode=0755' },
  {
    source: 'devpts',
    target: '/dev/pts',
    fstype: 'devpts',
    flags: MS_NOSUID | MS_NOEXEC,
    data: 'newinstance,ptmxmode=0666,mode=0620,gid=5',
  },
  { source: 'shm', target: '/dev/shm', fstype: 'tmpfs', flags: MS_NOSUID | MS_NODEV, data: 'mode=1777' },
  { source: 'tmpfs', target: '/run', fstype: 'tmpfs', flags: MS_NOSUID | MS_NODEV, data: 'mode=0755' },
  {
    source: 'cgroup2',
    target: '/sys/fs/cgroup',
    fstype: 'cgroup2',
    flags: MS_NOSUID | MS_NODEV | MS_NOEXEC,
    data: '',
  },
];

/** /proc/self/mounts as [source, target, fstype] per line; empty before /proc is mounted. */
function mountTable(): string[][] {
  try {
    return fs
      .readFileSync('/proc/self/mounts', 'utf8')
      .split('\n')
      .map((l) => l.split(' '));
  } catch {
    return []; // /proc is not mounted yet: nothing is
  }
}

function mountedTargets(): Set<string> {
  return new Set(mountTable().map((f) => f[1] ?? ''));
}

function mountAll(specs: MountSpec[]): string[] {
  for (const m of specs) {
    // /init may have mounted /proc already (it reads the CPU flags).
    if (mountedTargets().has(m.target)) continue;
    fs.mkdirSync(m.target, { recursive: true });
    mount(m.source, m.target, m.fstype, m.flags, m.data);
  }
  const present = mountedTargets();
  const done = specs.map((m) => m.target).filter((t) => present.has(t));
  // The usual /dev links (devtmpfs does not make them); containers and shells expect them.
  for (const [link, target] of [
    ['/dev/fd', '/proc/self/fd'],
    ['/dev/stdin', '/proc/self/fd/0'],
    ['/dev/stdout', '/proc/self/fd/1'],
    ['/dev/stderr', '/proc/self/fd/2'],
  ] as const) {
    if (!fs.existsSync(link)) fs.symlinkSync(target, link);
  }
  return done;
}

/** The mounts that everything else needs, done first; returns those in place (by the agent or by /init). */
export function mountBasics(): string[] {
  return mountAll(BASE_MOUNTS);
}

/** True when / is the initramfs itself (Kata's agent then sets no_pivot_root for containers). */
export function isInitramfsRoot(): boolean {
  const root = mountTable().find((f) => f[1] === '/');
  return root?.[0] === 'rootfs' || root?.[2] === 'rootfs';
}
