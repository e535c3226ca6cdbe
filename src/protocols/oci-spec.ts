// OCI runtime-spec JSON (a bundle's config.json) ↔ the agent protocol's grpc.Spec (oci.proto), both ways.
// The host shim needs JSON → grpc; the agent needs grpc → JSON to write a bundle for crun.
// grpc.Spec cannot tell "unset" from zero for scalars, so zero values map to absent JSON fields
// (the same convention upstream's converters use), and absent JSON fields map to zero.
import { type MessageInitShape, create } from '@bufbuild/protobuf';
import {
  type Hook as GHook,
  type Linux as GLinux,
  type LinuxResources as GLinuxResources,
  type LinuxSeccomp as GLinuxSeccomp,
  type Mount as GMount,
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

/** 64-bit integers: numbers when they fit, bigints when they do not (see parseOciJson). */
export type Int64 = number | bigint;

export interface OciBox {
  height: number;
  width: number;
}
export interface OciUser {
  uid: number;
  gid: number;
  umask?: number;
  additionalGids?: number[];
  username?: string;
}
export interface OciCapabilities {
  bounding?: string[];
  effective?: string[];
  inheritable?: string[];
  permitted?: string[];
  ambient?: string[];
}
export interface OciRlimit {
  type: string;
  hard: Int64;
  soft: Int64;
}
export interface OciProcess {
  terminal?: boolean;
  consoleSize?: OciBox;
  user: OciUser;
  args?: string[];
  env?: string[];
  cwd: string;
  capabilities?: OciCapabilities;
  rlimits?: OciRlimit[];
  noNewPrivileges?: boolean;
  apparmorProfile?: string;
  oomScoreAdj?: number;
  selinuxLabel?: string;
}
export interface OciRoot {
  path: string;
  readonly?: boolean;
}
export interface OciMount {
  destination: string;
  source?: string;
  type?: string;
  options?: string[];
}
export interface OciHook {
  path: string;
  args?: string[];
  env?: string[];
  timeout?: number;
}
export interface OciHooks {
  prestart?: OciHook[];
  createRuntime?: OciHook[];
  createContainer?: OciHook[];
  startContainer?: OciHook[];
  poststart?: OciHook[];
  poststop?: OciHook[];
}
export interface OciIdMapping {
  containerID: number;
  hostID: number;
  size: number;
}
export interface OciDeviceCgroup {
  allow: boolean;
  type?: string;
  major?: Int64;
  minor?: Int64;
  access?: string;
}
export interface OciMemory {
  limit?: Int64;
  reservation?: Int64;
  swap?: Int64;
  kernel?: Int64;
  kernelTCP?: Int64;
  swappiness?: Int64;
  disableOOMKiller?: boolean;
}
export interface OciCpu {
  shares?: Int64;
  quota?: Int64;
  period?: Int64;
  realtimeRuntime?: Int64;
  realtimePeriod?: Int64;
  cpus?: string;
  mems?: string;
}
export interface OciPids {
  limit: Int64;
}
export interface OciWeightDevice {
  major: Int64;
  minor: Int64;
  weight?: number;
  leafWeight?: number;
}
export interface OciThrottleDevice {
  major: Int64;
  minor: Int64;
  rate: Int64;
}
export interface OciBlockIO {
  weight?: number;
  leafWeight?: number;
  weightDevice?: OciWeightDevice[];
  throttleReadBpsDevice?: OciThrottleDevice[];
  throttleWriteBpsDevice?: OciThrottleDevice[];
  throttleReadIOPSDevice?: OciThrottleDevice[];
  throttleWriteIOPSDevice?: OciThrottleDevice[];
}
export interface OciHugepageLimit {
  pageSize: string;
  limit: Int64;
}
export interface OciNetwork {
  classID?: number;
  priorities?: { name: string; priority: number }[];
}
export interface OciResources {
  devices?: OciDeviceCgroup[];
  memory?: OciMemory;
  cpu?: OciCpu;
  pids?: OciPids;
  blockIO?: OciBlockIO;
  hugepageLimits?: OciHugepageLimit[];
  network?: OciNetwork;
}
export interface OciNamespace {
  type: string;
  path?: string;
}
export interface OciDevice {
  type: string;
  path: string;
  major?: Int64;
  minor?: Int64;
  fileMode?: number;
  uid?: number;
  gid?: number;
}
export interface OciSeccompArg {
  index: number;
  value: Int64;
  valueTwo?: Int64;
  op: string;
}
export interface OciSyscall {
  names: string[];
  action: string;
  errnoRet?: number;
  args?: OciSeccompArg[];
}
export interface OciSeccomp {
  defaultAction: string;
  architectures?: string[];
  flags?: string[];
  syscalls?: OciSyscall[];
}
export interface OciLinux {
  uidMappings?: OciIdMapping[];
  gidMappings?: OciIdMapping[];
  sysctl?: Record<string, string>;
  resources?: OciResources;
  cgroupsPath?: string;
  namespaces?: OciNamespace[];
  devices?: OciDevice[];
  seccomp?: OciSeccomp;
  rootfsPropagation?: string;
  maskedPaths?: string[];
  readonlyPaths?: string[];
  mountLabel?: string;
  intelRdt?: { l3CacheSchema?: string };
}
/** The parts of the OCI runtime spec that grpc.Spec can carry. */
export interface OciSpec {
  ociVersion: string;
  process?: OciProcess;
  root?: OciRoot;
  hostname?: string;
  mounts?: OciMount[];
  hooks?: OciHooks;
  annotations?: Record<string, string>;
  linux?: OciLinux;
}

// ---------- helpers ----------

function big(v: Int64 | undefined): bigint {
  if (v === undefined) return 0n;
  return typeof v === 'bigint' ? v : BigInt(Math.trunc(v));
}
/** bigint → number when exact, else the bigint (serialized exactly by stringifyOciJson). */
function int(v: bigint): Int64 {
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}
function optInt(v: bigint): Int64 | undefined {
  return v === 0n ? undefined : int(v);
}
function optNum(v: number): number | undefined {
  return v === 0 ? undefined : v;
}
function optStr(v: string): string | undefined {
  return v === '' ? undefined : v;
}
function optArr<T>(v: T[]): T[] | undefined {
  return v.length === 0 ? undefined : v;
}
function optBool(v: boolean): boolean | undefined {
  return v ? true : undefined;
}
function optMap(v: { [k: string]: string }): Record<string, string> | undefined {
  return Object.keys(v).length === 0 ? undefined : { ...v };
}
/** Drops keys whose value is undefined, so outputs compare and serialize cleanly. */
function clean<T extends object>(o: T): T {
  for (const k of Object.keys(o) as (keyof T)[]) if (o[k] === undefined) delete o[k];
  return o;
}

// ---------- JSON → grpc ----------

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

// ---------- grpc → JSON ----------

export function processFromGrpc(p: GProcess): OciProcess {
  const u = p.User;
  return clean<OciProcess>({
    terminal: optBool(p.Terminal),
    consoleSize: p.ConsoleSize ? { height: p.ConsoleSize.Height, width: p.ConsoleSize.Width } : undefined,
    user: clean<OciUser>({
      uid: u?.UID ?? 0,
      gid: u?.GID ?? 0,
      additionalGids: optArr(u?.AdditionalGids ?? []),
      username: optStr(u?.Username ?? ''),
    }),
    args: optArr(p.Args),
    env: optArr(p.Env),
    cwd: p.Cwd,
    capabilities: p.Capabilities
      ? clean<OciCapabilities>({
          bounding: optArr(p.Capabilities.Bounding),
          effective: optArr(p.Capabilities.Effective),
          inheritable: optArr(p.Capabilities.Inheritable),
          permitted: optArr(p.Capabilities.Permitted),
          ambient: optArr(p.Capabilities.Ambient),
        })
      : undefined,
    rlimits: optArr(p.Rlimits.map((r) => ({ type: r.Type, hard: int(r.Hard), soft: int(r.Soft) }))),
    noNewPrivileges: optBool(p.NoNewPrivileges),
    apparmorProfile: optStr(p.ApparmorProfile),
    oomScoreAdj: p.OOMScoreAdj === 0n ? undefined : Number(p.OOMScoreAdj),
    selinuxLabel: optStr(p.SelinuxLabel),
  });
}

export function resourcesFromGrpc(r: GLinuxResources): OciResources {
  const throttle = (l: { Major: bigint; Minor: bigint; Rate: bigint }[]) =>
    optArr(l.map((d) => ({ major: int(d.Major), minor: int(d.Minor), rate: int(d.Rate) })));
  const b = r.BlockIO;
  return clean<OciResources>({
    devices: optArr(
      r.Devices.map((d) =>
        clean<OciDeviceCgroup>({
          allow: d.Allow,
          type: optStr(d.Type),
          major: optInt(d.Major),
          minor: optInt(d.Minor),
          access: optStr(d.Access),
        }),
      ),
    ),
    memory: r.Memory
      ? clean<OciMemory>({
          limit: optInt(r.Memory.Limit),
          reservation: optInt(r.Memory.Reservation),
          swap: optInt(r.Memory.Swap),
          kernel: optInt(r.Memory.Kernel),
          kernelTCP: optInt(r.Memory.KernelTCP),
          swappiness: optInt(r.Memory.Swappiness),
          disableOOMKiller: optBool(r.Memory.DisableOOMKiller),
        })
      : undefined,
    cpu: r.CPU
      ? clean<OciCpu>({
          shares: optInt(r.CPU.Shares),
          quota: optInt(r.CPU.Quota),
          period: optInt(r.CPU.Period),
          realtimeRuntime: optInt(r.CPU.RealtimeRuntime),
          realtimePeriod: optInt(r.CPU.RealtimePeriod),
          cpus: optStr(r.CPU.Cpus),
          mems: optStr(r.CPU.Mems),
        })
      : undefined,
    pids: r.Pids ? { limit: int(r.Pids.Limit) } : undefined,
    blockIO: b
      ? clean<OciBlockIO>({
          weight: optNum(b.Weight),
          leafWeight: optNum(b.LeafWeight),
          weightDevice: optArr(
            b.WeightDevice.map((d) =>
              clean<OciWeightDevice>({
                major: int(d.Major),
                minor: int(d.Minor),
                weight: optNum(d.Weight),
                leafWeight: optNum(d.LeafWeight),
              }),
            ),
          ),
          throttleReadBpsDevice: throttle(b.ThrottleReadBpsDevice),
          throttleWriteBpsDevice: throttle(b.ThrottleWriteBpsDevice),
          throttleReadIOPSDevice: throttle(b.ThrottleReadIOPSDevice),
          throttleWriteIOPSDevice: throttle(b.ThrottleWriteIOPSDevice),
        })
      : undefined,
    hugepageLimits: optArr(r.HugepageLimits.map((h) => ({ pageSize: h.Pagesize, limit: int(h.Limit) }))),
    network: r.Network
      ? clean<OciNetwork>({
          classID: optNum(r.Network.ClassID),
          priorities: optArr(r.Network.Priorities.map((p) => ({ name: p.Name, priority: p.Priority }))),
        })
      : undefined,
  });
}

function hookFromGrpc(h: GHook): OciHook {
  return clean<OciHook>({
    path: h.Path,
    args: optArr(h.Args),
    env: optArr(h.Env),
    timeout: h.Timeout === 0n ? undefined : Number(h.Timeout),
  });
}

function seccompFromGrpc(s: GLinuxSeccomp): OciSeccomp {
  return clean<OciSeccomp>({
    defaultAction: s.DefaultAction,
    architectures: optArr(s.Architectures),
    flags: optArr(s.Flags),
    syscalls: optArr(
      s.Syscalls.map((c) =>
        clean<OciSyscall>({
          names: c.Names,
          action: c.Action,
          errnoRet: c.ErrnoRet.case === 'errnoret' ? c.ErrnoRet.value : undefined,
          args: optArr(
            c.Args.map((a) =>
              clean<OciSeccompArg>({
                index: Number(a.Index),
                value: int(a.Value),
                valueTwo: optInt(a.ValueTwo),
                op: a.Op,
              }),
            ),
          ),
        }),
      ),
    ),
  });
}

function linuxFromGrpc(l: GLinux): OciLinux {
  const idmap = (m: GLinux['UIDMappings']) =>
    optArr(m.map((x) => ({ containerID: x.ContainerID, hostID: x.HostID, size: x.Size })));
  return clean<OciLinux>({
    uidMappings: idmap(l.UIDMappings),
    gidMappings: idmap(l.GIDMappings),
    sysctl: optMap(l.Sysctl),
    resources: l.Resources ? resourcesFromGrpc(l.Resources) : undefined,
    cgroupsPath: optStr(l.CgroupsPath),
    namespaces: optArr(l.Namespaces.map((n) => clean<OciNamespace>({ type: n.Type, path: optStr(n.Path) }))),
    devices: optArr(
      l.Devices.map((d) =>
        clean<OciDevice>({
          type: d.Type,
          path: d.Path,
          major: optInt(d.Major),
          minor: optInt(d.Minor),
          fileMode: optNum(d.FileMode),
          uid: optNum(d.UID),
          gid: optNum(d.GID),
        }),
      ),
    ),
    seccomp: l.Seccomp ? seccompFromGrpc(l.Seccomp) : undefined,
    rootfsPropagation: optStr(l.RootfsPropagation),
    maskedPaths: optArr(l.MaskedPaths),
    readonlyPaths: optArr(l.ReadonlyPaths),
    mountLabel: optStr(l.MountLabel),
    intelRdt: l.IntelRdt ? clean({ l3CacheSchema: optStr(l.IntelRdt.L3CacheSchema) }) : undefined,
  });
}

/** grpc.Spec → OCI runtime-spec JSON object (write it with stringifyOciJson). */
export function specFromGrpc(s: GSpec): OciSpec {
  const h = s.Hooks;
  return clean<OciSpec>({
    ociVersion: s.Version,
    process: s.Process ? processFromGrpc(s.Process) : undefined,
    root: s.Root ? clean<OciRoot>({ path: s.Root.Path, readonly: optBool(s.Root.Readonly) }) : undefined,
    hostname: optStr(s.Hostname),
    mounts: optArr(
      s.Mounts.map((m: GMount) =>
        clean<OciMount>({
          destination: m.destination,
          source: optStr(m.source),
          type: optStr(m.type),
          options: optArr(m.options),
        }),
      ),
    ),
    hooks: h
      ? clean<OciHooks>({
          prestart: optArr(h.Prestart.map(hookFromGrpc)),
          createRuntime: optArr(h.CreateRuntime.map(hookFromGrpc)),
          createContainer: optArr(h.CreateContainer.map(hookFromGrpc)),
          startContainer: optArr(h.StartContainer.map(hookFromGrpc)),
          poststart: optArr(h.Poststart.map(hookFromGrpc)),
          poststop: optArr(h.Poststop.map(hookFromGrpc)),
        })
      : undefined,
    annotations: optMap(s.Annotations),
    linux: s.Linux ? linuxFromGrpc(s.Linux) : undefined,
  });
}

// ---------- exact 64-bit JSON ----------

const BIG_MARK = '\u0000int64:';

/** JSON.stringify that writes bigints as plain JSON numbers (exact, unlike Number()). */
export function stringifyOciJson(value: unknown, indent?: number): string {
  const text = JSON.stringify(
    value,
    (_k, v: unknown) => (typeof v === 'bigint' ? `${BIG_MARK}${v}` : v),
    indent,
  );
  return text.replace(/"\\u0000int64:(-?\d+)"/g, '$1');
}

/**
 * JSON.parse that keeps integers beyond 2^53 exact, as bigints (memory limits such as
 * 9223372036854775807 appear in real specs). Strings are left untouched.
 */
export function parseOciJson(text: string): unknown {
  let out = '';
  let i = 0;
  let marked = false;
  while (i < text.length) {
    const c = text[i]!;
    if (c === '"') {
      let j = i + 1;
      while (j < text.length && text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      out += text.slice(i, j + 1);
      i = j + 1;
      continue;
    }
    if (c === '-' || (c >= '0' && c <= '9')) {
      let j = i + 1;
      while (j < text.length && /[0-9.eE+-]/.test(text[j]!)) j++;
      const num = text.slice(i, j);
      if (/^-?\d+$/.test(num) && !Number.isSafeInteger(Number(num))) {
        out += `"${BIG_MARK.replace('\u0000', '\\u0000')}${num}"`;
        marked = true;
      } else out += num;
      i = j;
      continue;
    }
    out += c;
    i++;
  }
  if (!marked) return JSON.parse(text);
  return JSON.parse(out, (_k, v: unknown) =>
    typeof v === 'string' && v.startsWith(BIG_MARK) ? BigInt(v.slice(BIG_MARK.length)) : v,
  );
}
