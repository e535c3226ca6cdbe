// Which OCI mounts the guest can do itself and which need a host path shared through virtio-fs.
import { randomBytes } from 'node:crypto';
import type fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { GUEST_SHARED_DIR } from '../contract/index.js';
import type { OciMount } from './types.js';

/** What to do with one spec mount. */
export type MountPlan =
  /** Left for the guest as written (proc, sysfs, tmpfs, devpts, mqueue, cgroup, host devices, /proc and /sys binds). */
  | { kind: 'guest'; mount: OciMount }
  /** A host file or dir bind-mounted into the share; the guest mounts it from GUEST_SHARED_DIR/<name>. */
  | {
      kind: 'share';
      mount: OciMount;
      /** Host source, symlinks resolved. */
      hostSource: string;
      /** File name in the shared dir. */
      name: string;
      isDir: boolean;
      readonly: boolean;
      recursive: boolean;
    };

const SYSTEM_SOURCE_DIRS = ['/proc', '/sys'];
const SHM_DESTINATION = '/dev/shm';
/** The guest's /dev/shm when the host one (a CRI sandbox dir) cannot be shared: a tmpfs like Docker's default. */
const GUEST_SHM_OPTIONS = ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'];

export function isBindMount(m: OciMount): boolean {
  return m.type === 'bind' || (m.options ?? []).some((o) => o === 'bind' || o === 'rbind');
}

function under(p: string, dir: string): boolean {
  return p === dir || p.startsWith(`${dir}/`);
}

/** A file name for a shared mount: <cid>-<16 random hex>-<basename>, safe as one path component. */
export function sharedName(containerId: string, source: string): string {
  const base = path
    .basename(source)
    .replace(/[^A-Za-z0-9._-]/g, '_')
    .slice(0, 100);
  const safe = base === '' || base === '.' || base === '..' ? 'volume' : base;
  return `${containerId}-${randomBytes(8).toString('hex')}-${safe}`;
}

/** Matches the names sharedName gives a container's mounts (used when a container's record is lost). */
export function sharedNamePattern(containerId: string): RegExp {
  return new RegExp(`^${containerId.replace(/[.]/g, '\\.')}-[0-9a-f]{16}-`);
}

/**
 * Decides, without touching anything, how one spec mount reaches the guest. Throws (naming the mount) when a
 * bind mount's host source is missing or unusable.
 */
export async function planMount(containerId: string, m: OciMount, bundle: string): Promise<MountPlan> {
  const options = m.options ?? [];
  if (!isBindMount(m)) return { kind: 'guest', mount: m };
  const dest = path.posix.normalize(m.destination ?? '');
  if (dest === SHM_DESTINATION) {
    // CRI binds a per-pod host dir here; the guest cannot see it, so the container gets a private tmpfs.
    const ro = options.includes('ro') ? ['ro'] : [];
    return {
      kind: 'guest',
      mount: {
        destination: m.destination,
        type: 'tmpfs',
        source: 'shm',
        options: [...GUEST_SHM_OPTIONS, ...ro],
      },
    };
  }
  if (!m.source) {
    throw new Error(`container ${containerId}: bind mount for ${m.destination} has no source`);
  }
  const source = path.resolve(bundle, m.source);
  if (SYSTEM_SOURCE_DIRS.some((d) => under(source, d))) return { kind: 'guest', mount: m };
  let st: fs.Stats;
  let hostSource: string;
  try {
    hostSource = await fsp.realpath(source);
    st = await fsp.stat(hostSource);
  } catch (err) {
    throw new Error(
      `container ${containerId}: bind mount ${m.source} -> ${m.destination}: source is not usable: ${
        (err as NodeJS.ErrnoException).code ?? String(err)
      }`,
    );
  }
  // Host devices (anything but plain files under /dev) are left to the guest, as upstream Kata does.
  if (under(dest, '/dev') && !st.isFile()) return { kind: 'guest', mount: m };
  return {
    kind: 'share',
    mount: m,
    hostSource,
    name: sharedName(containerId, source),
    isDir: st.isDirectory(),
    readonly: options.includes('ro'),
    recursive: options.includes('rbind'),
  };
}

/** The spec mount the guest gets for a plan. */
export function guestMount(plan: MountPlan): OciMount {
  if (plan.kind === 'guest') return plan.mount;
  return { ...plan.mount, type: 'bind', source: path.posix.join(GUEST_SHARED_DIR, plan.name) };
}
