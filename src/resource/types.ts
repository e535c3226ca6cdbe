// Shapes shared by the rootfs, volume and container modules (and by the runtime that calls them).
import type { MessageInitShape } from '@bufbuild/protobuf';
import type { StorageSchema } from '../protocols/gen/agent_pb.js';
import type { OciSpec } from '../protocols/oci-spec-types.js';

/** containerd's Mount (CreateTaskRequest.rootfs): what the snapshotter wants mounted as the rootfs. */
export interface RootfsMount {
  type: string;
  source: string;
  target?: string;
  options: string[];
}

/** The one OCI runtime-spec type (config.json as JSON), shared with the runtime, protocols and agent. */
export type { OciMount, OciSpec } from '../protocols/oci-spec-types.js';

/** What preparing a container's rootfs and mounts in the share needs. */
export interface PrepareContainerOptions {
  bundle: string;
  rootfs: RootfsMount[];
  spec: OciSpec;
  readonlyRootfs?: boolean;
  /** Kata's disable_guest_seccomp (see buildGuestSpec). */
  disableGuestSeccomp?: boolean;
}

/** A grpc.Storage for the agent (what it mounts in the guest before a container or the sandbox uses it). */
export type GuestStorage = MessageInitShape<typeof StorageSchema>;

export interface PreparedContainer {
  /** The spec rewritten for the guest (rootfs and bind sources point into the virtio-fs share). */
  guestSpec: OciSpec;
  /** grpc.Storage entries the container needs: its ephemeral volumes' tmpfs (none for the virtio-fs rootfs). */
  storages: GuestStorage[];
}
