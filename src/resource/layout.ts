// Where the host side of a sandbox's share lives and the names inside it. A leaf: share-fs, container, rootfs
// and volumes import it; it imports nothing. What the guest must agree on (tag, guest paths) is in src/contract.

/** Parent of every sandbox's share dir on the host (Kata's). */
export const DEFAULT_SHARED_FS_ROOT = '/run/kata-containers/shared/sandboxes';
/** Under <root>/<sid>/: the dir virtiofsd serves (only this is visible to the guest). */
export const SHARED_SUBDIR = 'shared';
/** Under <root>/<sid>/: per-container records of what prepareContainer mounted, so release works after a restart. */
export const RECORDS_SUBDIR = 'containers';
/** Where containerd's rootfs mounts go in a bundle (as its runc shim does). */
export const BUNDLE_ROOTFS = 'rootfs';
