// OCI runtime-spec JSON (what containerd writes to config.json and sends in Exec/Update) → Kata's grpc.Spec
// messages, with the agent side's converters so both directions agree. The spec type is the one in
// protocols/oci-spec-types.ts; what of a host spec reaches the guest is decided in resource/guest-spec.ts.
import { create } from '@bufbuild/protobuf';
import {
  type LinuxResources,
  LinuxResourcesSchema,
  type Process,
  type Spec,
} from '../protocols/gen/oci_pb.js';
import { processToGrpc, resourcesToGrpc, specToGrpc } from '../protocols/oci-spec-to-grpc.js';
import type { OciProcess, OciResources, OciSpec } from '../protocols/oci-spec-types.js';

export type { OciProcess, OciResources, OciSpec } from '../protocols/oci-spec-types.js';
/** Kept here for the runtime's callers; the rules live in resource/guest-spec.ts. */

function convert<T>(what: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw new Error(`converting the OCI ${what} for the agent: ${(e as Error).message}`, { cause: e });
  }
}

export function toGrpcSpec(spec: OciSpec): Spec {
  return convert('spec', () => specToGrpc(spec));
}

export function toGrpcProcess(process: OciProcess): Process {
  return convert('process', () => processToGrpc(process));
}

export function toGrpcResources(resources: OciResources): LinuxResources {
  return convert('resources', () => resourcesToGrpc(resources));
}

export function emptyResources(): LinuxResources {
  return create(LinuxResourcesSchema);
}
