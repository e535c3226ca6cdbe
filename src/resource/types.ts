// Shapes shared by the rootfs, volume and container modules (and by the runtime that calls them).
import type { MessageInitShape } from '@bufbuild/protobuf';
import type { StorageSchema } from '../protocols/gen/agent_pb.js';

/** containerd's Mount (CreateTaskRequest.rootfs): what the snapshotter wants mounted as the rootfs. */
export interface RootfsMount {
  type: string;
  source: string;
  target?: string;
  options: string[];
}

/** One entry of an OCI runtime-spec `mounts` array. */
export interface OciMount {
  destination: string;
  type?: string;
  source?: string;
  options?: string[];
}

/** An OCI runtime-spec (config.json) as a JSON object; only the fields kata-ts reads or rewrites are typed. */
export type OciSpec = Record<string, unknown> & {
  root?: { path: string; readonly?: boolean };
  mounts?: OciMount[];
  process?: Record<string, unknown>;
  linux?: Record<string, unknown>;
};

export interface PreparedContainer {
  /** The spec rewritten for the guest (rootfs and bind sources point into the virtio-fs share). */
  guestSpec: OciSpec;
  /** grpc.Storage entries the container needs (none for virtio-fs rootfs; kept for block devices later). */
  storages: MessageInitShape<typeof StorageSchema>[];
}
