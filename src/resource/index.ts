// Host side of a sandbox: the virtio-fs shared dir, container rootfs and bind mounts, the sandbox cgroup.
export { GUEST_EPHEMERAL_DIR, GUEST_SANDBOX_SHM_DIR, GUEST_SHARED_DIR } from '../contract/index.js';
export { DEFAULT_SHARED_FS_ROOT } from './layout.js';
export { SharedFs } from './share-fs.js';
export {
  cleanupSandboxShare,
  prepareContainer,
  releaseContainer,
  type ContainerRecord,
} from './container.js';
export type {
  OciMount,
  OciSpec,
  PrepareContainerOptions,
  PreparedContainer,
  RootfsMount,
} from './types.js';
export {
  buildGuestSpec,
  sanitizeForGuest,
  guestCgroupsPath,
  GUEST_CGROUP_PARENT,
  type GuestSpecOptions,
} from './guest-spec.js';
export {
  planMount,
  guestMount,
  isBindMount,
  podShmBytes,
  sandboxShmStorage,
  DEFAULT_SHM_BYTES,
  type MountPlan,
} from './volumes.js';
export { mountBundleRootfs, specRootDir } from './rootfs.js';
export {
  SandboxCgroup,
  detectCgroupVersion,
  type CgroupVersion,
  type SandboxCgroupOptions,
} from './cgroups.js';
export { MountError, mountsUnder, readMountInfo, unmountTree } from './mount.js';
