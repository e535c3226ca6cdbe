// Kata's dynamic sandbox sizing (static_sandbox_resource_mgmt = false, runtime-rs's cpu/mem resource manager):
// the VM keeps default_vcpus / default_memory plus what its containers' limits add up to. Every container
// create, update and delete resizes it: vCPUs both ways (hot-added ones only), memory up only (pc-dimms are not
// taken back from a running guest); the agent then onlines what was added.
import type { Logger } from '../common/log.js';
import type { KataConfig } from '../config/types.js';
import type { Hypervisor } from '../hypervisor/hypervisor.js';
import type { AgentClient } from './agent.js';
import { errorMessage } from './errors.js';
import type { OciResources } from './oci.js';

const MIB = 1024 * 1024;
/** The guest onlining hot-added vCPUs and memory (slow under TCG). */
const RESIZE_TIMEOUT_MS = 30_000;

export interface ContainerLimits {
  /** CFS quota / period; 0: no CPU limit. */
  cpus: number;
  /** memory.limit in bytes; 0: none. */
  memoryBytes: number;
}

export function containerLimits(r: OciResources | undefined): ContainerLimits {
  const quota = Number(r?.cpu?.quota ?? 0);
  const period = Number(r?.cpu?.period ?? 0);
  const limit = Number(r?.memory?.limit ?? 0);
  return { cpus: quota > 0 && period > 0 ? quota / period : 0, memoryBytes: limit > 0 ? limit : 0 };
}

/** The VM size for these containers: the base plus the sum of their limits, each total rounded up. */
export function sandboxSize(
  base: { vcpus: number; memoryMiB: number },
  limits: Iterable<ContainerLimits>,
): { vcpus: number; memoryMiB: number } {
  let cpus = 0;
  let bytes = 0;
  for (const l of limits) {
    cpus += l.cpus;
    bytes += l.memoryBytes;
  }
  return { vcpus: base.vcpus + Math.ceil(cpus), memoryMiB: base.memoryMiB + Math.ceil(bytes / MIB) };
}

export interface SizerOptions {
  hv: Pick<Hypervisor, 'resizeVcpus' | 'resizeMemory'>;
  agent: () => Pick<AgentClient, 'onlineCPUMem'>;
  base: { vcpus: number; memoryMiB: number };
  timeoutMs: number;
  log: Logger;
}

export class SandboxSizer {
  private readonly limits = new Map<string, ContainerLimits>();
  private memoryMiB: number;
  /** Resizes run one at a time: two creates must not both add the same vCPU slot. */
  private queue: Promise<void> = Promise.resolve();

  /** The sizer of a sandbox whose config asks for dynamic sizing; undefined with static_sandbox_resource_mgmt. */
  static forSandbox(
    config: KataConfig,
    hv: SizerOptions['hv'],
    agent: SizerOptions['agent'],
    vm: { vcpus: number; memoryMiB: number },
    log: Logger,
  ): SandboxSizer | undefined {
    if (config.runtime.static_sandbox_resource_mgmt) return undefined;
    const base = { vcpus: vm.vcpus, memoryMiB: vm.memoryMiB };
    return new SandboxSizer({ hv, agent, base, timeoutMs: RESIZE_TIMEOUT_MS, log });
  }

  constructor(private readonly o: SizerOptions) {
    this.memoryMiB = o.base.memoryMiB;
  }

  /** Sets (or, with undefined, drops) a container's limits and resizes the VM to match. */
  resize(containerId: string, resources: OciResources | undefined): Promise<void> {
    if (resources === undefined) this.limits.delete(containerId);
    else this.limits.set(containerId, containerLimits(resources));
    const run = this.queue.then(() => this.apply(containerId));
    this.queue = run.catch(() => {});
    return run;
  }

  private async apply(containerId: string): Promise<void> {
    const want = sandboxSize(this.o.base, this.limits.values());
    const what = `resizing the VM to ${want.vcpus} vCPUs and ${want.memoryMiB} MiB for container ${containerId}`;
    try {
      const cpu = await this.o.hv.resizeVcpus(want.vcpus);
      const memoryMiB = await this.o.hv.resizeMemory(want.memoryMiB);
      const addedCpus = Math.max(cpu.new - cpu.old, 0);
      const memoryGrew = memoryMiB > this.memoryMiB;
      this.memoryMiB = memoryMiB;
      if (addedCpus > 0 || memoryGrew) {
        await this.o
          .agent()
          .onlineCPUMem(
            { wait: true, nbCpus: addedCpus, cpuOnly: !memoryGrew },
            { timeoutMs: this.o.timeoutMs },
          );
      }
      this.o.log.info(
        { container_id: containerId, vcpus: cpu.new, memory_mib: memoryMiB, wanted: want },
        'sandbox resized',
      );
    } catch (e) {
      throw new Error(`${what}: ${errorMessage(e)}`, { cause: e });
    }
  }
}
