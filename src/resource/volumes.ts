// Which OCI mounts the guest can do itself and which need a host path shared through virtio-fs.
import { randomBytes } from 'node:crypto';
import type fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { GUEST_EPHEMERAL_DIR, GUEST_SANDBOX_SHM_DIR, GUEST_SHARED_DIR } from '../contract/index.js';
import { readMountInfo } from './mountinfo.js';
import type { GuestStorage, OciMount, OciSpec } from './types.js';

/** What to do with one spec mount. */
export type MountPlan =
  /** Left for the guest as written (proc, sysfs, tmpfs, devpts, mqueue, cgroup, host devices, /proc and /sys binds). */
  | { kind: 'guest'; mount: OciMount }
  /**
   * A pod's memory-backed emptyDir: a tmpfs made in the guest (not shared from the host, as Kata does), at
   * GUEST_EPHEMERAL_DIR/<name>; every container of the pod that mounts the same volume gets the same tmpfs.
   */
  | { kind: 'ephemeral'; mount: OciMount; name: string; fsGid?: number }
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
/** kubelet's dir for emptyDir volumes: /var/lib/kubelet/pods/<uid>/volumes/kubernetes.io~empty-dir/<name>. */
const K8S_EMPTY_DIR = 'kubernetes.io~empty-dir';
/** Kata's marker mount type for an ephemeral volume (runtime-rs sets it on tmpfs emptyDirs; a caller may too). */
export const EPHEMERAL_MOUNT_TYPE = 'ephemeral';
const SHM_DESTINATION = '/dev/shm';
/** The pod's /dev/shm size when its spec names none (Kata's DEFAULT_SHM_SIZE, Docker's default too). */
export const DEFAULT_SHM_BYTES = 64 * 1024 * 1024;

/** The storage of the pod's /dev/shm, made by the agent at CreateSandbox (Kata's sandbox shm storage). */
export function sandboxShmStorage(bytes: number): GuestStorage {
  return {
    driver: EPHEMERAL_MOUNT_TYPE,
    source: 'shm',
    fstype: 'tmpfs',
    options: ['noexec', 'nosuid', 'nodev', 'mode=1777', `size=${bytes}`],
    mountPoint: GUEST_SANDBOX_SHM_DIR,
  };
}

/**
 * The pod's /dev/shm size: the size of the host tmpfs the sandbox spec binds there (containerd's CRI plugin
 * makes one per pod), else DEFAULT_SHM_BYTES.
 */
export async function podShmBytes(spec: OciSpec): Promise<number> {
  const m = (spec.mounts ?? []).find(
    (x) => path.posix.normalize(x.destination ?? '') === SHM_DESTINATION && isBindMount(x),
  );
  if (!m?.source || m.source === SHM_DESTINATION) return DEFAULT_SHM_BYTES;
  try {
    const st = await fsp.statfs(m.source);
    return st.blocks * st.bsize || DEFAULT_SHM_BYTES;
  } catch (err) {
    throw new Error(
      `sizing the pod's /dev/shm from ${m.source}: ${(err as NodeJS.ErrnoException).code ?? err}`,
    );
  }
}

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
  if (m.type === EPHEMERAL_MOUNT_TYPE) return planEphemeral(containerId, m, bundle);
  const dest = path.posix.normalize(m.destination ?? '');
  if (!isBindMount(m) && dest !== SHM_DESTINATION) return { kind: 'guest', mount: m };
  if (dest === SHM_DESTINATION) {
    // Every container's /dev/shm is the pod's, made in the guest (sandboxShmStorage), as in a Kubernetes pod.
    const ro = options.includes('ro') ? ['ro'] : [];
    return {
      kind: 'guest',
      mount: {
        destination: m.destination,
        type: 'bind',
        source: GUEST_SANDBOX_SHM_DIR,
        options: ['rbind', ...ro],
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
  if (path.basename(path.dirname(hostSource)) === K8S_EMPTY_DIR && (await isTmpfsMount(hostSource))) {
    return planEphemeral(containerId, m, bundle);
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

async function isTmpfsMount(p: string): Promise<boolean> {
  return (await readMountInfo()).some((i) => i.mountPoint === p && i.fstype === 'tmpfs');
}

/** An ephemeral volume: named after its source dir (kubelet's volume name); the host dir's group goes along. */
async function planEphemeral(containerId: string, m: OciMount, bundle: string): Promise<MountPlan> {
  const name = path.basename(m.source ?? '');
  if (!m.source || name === '' || name === '.' || name === '..' || !/^[A-Za-z0-9._-]+$/.test(name)) {
    throw new Error(
      `container ${containerId}: ephemeral volume ${JSON.stringify(m.source ?? '')} -> ${m.destination}: ` +
        'its source must end in a volume name (letters, digits, ".", "_", "-")',
    );
  }
  let gid = 0;
  try {
    gid = (await fsp.stat(path.resolve(bundle, m.source))).gid;
  } catch (err) {
    // The marker type needs no host dir; a kubelet emptyDir (checked by the caller) has one.
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  // A non-root group is kubelet's fsGroup: the guest tmpfs gets it too (Kata's fsgid option).
  return { kind: 'ephemeral', mount: m, name, ...(gid !== 0 ? { fsGid: gid } : {}) };
}

/** The grpc.Storage the agent mounts for an ephemeral plan (driver, source, fstype and options as Kata's). */
export function ephemeralStorage(plan: Extract<MountPlan, { kind: 'ephemeral' }>): GuestStorage {
  return {
    driver: EPHEMERAL_MOUNT_TYPE,
    source: 'tmpfs',
    fstype: 'tmpfs',
    options: plan.fsGid !== undefined ? [`fsgid=${plan.fsGid}`] : [],
    mountPoint: path.posix.join(GUEST_EPHEMERAL_DIR, plan.name),
  };
}

/** The spec mount the guest gets for a plan. */
export function guestMount(plan: MountPlan): OciMount {
  if (plan.kind === 'guest') return plan.mount;
  if (plan.kind === 'ephemeral') {
    const options = (plan.mount.options ?? []).filter((o) => o !== 'bind' && o !== 'rbind');
    return {
      destination: plan.mount.destination,
      type: 'bind',
      source: path.posix.join(GUEST_EPHEMERAL_DIR, plan.name),
      options: ['rbind', ...options],
    };
  }
  return { ...plan.mount, type: 'bind', source: path.posix.join(GUEST_SHARED_DIR, plan.name) };
}
