// Boot-device planning: VmConfig.devices → what the QEMU command line gets (vhost-user-fs shares, cold-plugged
// disks) and which virtiofsd daemons must run first. Checks each device against the config and the host.
import { stat } from 'node:fs/promises';
import type { QemuConfig } from '../../config/types.js';
import type { Device } from '../hypervisor.js';
import type { VirtiofsdOptions } from '../virtiofsd.js';
import { scsiAddress } from './block.js';
import { type BootBlock, type BootFsShare, type RunDirPaths, qemuId } from './cmdline.js';

export interface BootPlan {
  fsShares: BootFsShare[];
  /** One per share whose daemon we run (a share with its own socketPath has someone else's). */
  virtiofsds: VirtiofsdOptions[];
  blocks: BootBlock[];
  /** Cold-plugged disks, for the hotplug bookkeeping (ids stay unique, SCSI indexes stay taken). */
  coldBlocks: { devId: string; qemuId: string; nodeName: string; scsiIndex?: number }[];
}

export async function planBootDevices(
  q: QemuConfig,
  devices: readonly Device[],
  paths: RunDirPaths,
  allocScsiIndex: () => number,
): Promise<BootPlan> {
  const plan: BootPlan = { fsShares: [], virtiofsds: [], blocks: [], coldBlocks: [] };
  for (const dev of devices) {
    if (dev.kind === 'virtio-fs') {
      if (q.shared_fs === 'none')
        throw new Error(`device ${dev.id}: virtio-fs requested but shared_fs = "none"`);
      const st = await stat(dev.sharedDir).catch(() => undefined);
      if (!dev.socketPath && !st?.isDirectory()) {
        throw new Error(`device ${dev.id}: shared dir ${dev.sharedDir} does not exist or is not a directory`);
      }
      const socketPath = dev.socketPath ?? paths.virtiofsdSocket(plan.fsShares.length);
      plan.fsShares.push({ qemuId: qemuId('fs', dev.id), tag: dev.tag, socketPath });
      if (!dev.socketPath) {
        plan.virtiofsds.push({
          binary: q.virtio_fs_daemon,
          sharedDir: dev.sharedDir,
          socketPath,
          cache: q.virtio_fs_cache || 'auto',
          extraArgs: q.virtio_fs_extra_args,
          debug: q.enable_debug,
        });
      }
    } else if (dev.kind === 'block') {
      const st = await stat(dev.path).catch(() => undefined);
      if (!st) throw new Error(`device ${dev.id}: ${dev.path} does not exist`);
      const b: BootBlock = {
        qemuId: qemuId('blk', dev.id),
        path: dev.path,
        readOnly: dev.readOnly,
        hostDevice: st.isBlockDevice(),
        driver: dev.driver,
      };
      const cold = { devId: dev.id, qemuId: b.qemuId, nodeName: `drive-${b.qemuId}` };
      if (dev.driver === 'virtio-scsi') {
        const index = allocScsiIndex();
        b.scsi = scsiAddress(index);
        plan.coldBlocks.push({ ...cold, scsiIndex: index });
      } else {
        // Cold-plugged on the root bus: not removable (no port to free).
        plan.coldBlocks.push(cold);
      }
      plan.blocks.push(b);
    } else {
      throw new Error(`device ${dev.id}: ${dev.kind} devices are not supported yet by the QEMU driver`);
    }
  }
  return plan;
}
