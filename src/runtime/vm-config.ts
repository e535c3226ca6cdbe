import path from 'node:path';
import type { MessageInitShape } from '@bufbuild/protobuf';
import { readFileTail } from '../common/files.js';
import type { KataConfig } from '../config/types.js';
import { AGENT_KERNEL_PARAMS, SHARED_FS_TAG } from '../contract/index.js';
import type { VmConfig, VmExit } from '../hypervisor/hypervisor.js';
import type { CreateSandboxRequestSchema, StorageSchema } from '../protocols/gen/agent_pb.js';
// The VM a sandbox asks its hypervisor for (size, boot devices, agent kernel params), and how a VM that went
// away is described in errors. Pure apart from reading the guest console log.
import { sandboxShmStorage } from '../resource/volumes.js';

export const VM_RUN_ROOT = '/run/vc/vm';
const MIB = 1024 * 1024;

export interface SandboxVmInput {
  sandboxId: string;
  config: KataConfig;
  /** The virtio-fs shared dir on the host. */
  hostSharedDir: string;
  /** Memory (bytes) and CPUs the first container asks for, added with static_sandbox_resource_mgmt. */
  staticResources?: { memoryBytes: number; cpus: number };
  persistState: VmConfig['persistState'];
}

export function sandboxRunDir(sandboxId: string): string {
  return path.join(VM_RUN_ROOT, sandboxId);
}

export function sandboxVmConfig(i: SandboxVmInput): VmConfig {
  const { config } = i;
  const q = config.hypervisor;
  let memoryMiB = q.default_memory;
  let vcpus = q.default_vcpus;
  if (config.runtime.static_sandbox_resource_mgmt && i.staticResources) {
    memoryMiB += Math.ceil(i.staticResources.memoryBytes / MIB);
    vcpus += Math.ceil(i.staticResources.cpus);
  }
  const kernelParams: string[] = [];
  if (config.agent.enable_debug) kernelParams.push(`${AGENT_KERNEL_PARAMS.log}=debug`);
  if (config.agent.debug_console_enabled) kernelParams.push(AGENT_KERNEL_PARAMS.debugConsole);
  if (config.agent.container_pipe_size > 0)
    kernelParams.push(`agent.container_pipe_size=${config.agent.container_pipe_size}`);
  return {
    sandboxId: i.sandboxId,
    runDir: sandboxRunDir(i.sandboxId),
    vcpus,
    maxVcpus: Math.max(vcpus, q.default_maxvcpus || vcpus),
    memoryMiB,
    maxMemoryMiB: Math.max(memoryMiB, q.default_maxmemory || memoryMiB),
    devices: [{ kind: 'virtio-fs', id: 'kata-shared', tag: SHARED_FS_TAG, sharedDir: i.hostSharedDir }],
    kernelParams,
    persistState: i.persistState,
  };
}

/**
 * The agent's CreateSandbox: host name, the shared fs and the pod's /dev/shm (a guest tmpfs of shmBytes), kernel
 * modules from config (`name param...` lines).
 */
export function createSandboxRequest(
  config: KataConfig,
  sandboxId: string,
  hostname: string,
  sharedFs: MessageInitShape<typeof StorageSchema>,
  shmBytes: number,
): MessageInitShape<typeof CreateSandboxRequestSchema> {
  return {
    hostname,
    storages: [sharedFs, sandboxShmStorage(shmBytes)],
    sandboxId,
    sandboxPidns: false,
    guestHookPath: config.hypervisor.guest_hook_path,
    kernelModules: config.agent.kernel_modules.map((line) => {
      const [name = '', ...parameters] = line.trim().split(/\s+/);
      return { name, parameters };
    }),
  };
}

/** The last lines the guest kernel printed (<run dir>/console.log), for errors about a guest that died. */
/** Enough for a kernel panic's cause and call trace. */
const CONSOLE_TAIL_BYTES = 8 * 1024;

export async function guestConsoleTail(runDir: string, lines = 6): Promise<string> {
  try {
    // Only the end: a long-running guest's console can be large, and the lines shown are the last ones.
    const { text, truncated } = await readFileTail(path.join(runDir, 'console.log'), CONSOLE_TAIL_BYTES);
    const all = text
      .split('\n')
      .slice(truncated ? 1 : 0) // the first line is likely cut
      .map((l) => l.trimEnd())
      .filter(Boolean);
    // A panic's cause is above its stack trace: show it first.
    const panic = all.filter((l) => /Kernel panic|not syncing/.test(l)).slice(-1);
    const tail = [...panic, ...all.slice(-lines).filter((l) => !panic.includes(l))];
    return tail.length ? `; guest console: ${tail.join(' | ')}` : '';
  } catch {
    return '';
  }
}

export function describeVmExit(exit: VmExit): string {
  const tail = exit.stderrTail.trim().split('\n').slice(-3).join(' | ');
  return tail ? `${exit.reason}: ${tail}` : exit.reason;
}
