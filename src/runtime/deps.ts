// What the runtime needs from the layers below it, as narrow interfaces: the real wiring is in wiring.ts,
// tests pass fakes (no VM, an in-process agent).
import type { MessageInitShape } from '@bufbuild/protobuf';
import type { Logger } from '../common/log.js';
import type { KataConfig } from '../config/types.js';
import type { AgentEndpoint, Hypervisor, VmState } from '../hypervisor/hypervisor.js';
import type { ProcessIdentity, TerminateOptions } from '../hypervisor/proc.js';
import type { SandboxState } from '../persist/index.js';
import type { StorageSchema } from '../protocols/gen/agent_pb.js';
import type { NetworkRecord } from '../resource/network/index.js';
import type { OciSpec, PrepareContainerOptions, PreparedContainer, RootfsMount } from '../resource/types.js';
import type { AgentConnection } from './agent.js';
import type { NetworkDeps } from './sandbox-network.js';

export type { PreparedContainer, RootfsMount };

/** The sandbox's virtio-fs share and what is mounted into it. */
export interface SharedFsHandle {
  readonly hostSharedDir: string;
  setup(): Promise<void>;
  guestStorage(): MessageInitShape<typeof StorageSchema>;
  prepareContainer(containerId: string, opts: PrepareContainerOptions): Promise<PreparedContainer>;
  releaseContainer(containerId: string, opts: { bundle: string; rootfsMounted: boolean }): Promise<void>;
  cleanup(): Promise<void>;
}

/** The persisted state plus what `shim delete` needs to find a dead shim's leftovers. */
export type PersistedSandbox = SandboxState & {
  /** The shim serving the sandbox (pid + start time: a recycled pid is never killed). */
  shim?: ProcessIdentity;
  /** The VM's host footprint, persisted by the hypervisor before each part of it is created. */
  vm?: VmState;
  /** Taps, filters and qdiscs made in the pod netns, recorded before each is made. */
  network?: NetworkRecord;
  /** The sandbox's host cgroup when not the default kata_<sid> (the spec's cgroupsPath), recorded before it is made. */
  cgroupPath?: string;
};

/** Host processes by identity (pid + start time), never by command line. */
export interface ProcessControl {
  /** The live process with this pid (undefined: none, or a zombie). */
  identify(pid: number): Promise<ProcessIdentity | undefined>;
  /** Stops the process if it is still `id`; true when it was alive. */
  terminate(id: ProcessIdentity, opts: TerminateOptions): Promise<boolean>;
}

/** The host cgroup holding the sandbox's VMM processes (Kata's sandbox_cgroup_only). */
export interface SandboxCgroupHandle {
  create(): Promise<void>;
  addProcess(pid: number): Promise<void>;
  /** Pids inside (empty when the cgroup does not exist). */
  pids(): Promise<number[]>;
  /** Kills what is left inside and removes the cgroup; idempotent. */
  remove(): Promise<void>;
}

export interface RuntimeDeps {
  loadConfig(opts: { configPath?: string; annotations: Record<string, string> }): KataConfig;
  createHypervisor(config: KataConfig, log: Logger): Hypervisor;
  sharedFs(sandboxId: string): SharedFsHandle;
  connectAgent(
    endpoint: AgentEndpoint,
    opts: { timeoutMs: number; log: Logger; signal?: AbortSignal },
  ): Promise<AgentConnection>;
  /** Optional: without it the VMM stays in the shim's cgroup. `path`: the sandbox spec's cgroupsPath. */
  sandboxCgroup?(sandboxId: string, path?: string): SandboxCgroupHandle;
  saveState(state: PersistedSandbox): Promise<void>;
  removeState(sandboxId: string): Promise<void>;
  /** Optional: without it the persisted state names no shim process. */
  processes?: ProcessControl;
  /** Optional: without it a spec naming a network namespace is refused. */
  network?: NetworkDeps;
  /**
   * Starts replacing a VM a sandbox took from the VM cache, detached (`kata-ctl factory fill`), and returns at
   * once (optional: without it the cache empties).
   */
  refillVmCache?(config: KataConfig, configPath: string | undefined, log: Logger): void;
  /** The pod's /dev/shm size from the sandbox spec (optional: without it, DEFAULT_SHM_BYTES). */
  podShmBytes?(spec: OciSpec): Promise<number>;
}

/** What crash cleanup (`shim delete`) needs: the same seams as the runtime, plus reading state back. */
export interface CleanupDeps {
  loadState(sandboxId: string): Promise<PersistedSandbox | undefined>;
  removeState(sandboxId: string): Promise<void>;
  sharedFs(sandboxId: string): Pick<SharedFsHandle, 'cleanup'>;
  sandboxCgroup?(sandboxId: string, path?: string): SandboxCgroupHandle;
  /** The hypervisor's "undo a dead VM from its persisted state" (kill its processes, free CID, run dir). */
  cleanupDeadVm(state: VmState, log: Logger): Promise<void>;
  processes: ProcessControl;
  /** Removes the network leftovers a record names; without it they are reported, not removed. */
  cleanupNetwork?(record: NetworkRecord): Promise<void>;
}
