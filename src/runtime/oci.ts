// OCI runtime-spec JSON (what containerd writes to config.json and sends in Exec/Update) → Kata's grpc.Spec
// messages (with the agent side's converters), and the host-only parts of a spec the guest must not see.
import { create } from '@bufbuild/protobuf';
import {
  type LinuxResources,
  LinuxResourcesSchema,
  type Process,
  type Spec,
} from '../protocols/gen/oci_pb.js';
import { processToGrpc, resourcesToGrpc, specToGrpc } from '../protocols/oci-spec.js';

/** The parts of an OCI spec the runtime reads; everything else is passed through untyped. */
export interface OciSpec {
  ociVersion?: string;
  hostname?: string;
  annotations?: Record<string, string>;
  root?: { path: string; readonly?: boolean };
  process?: OciProcess;
  mounts?: { destination: string; type?: string; source?: string; options?: string[] }[];
  linux?: {
    resources?: OciResources;
    namespaces?: { type: string; path?: string }[];
    cgroupsPath?: string;
    seccomp?: unknown;
    [k: string]: unknown;
  };
  [k: string]: unknown;
}

export interface OciProcess {
  terminal?: boolean;
  args?: string[];
  env?: string[];
  cwd?: string;
  user?: { uid?: number; gid?: number; additionalGids?: number[]; username?: string };
  consoleSize?: { height: number; width: number };
  [k: string]: unknown;
}

export interface OciResources {
  memory?: { limit?: number; reservation?: number; swap?: number };
  cpu?: { shares?: number; quota?: number; period?: number; cpus?: string; mems?: string };
  pids?: { limit?: number };
  [k: string]: unknown;
}

// The agent helper's converters, so both directions (here JSON → grpc, in the guest grpc → JSON) agree.
type ProtoSpec = Parameters<typeof specToGrpc>[0];
type ProtoProcess = Parameters<typeof processToGrpc>[0];
type ProtoResources = Parameters<typeof resourcesToGrpc>[0];

function convert<T>(what: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw new Error(`converting the OCI ${what} for the agent: ${(e as Error).message}`, { cause: e });
  }
}

export function toGrpcSpec(spec: OciSpec): Spec {
  return convert('spec', () => specToGrpc({ ociVersion: '', ...spec } as unknown as ProtoSpec));
}

export function toGrpcProcess(process: OciProcess): Process {
  return convert('process', () => processToGrpc(process as unknown as ProtoProcess));
}

export function toGrpcResources(resources: OciResources): LinuxResources {
  return convert('resources', () => resourcesToGrpc(resources as unknown as ProtoResources));
}

export function emptyResources(): LinuxResources {
  return create(LinuxResourcesSchema);
}

/**
 * Host-only parts of a spec that make no sense in the guest: namespace paths (host netns, ...) and, when the
 * configuration says so, seccomp.
 */
export function sanitizeForGuest(spec: OciSpec, opts: { disableGuestSeccomp: boolean }): OciSpec {
  const out: OciSpec = structuredClone(spec);
  if (out.linux) {
    if (out.linux.namespaces) {
      out.linux.namespaces = out.linux.namespaces
        .filter((ns) => ns.type !== 'network')
        .map((ns) => ({ type: ns.type }));
    }
    if (opts.disableGuestSeccomp) out.linux.seccomp = undefined;
  }
  return out;
}
