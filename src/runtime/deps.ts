// What the runtime needs from the layers below it, as narrow interfaces: the real wiring is in wiring.ts,
// tests pass fakes (no VM, an in-process agent).
import type { MessageInitShape } from '@bufbuild/protobuf';
import type { Logger } from '../common/log.js';
import type { KataConfig } from '../config/types.js';
import type { AgentEndpoint, Hypervisor } from '../hypervisor/hypervisor.js';
import type { SandboxState } from '../persist/index.js';
import type { StorageSchema } from '../protocols/gen/agent_pb.js';
import type { AgentConnection } from './agent.js';
import type { OciSpec } from './oci.js';

/** containerd's rootfs Mount (CreateTaskRequest.rootfs). */
export interface RootfsMount {
  type: string;
  source: string;
  target?: string;
  options: string[];
}

export interface PreparedContainer {
  guestSpec: OciSpec;
  storages: MessageInitShape<typeof StorageSchema>[];
}

/** The sandbox's virtio-fs share and what is mounted into it. */
export interface SharedFsHandle {
  readonly hostSharedDir: string;
  setup(): Promise<void>;
  guestStorage(): MessageInitShape<typeof StorageSchema>;
  prepareContainer(
    containerId: string,
    opts: { bundle: string; rootfs: RootfsMount[]; spec: OciSpec; readonlyRootfs?: boolean },
  ): Promise<PreparedContainer>;
  releaseContainer(containerId: string, opts: { bundle: string; rootfsMounted: boolean }): Promise<void>;
  cleanup(): Promise<void>;
}

/** The persisted state plus what `shim delete` needs to find a dead shim's leftovers. */
export type PersistedSandbox = SandboxState & {
  shimPid?: number;
  /** Hypervisor.saveState() once the VM runs (agent endpoint, vsock CID, accelerator). */
  vm?: import('../hypervisor/hypervisor.js').VmState;
};

/** The host cgroup holding the sandbox's VMM processes (Kata's sandbox_cgroup_only). */
export interface SandboxCgroupHandle {
  create(): Promise<void>;
  addProcess(pid: number): Promise<void>;
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
  /** Optional: without it the VMM stays in the shim's cgroup. */
  sandboxCgroup?(sandboxId: string): SandboxCgroupHandle;
  saveState(state: PersistedSandbox): Promise<void>;
  removeState(sandboxId: string): Promise<void>;
}
