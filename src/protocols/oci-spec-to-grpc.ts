// OCI runtime-spec JSON → the agent protocol's grpc.Spec (oci.proto): what the host shim sends.
// grpc.Spec cannot tell "unset" from zero for scalars, so absent JSON fields map to zero (as upstream's
// converters do); oci-spec-from-grpc.ts maps zero back to absent.
import { type MessageInitShape, create } from '@bufbuild/protobuf';
import {
  type LinuxResources as GLinuxResources,
  type Process as GProcess,
  type Spec as GSpec,
  type HookSchema,
  type HooksSchema,
  LinuxResourcesSchema,
  type LinuxSchema,
  type LinuxSeccompSchema,
  ProcessSchema,
  SpecSchema,
} from './gen/oci_pb.js';
import type {
  Int64,
  OciHook,
  OciHooks,
  OciIdMapping,
  OciLinux,
  OciProcess,
  OciResources,
  OciSeccomp,
  OciSpec,
  OciThrottleDevice,
} from './oci-spec-types.js';

function big(v: Int64 | undefined): bigint {
  if (v === undefined) return 0n;
  return typeof v === 'bigint' ? v : BigInt(Math.trunc(v));
}

function hookToGrpc(h: OciHook): MessageInitShape<typeof HookSchema> {
  return { Path: h.path, Args: h.args ?? [], Env: h.env ?? [], Timeout: big(h.timeout) };
}

function hooksToGrpc(h: OciHooks): MessageInitShape<typeof HooksSchema> {
  return {
    Prestart: (h.prestart ?? []).map(hookToGrpc),
    Poststart: (h.poststart ?? []).map(hookToGrpc),
    Poststop: (h.poststop ?? []).map(hookToGrpc),
    CreateRuntime: (h.createRuntime ?? []).map(hookToGrpc),
    CreateContainer: (h.createContainer ?? []).map(hookToGrpc),
    StartContainer: (h.startContainer ?? []).map(hookToGrpc),
  };
}

export function processToGrpc(p: OciProcess): GProcess {
  return create(ProcessSchema, {
    Terminal: p.terminal ?? false,
    ConsoleSize: p.consoleSize ? { Height: p.consoleSize.height, Width: p.consoleSize.width } : undefined,
    User: {
      UID: p.user?.uid ?? 0,
      GID: p.user?.gid ?? 0,
      AdditionalGids: p.user?.additionalGids ?? [],
      Username: p.user?.username ?? '',
    },
    Args: p.args ?? [],
    Env: p.env ?? [],
    Cwd: p.cwd ?? '',
    Capabilities: p.capabilities
      ? {
          Bounding: p.capabilities.bounding ?? [],
          Effective: p.capabilities.effective ?? [],
          Inheritable: p.capabilities.inheritable ?? [],
          Permitted: p.capabilities.permitted ?? [],
          Ambient: p.capabilities.ambient ?? [],
        }
      : undefined,
    Rlimits: (p.rlimits ?? []).map((r) => ({ Type: r.type, Hard: big(r.hard), Soft: big(r.soft) })),
    NoNewPrivileges: p.noNewPrivileges ?? false,
    ApparmorProfile: p.apparmorProfile ?? '',
    OOMScoreAdj: big(p.oomScoreAdj),
    SelinuxLabel: p.selinuxLabel ?? '',
  });
}

export function resourcesToGrpc(r: OciResources): GLinuxResources {
  const throttle = (l?: OciThrottleDevice[]) =>
    (l ?? []).map((d) => ({ Major: big(d.major), Minor: big(d.minor), Rate: big(d.rate) }));
  return create(LinuxResourcesSchema, {
    Devices: (r.devices ?? []).map((d) => ({
      Allow: d.allow,
      Type: d.type ?? '',
      Major: big(d.major),
      Minor: big(d.minor),
      Access: d.access ?? '',
    })),
    Memory: r.memory
      ? {
          Limit: big(r.memory.limit),
          Reservation: big(r.memory.reservation),
          Swap: big(r.memory.swap),
          Kernel: big(r.memory.kernel),
          KernelTCP: big(r.memory.kernelTCP),
          Swappiness: big(r.memory.swappiness),
          DisableOOMKiller: r.memory.disableOOMKiller ?? false,
        }
      : undefined,
    CPU: r.cpu
      ? {
          Shares: big(r.cpu.shares),
          Quota: big(r.cpu.quota),
          Period: big(r.cpu.period),
          RealtimeRuntime: big(r.cpu.realtimeRuntime),
          RealtimePeriod: big(r.cpu.realtimePeriod),
          Cpus: r.cpu.cpus ?? '',
          Mems: r.cpu.mems ?? '',
        }
      : undefined,
    Pids: r.pids ? { Limit: big(r.pids.limit) } : undefined,
    BlockIO: r.blockIO
      ? {
          Weight: r.blockIO.weight ?? 0,
          LeafWeight: r.blockIO.leafWeight ?? 0,
          WeightDevice: (r.blockIO.weightDevice ?? []).map((d) => ({
            Major: big(d.major),
            Minor: big(d.minor),
            Weight: d.weight ?? 0,
            LeafWeight: d.leafWeight ?? 0,
          })),
          ThrottleReadBpsDevice: throttle(r.blockIO.throttleReadBpsDevice),
          ThrottleWriteBpsDevice: throttle(r.blockIO.throttleWriteBpsDevice),
          ThrottleReadIOPSDevice: throttle(r.blockIO.throttleReadIOPSDevice),
          ThrottleWriteIOPSDevice: throttle(r.blockIO.throttleWriteIOPSDevice),
        }
      : undefined,
    HugepageLimits: (r.hugepageLimits ?? []).map((h) => ({ Pagesize: h.pageSize, Limit: big(h.limit) })),
    Network: r.network
      ? {
          ClassID: r.network.classID ?? 0,
          Priorities: (r.network.priorities ?? []).map((p) => ({ Name: p.name, Priority: p.priority })),
        }
      : undefined,
  });
}

function seccompToGrpc(s: OciSeccomp): MessageInitShape<typeof LinuxSeccompSchema> {
  return {
    DefaultAction: s.defaultAction,
    Architectures: s.architectures ?? [],
    Flags: s.flags ?? [],
    Syscalls: (s.syscalls ?? []).map((c) => ({
      Names: c.names,
      Action: c.action,
      ErrnoRet: c.errnoRet === undefined ? { case: undefined } : { case: 'errnoret', value: c.errnoRet },
      Args: (c.args ?? []).map((a) => ({
        Index: BigInt(a.index),
        Value: big(a.value),
        ValueTwo: big(a.valueTwo),
        Op: a.op,
      })),
    })),
  };
}

function linuxToGrpc(l: OciLinux): MessageInitShape<typeof LinuxSchema> {
  const idmap = (m?: OciIdMapping[]) =>
    (m ?? []).map((x) => ({ HostID: x.hostID, ContainerID: x.containerID, Size: x.size }));
  return {
    UIDMappings: idmap(l.uidMappings),
    GIDMappings: idmap(l.gidMappings),
    Sysctl: { ...(l.sysctl ?? {}) },
    Resources: l.resources ? resourcesToGrpc(l.resources) : undefined,
    CgroupsPath: l.cgroupsPath ?? '',
    Namespaces: (l.namespaces ?? []).map((n) => ({ Type: n.type, Path: n.path ?? '' })),
    Devices: (l.devices ?? []).map((d) => ({
      Path: d.path,
      Type: d.type,
      Major: big(d.major),
      Minor: big(d.minor),
      FileMode: d.fileMode ?? 0,
      UID: d.uid ?? 0,
      GID: d.gid ?? 0,
    })),
    Seccomp: l.seccomp ? seccompToGrpc(l.seccomp) : undefined,
    RootfsPropagation: l.rootfsPropagation ?? '',
    MaskedPaths: l.maskedPaths ?? [],
    ReadonlyPaths: l.readonlyPaths ?? [],
    MountLabel: l.mountLabel ?? '',
    IntelRdt: l.intelRdt ? { L3CacheSchema: l.intelRdt.l3CacheSchema ?? '' } : undefined,
  };
}

/** OCI runtime-spec JSON → grpc.Spec. Fields grpc.Spec has no room for are dropped. */
export function specToGrpc(s: OciSpec): GSpec {
  return create(SpecSchema, {
    Version: s.ociVersion ?? '',
    Process: s.process ? processToGrpc(s.process) : undefined,
    Root: s.root ? { Path: s.root.path, Readonly: s.root.readonly ?? false } : undefined,
    Hostname: s.hostname ?? '',
    Mounts: (s.mounts ?? []).map((m) => ({
      destination: m.destination,
      source: m.source ?? '',
      type: m.type ?? '',
      options: m.options ?? [],
    })),
    Hooks: s.hooks ? hooksToGrpc(s.hooks) : undefined,
    Annotations: { ...(s.annotations ?? {}) },
    Linux: s.linux ? linuxToGrpc(s.linux) : undefined,
  });
}
