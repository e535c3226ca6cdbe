// Entry point of the hypervisor layer: pick the driver named by the config.
import type { Logger } from '../common/log.js';
import { logger } from '../common/log.js';
import type { KataConfig } from '../config/types.js';
import type { Hypervisor } from './hypervisor.js';
import { type QemuDriverOptions, QemuHypervisor } from './qemu/qemu.js';

export type * from './hypervisor.js';
export { type AccelProbeResult, probeAccelerator, resolveAccelerator } from './accel.js';
export { QemuHypervisor, type QemuDriverOptions } from './qemu/qemu.js';
export { QmpClient, QmpError, QmpConnectionError } from './qemu/qmp.js';
export { stopFromState } from './stale.js';
export { AGENT_VSOCK_PORT, chooseAgentChannel, hostHasVhostVsock } from './vsock.js';

/** A fresh, unprepared hypervisor for one sandbox. */
export function createHypervisor(config: KataConfig, log?: Logger, opts?: QemuDriverOptions): Hypervisor {
  switch (config.hypervisorName) {
    case 'qemu':
      return new QemuHypervisor(config, log ?? logger('hypervisor'), opts);
    default:
      throw new Error(`hypervisor ${String(config.hypervisorName)} is not supported (only qemu)`);
  }
}
