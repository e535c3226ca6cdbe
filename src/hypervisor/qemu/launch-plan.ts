// Everything decided before a QEMU VM starts, from its VmConfig: boot devices (boot-plan.ts), the guest image's
// kernel params, whether it is a template or a clone (template-use.ts), and the command line; the hotplug
// bookkeeping learns the VM's shape here.
import type { Logger } from '../../common/log.js';
import type { QemuConfig } from '../../config/types.js';
import { readGuestManifest } from '../guest-manifest.js';
import type { AgentEndpoint, VmConfig } from '../hypervisor.js';
import type { VirtiofsdOptions } from '../virtiofsd.js';
import { planBootDevices } from './boot-plan.js';
import { type QemuCommandLine, type QemuLaunchSpec, buildQemuCmdline, runDirPaths } from './cmdline.js';
import type { QemuHotplug } from './hotplug.js';
import { type TemplateUse, planTemplateUse } from './template-use.js';

export interface LaunchInput {
  q: QemuConfig;
  cfg: VmConfig;
  accel: 'kvm' | 'tcg';
  agent: AgentEndpoint;
  maxVcpus: number;
  maxMemoryMiB: number;
  hotplugPorts: number;
  hotplug: QemuHotplug;
  log: Logger;
}

export interface LaunchPlan {
  cmd: QemuCommandLine;
  /** The virtiofsd daemons to run before QEMU. */
  virtiofsds: VirtiofsdOptions[];
  sharesFs: boolean;
  templateUse?: TemplateUse;
}

export async function planLaunch(i: LaunchInput): Promise<LaunchPlan> {
  const { q, cfg, hotplug } = i;
  const plan = await planBootDevices(q, cfg.devices, runDirPaths(cfg.runDir), () => hotplug.allocScsiIndex());
  for (const b of plan.coldBlocks) hotplug.registerColdBlock(b.devId, b);
  const sharesFs = plan.fsShares.length > 0;
  if (q.virtio_fs_cache_size > 0 && sharesFs) {
    i.log.warn(
      { virtio_fs_cache_size: q.virtio_fs_cache_size },
      'virtio-fs DAX window is not supported by this QEMU; ignored',
    );
  }
  const manifest = await readGuestManifest(q.kernel);
  let spec: QemuLaunchSpec = {
    sandboxId: cfg.sandboxId,
    runDir: cfg.runDir,
    qemu: q,
    accel: i.accel,
    vcpus: cfg.vcpus,
    maxVcpus: i.maxVcpus,
    memoryMiB: cfg.memoryMiB,
    maxMemoryMiB: i.maxMemoryMiB,
    agent: i.agent.kind === 'vsock' ? { kind: 'vsock', cid: i.agent.cid } : i.agent,
    fsShares: plan.fsShares,
    blocks: plan.blocks,
    guestKernelParams: manifest?.kernelParams ?? [],
    rootfsType: manifest?.rootfsType ?? (q.rootfs_type || undefined),
    extraKernelParams: cfg.kernelParams ?? [],
    hotplugPorts: i.hotplugPorts,
  };
  let templateUse: TemplateUse | undefined;
  if (cfg.template) ({ spec, use: templateUse } = await planTemplateUse(cfg.template, spec, i.log));
  const cmd = buildQemuCmdline(spec);
  hotplug.setShape({
    sandboxId: cfg.sandboxId,
    hotplugPortIds: cmd.hotplugPortIds,
    hasScsiController: cmd.args.some((a) => a.startsWith('virtio-scsi-pci,')),
    memoryMiB: cfg.memoryMiB,
    maxMemoryMiB: i.maxMemoryMiB,
    maxVcpus: i.maxVcpus,
    sharesFs,
  });
  return { cmd, virtiofsds: plan.virtiofsds, sharesFs, templateUse };
}
