// The CRI v1 messages the tests use, in @grpc/proto-loader's object form (camelCase fields, int64 as decimal
// strings on output, enums as their names, bytes as Buffers). Only the fields the tests touch are listed; the
// field names follow protos/cri/api.proto.

/** int64 in requests: a number or a decimal string; in responses always a string (see loader options). */
export type Int64 = number | string;

export interface KeyValue {
  key: string;
  /** `bytes` in current cri-api (containerd 1.6 still says `string`: the wire format is the same). */
  value: Buffer;
}

export interface PodSandboxMetadata {
  name: string;
  uid: string;
  namespace: string;
  attempt?: number;
}

export type NamespaceMode = 'POD' | 'CONTAINER' | 'NODE' | 'TARGET';

export interface NamespaceOption {
  network?: NamespaceMode;
  pid?: NamespaceMode;
  ipc?: NamespaceMode;
}

export interface LinuxSandboxSecurityContext {
  namespaceOptions?: NamespaceOption;
  readonlyRootfs?: boolean;
  runAsUser?: { value: Int64 };
  privileged?: boolean;
}

export interface PodSandboxConfig {
  metadata: PodSandboxMetadata;
  hostname?: string;
  logDirectory?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  linux?: {
    cgroupParent?: string;
    securityContext?: LinuxSandboxSecurityContext;
    sysctls?: Record<string, string>;
  };
}

export type PodSandboxState = 'SANDBOX_READY' | 'SANDBOX_NOTREADY';

export interface PodSandboxStatus {
  id: string;
  metadata: PodSandboxMetadata;
  state: PodSandboxState;
  createdAt: string;
  network: { ip: string; additionalIps: { ip: string }[] } | null;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  runtimeHandler: string;
}

export interface PodSandboxStatusResponse {
  status: PodSandboxStatus;
  /** Verbose only: runtime-specific JSON (containerd: key "info"). */
  info: Record<string, string>;
}

export interface PodSandbox {
  id: string;
  metadata: PodSandboxMetadata;
  state: PodSandboxState;
  createdAt: string;
  runtimeHandler: string;
}

export interface Mount {
  containerPath: string;
  hostPath: string;
  readonly?: boolean;
}

export interface LinuxContainerSecurityContext {
  namespaceOptions?: NamespaceOption;
  readonlyRootfs?: boolean;
  runAsUser?: { value: Int64 };
  runAsGroup?: { value: Int64 };
  supplementalGroups?: Int64[];
  /** Capability names without the CAP_ prefix ("ALL" in drop for every one), as kubelet sends them. */
  capabilities?: { addCapabilities?: string[]; dropCapabilities?: string[] };
  noNewPrivs?: boolean;
  privileged?: boolean;
  /** Localhost: localhostRef is the absolute path of a profile on the node, which containerd reads. */
  seccomp?: { profileType: 'RuntimeDefault' | 'Unconfined' | 'Localhost'; localhostRef?: string };
}

export interface ContainerConfig {
  metadata: { name: string; attempt?: number };
  image: { image: string };
  command?: string[];
  args?: string[];
  workingDir?: string;
  envs?: KeyValue[];
  mounts?: Mount[];
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  /** Relative to the sandbox's log_directory. */
  logPath?: string;
  stdin?: boolean;
  tty?: boolean;
  linux?: { securityContext?: LinuxContainerSecurityContext; resources?: LinuxContainerResources };
}

/** CRI's LinuxContainerResources (the part tests set). */
export interface LinuxContainerResources {
  cpuPeriod?: Int64;
  cpuQuota?: Int64;
  memoryLimitInBytes?: Int64;
}

export type ContainerState =
  | 'CONTAINER_CREATED'
  | 'CONTAINER_RUNNING'
  | 'CONTAINER_EXITED'
  | 'CONTAINER_UNKNOWN';

export interface ContainerStatus {
  id: string;
  metadata: { name: string; attempt: number };
  state: ContainerState;
  /** Nanoseconds since the epoch (0 when not yet). */
  createdAt: string;
  startedAt: string;
  finishedAt: string;
  exitCode: number;
  image: { image: string } | null;
  imageRef: string;
  reason: string;
  message: string;
  logPath: string;
}

export interface ContainerStatusResponse {
  status: ContainerStatus;
  info: Record<string, string>;
}

export interface Container {
  id: string;
  podSandboxId: string;
  metadata: { name: string; attempt: number };
  state: ContainerState;
  createdAt: string;
}

export interface ExecSyncResponse {
  stdout: Buffer;
  stderr: Buffer;
  exitCode: number;
}

export interface VersionResponse {
  version: string;
  runtimeName: string;
  runtimeVersion: string;
  runtimeApiVersion: string;
}

export interface Image {
  id: string;
  repoTags: string[];
  repoDigests: string[];
  size: string;
}

/** A UInt64Value (int64s arrive as decimal strings). */
export interface UInt64Value {
  value: string;
}

export interface ContainerStats {
  attributes: { id: string; metadata: { name: string } } | null;
  cpu: { usageCoreNanoSeconds: UInt64Value | null } | null;
  memory: { workingSetBytes: UInt64Value | null } | null;
}

export interface NetworkInterfaceUsage {
  name: string;
  rxBytes: UInt64Value | null;
  txBytes: UInt64Value | null;
}

export interface PodSandboxStats {
  attributes: { id: string } | null;
  linux: {
    cpu: { usageCoreNanoSeconds: UInt64Value | null } | null;
    memory: { workingSetBytes: UInt64Value | null } | null;
    network: { defaultInterface: NetworkInterfaceUsage | null; interfaces: NetworkInterfaceUsage[] } | null;
    containers: ContainerStats[];
  } | null;
}
