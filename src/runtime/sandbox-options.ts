// What a sandbox is made from (options from the runtime, the events it reports) and what a container create
// carries; the types Sandbox and Runtime share.
import type { Logger } from '../common/log.js';
import type { KataConfig } from '../config/types.js';
import type { RootfsMount, RuntimeDeps } from './deps.js';
import type { StdioPaths } from './io.js';
import type { OciSpec } from './oci.js';
import type { ContainerProcess, ExitInfo } from './process.js';

export type SandboxStatus = 'starting' | 'running' | 'stopping' | 'stopped';

export interface SandboxEvents {
  exit(p: ContainerProcess, e: ExitInfo): void;
  oom(containerId: string): void;
}

export interface SandboxOptions {
  id: string;
  namespace: string;
  /** The bundle of the container that created the sandbox (persisted for cleanup). */
  bundle: string;
  hostname: string;
  config: KataConfig;
  /** The configuration file it was loaded from (containerd's ConfigPath; undefined: Kata's lookup order). */
  configPath?: string;
  deps: RuntimeDeps;
  log: Logger;
  events: SandboxEvents;
  /** Memory (bytes) and CPUs the first container asks for, added to the VM with static_sandbox_resource_mgmt. */
  staticResources?: { memoryBytes: number; cpus: number };
  /** The pod's network namespace from the OCI spec; without it the VM has loopback only (a fresh netns). */
  netnsPath?: string;
  /** The pod's /dev/shm size (bytes); default DEFAULT_SHM_BYTES. */
  shmBytes?: number;
  /** The sandbox spec's linux.cgroupsPath: where the VMM's host cgroup goes (default kata_<sid>). */
  cgroupsPath?: string;
}

export interface CreateContainerRequest {
  id: string;
  bundle: string;
  spec: OciSpec;
  rootfs: RootfsMount[];
  stdio: StdioPaths;
}
