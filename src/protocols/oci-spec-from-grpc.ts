// The agent protocol's grpc.Spec (oci.proto) → OCI runtime-spec JSON: what the agent writes for crun.
// Zero scalars, empty lists and maps become absent fields (grpc.Spec cannot tell them from unset).
import type {
  Hook as GHook,
  Linux as GLinux,
  LinuxResources as GLinuxResources,
  LinuxSeccomp as GLinuxSeccomp,
  Mount as GMount,
  Process as GProcess,
  Spec as GSpec,
} from './gen/oci_pb.js';
import type {
  Int64,
  OciBlockIO,
  OciCapabilities,
  OciCpu,
  OciDevice,
  OciDeviceCgroup,
  OciHook,
  OciHooks,
  OciLinux,
  OciMemory,
  OciMount,
  OciNamespace,
  OciNetwork,
  OciProcess,
  OciResources,
  OciRoot,
  OciSeccomp,
  OciSeccompArg,
  OciSpec,
  OciSyscall,
  OciUser,
  OciWeightDevice,
} from './oci-spec-types.js';

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
