// The VM's size at boot and its hotplug ceilings, from the sandbox's VmConfig (pure: unit-tested).
import os from 'node:os';
import type { VmConfig } from '../hypervisor.js';

/** q35 accepts at most 288 vCPUs; Kata caps lower. */
export const MAX_VCPUS = 240;
const MIB = 1024 * 1024;

export interface VmSize {
  maxVcpus: number;
  maxMemoryMiB: number;
}

export function vmSize(
  cfg: Pick<VmConfig, 'vcpus' | 'memoryMiB' | 'maxVcpus' | 'maxMemoryMiB'>,
  host = { cpus: os.cpus().length, memoryBytes: os.totalmem() },
): VmSize {
  if (!Number.isInteger(cfg.vcpus) || cfg.vcpus < 1) throw new Error(`vcpus must be >= 1, got ${cfg.vcpus}`);
  if (!Number.isInteger(cfg.memoryMiB) || cfg.memoryMiB < 64)
    throw new Error(`memoryMiB must be an integer >= 64, got ${cfg.memoryMiB}`);
  // Kata: 0 means "as many as the host has".
  const maxVcpus = Math.min(Math.max(cfg.maxVcpus > 0 ? cfg.maxVcpus : host.cpus, cfg.vcpus), MAX_VCPUS);
  const maxMemoryMiB = Math.max(
    cfg.maxMemoryMiB > 0 ? cfg.maxMemoryMiB : Math.floor(host.memoryBytes / MIB),
    cfg.memoryMiB,
  );
  return { maxVcpus, maxMemoryMiB };
}
