// Entry point of the hypervisor layer: pick the driver named by the config.
import type { Logger } from '../common/log.js';
import { logger } from '../common/log.js';
import type { KataConfig } from '../config/types.js';
import type { Hypervisor, VmState } from './hypervisor.js';
import { type QemuDriverOptions, QemuHypervisor } from './qemu/qemu.js';
import { type CleanupDeadVmOptions, cleanupDeadVm as cleanupDeadVmFromState } from './stale.js';

export type * from './hypervisor.js';
export { type AccelProbeResult, probeAccelerator, resolveAccelerator } from './accel.js';
export { QemuHypervisor, type QemuDriverOptions } from './qemu/qemu.js';
export { QmpClient, QmpError, QmpConnectionError } from './qemu/qmp.js';
export { stopFromState } from './stale.js';
export {
  type TemplateMeta,
  destroyTemplateFiles,
  readTemplateMeta,
  templateFiles,
} from './qemu/template.js';
export {
  type SlotState,
  destroySlot,
  listSlots,
  lockFilling,
  newSlot,
  stopFiller,
  sweepDoomed,
  vmCacheDir,
} from './qemu/vm-cache.js';
export { type QemuCheck, checkQemuConfig } from './qemu/config-check.js';
export {
  type ProcessIdentity,
  type TerminateOptions,
  isAlive,
  processIdentity,
  terminateProcess,
} from './proc.js';
export { AGENT_VSOCK_PORT, chooseAgentChannel, hostHasVhostVsock } from './vsock.js';
export { VHOST_NET_DEVICE, vhostNetAvailable } from './vhost-net.js';

/** A fresh, unprepared hypervisor for one sandbox. */
export function createHypervisor(config: KataConfig, log?: Logger, opts?: QemuDriverOptions): Hypervisor {
  switch (config.hypervisorName) {
    case 'qemu':
      return new QemuHypervisor(config, log ?? logger('hypervisor'), opts);
    default:
      throw new Error(`hypervisor ${String(config.hypervisorName)} is not supported (only qemu)`);
  }
}

/**
 * Undoes what a dead VM left on the host (processes, run dir, vsock CID) from its persisted state, without the
 * driver object that started it.
 */
export function cleanupDeadVm(state: VmState, log: Logger, opts?: CleanupDeadVmOptions): Promise<void> {
  switch (state.hypervisor) {
    case 'qemu':
      return cleanupDeadVmFromState(state, log, opts);
    default:
      return Promise.reject(
        new Error(
          `cleaning up sandbox ${state.sandboxId}: unknown hypervisor ${JSON.stringify(state.hypervisor)}`,
        ),
      );
  }
}
