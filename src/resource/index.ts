// Host side of a sandbox: the virtio-fs shared dir, container rootfs and bind mounts, the sandbox cgroup.
export { GUEST_SHARED_DIR, KATA_SHARED_TAG, DEFAULT_SHARED_FS_ROOT, SharedFs } from './share-fs.js';
export { prepareContainer, releaseContainer, type ContainerRecord } from './container.js';
export type { OciMount, OciSpec, PreparedContainer, RootfsMount } from './types.js';
export { buildGuestSpec, guestCgroupsPath, GUEST_CGROUP_PARENT } from './guest-spec.js';
export { planMount, guestMount, isBindMount, type MountPlan } from './volumes.js';
export { mountBundleRootfs, specRootDir, rootfsSharedPath } from './rootfs.js';
export {
  SandboxCgroup,
  detectCgroupVersion,
  type CgroupVersion,
  type SandboxCgroupOptions,
} from './cgroups.js';
export { MountError, mountsUnder, readMountInfo, unmountTree } from './mount.js';
