// The OCI runtime-spec (config.json) as JSON, the one shape host, agent and image code use for a spec: containerd
// writes it, the shim reads it, resource/guest-spec.ts rewrites it for the guest, it crosses as grpc.Spec
// (oci-spec-to-grpc.ts / oci-spec-from-grpc.ts) and the agent writes it back for crun.
// Typed are the fields grpc.Spec can carry; a spec read from disk may hold more (they pass through untyped and
// are dropped at the grpc boundary). Fields the runtime-spec calls REQUIRED but producers omit (ociVersion in a
// minimal spec, user and cwd in an exec process) are optional here: grpc.Spec maps absent to zero anyway, and the
// agent defaults cwd to /.

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
  user?: OciUser;
  args?: string[];
  env?: string[];
  cwd?: string;
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
  ociVersion?: string;
  process?: OciProcess;
  root?: OciRoot;
  hostname?: string;
  mounts?: OciMount[];
  hooks?: OciHooks;
  annotations?: Record<string, string>;
  linux?: OciLinux;
}
