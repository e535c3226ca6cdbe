// OCI runtime-spec JSON (what containerd writes to config.json and sends in Exec/Update) → Kata's grpc.Spec
// messages. The proto keeps Go's field names (Version, Process, UIDMappings, ...), so keys are matched
// case-insensitively against the descriptor; only `ociVersion` is renamed.
import {
  type DescField,
  type DescMessage,
  type JsonObject,
  type JsonValue,
  type MessageShape,
  create,
  fromJson,
} from '@bufbuild/protobuf';
import {
  type LinuxResources,
  LinuxResourcesSchema,
  type Process,
  ProcessSchema,
  type Spec,
  SpecSchema,
} from '../protocols/gen/oci_pb.js';

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

const RENAMES: Record<string, string> = { ociversion: 'version' };

function jsonKeyFor(field: DescField): string {
  return field.jsonName;
}

/** Renames the keys of `value` to the JSON names of `desc`'s fields; unknown keys are dropped. */
function rekey(desc: DescMessage, value: JsonValue): JsonValue {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return value;
  const byLower = new Map<string, DescField>();
  for (const f of desc.fields) byLower.set(f.name.toLowerCase(), f);
  const out: JsonObject = {};
  for (const [k, v] of Object.entries(value)) {
    const lower = k.toLowerCase();
    const field = byLower.get(RENAMES[lower] ?? lower);
    if (!field || v === null || v === undefined) continue;
    out[jsonKeyFor(field)] = convertField(field, v);
  }
  return out;
}

function convertField(field: DescField, v: JsonValue): JsonValue {
  switch (field.fieldKind) {
    case 'message':
      return rekey(field.message, v);
    case 'list':
      return Array.isArray(v) && field.listKind === 'message' ? v.map((e) => rekey(field.message, e)) : v;
    case 'map':
      if (field.mapKind === 'message' && v && typeof v === 'object' && !Array.isArray(v)) {
        return Object.fromEntries(Object.entries(v).map(([mk, mv]) => [mk, rekey(field.message, mv)]));
      }
      return v;
    default:
      return v;
  }
}

function convert<D extends DescMessage>(desc: D, json: unknown, what: string): MessageShape<D> {
  try {
    return fromJson(desc, rekey(desc, (json ?? {}) as JsonValue), { ignoreUnknownFields: true });
  } catch (e) {
    throw new Error(`converting the OCI ${what} for the agent: ${(e as Error).message}`);
  }
}

export function toGrpcSpec(spec: OciSpec): Spec {
  return convert(SpecSchema, spec, 'spec');
}

export function toGrpcProcess(process: OciProcess): Process {
  return convert(ProcessSchema, process, 'process');
}

export function toGrpcResources(resources: OciResources): LinuxResources {
  return convert(LinuxResourcesSchema, resources, 'resources');
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
