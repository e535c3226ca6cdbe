// Whether and how one VM uses a template (template.ts): as the template itself, as a clone, or not at all
// (booted as usual, with the reason logged). A clone's shares come back by hotplug once it runs.
import path from 'node:path';
import type { Logger } from '../../common/log.js';
import type { NicSink, NicSpec, VmConfig } from '../hypervisor.js';
import type { BootFsShare, QemuLaunchSpec } from './cmdline.js';
import type { QemuHotplug } from './hotplug.js';
import { type ColdPlugNics, type FdSender, closeNicFds } from './netdev.js';
import type { QmpClient } from './qmp.js';
import {
  type TemplateFiles,
  type TemplateMeta,
  copyTemplateRam,
  createTemplateRam,
  readTemplateMeta,
  restoreTemplateState,
  saveTemplateState,
  templateFiles,
  templateInputs,
  templateMismatch,
} from './template.js';

export interface TemplateUse {
  role: 'template' | 'clone';
  files: TemplateFiles;
  /** What the template is made from (role template: saved in its meta). */
  inputs: Record<string, string>;
  /** The template a clone restores (role clone). */
  meta?: TemplateMeta;
  /** The clone's own copy of the template's RAM, in its run dir (role clone). */
  ram?: string;
  /** virtio-fs shares the clone gets by hotplug after the restore. */
  fsShares: BootFsShare[];
  /** NICs planned before the clone started, hotplugged once it runs; their fds are ours until then. */
  nics: NicSpec[];
}

/** Why a VM cannot be a template or a clone regardless of the template's state; undefined when it can. */
function shapeProblem(spec: QemuLaunchSpec): string | undefined {
  if (spec.agent.kind !== 'virtio-serial')
    return 'templating needs the virtio-serial agent channel (a vsock guest CID cannot change on restore)';
  if (spec.blocks.length > 0) return 'the VM has disks on its command line (templated VMs have none)';
  if (spec.qemu.file_mem_backend !== '')
    return 'file_mem_backend is set (templated VMs use the template RAM)';
  return undefined;
}

/**
 * The launch spec this VM uses and its template role. A template is made here (its RAM file created); a clone
 * whose template is missing, stale or of another shape falls back to a plain boot (undefined use), logged.
 */
export async function planTemplateUse(
  req: NonNullable<VmConfig['template']>,
  spec: QemuLaunchSpec,
  log: Logger,
): Promise<{ spec: QemuLaunchSpec; use?: TemplateUse }> {
  const files = templateFiles(req.dir);
  const problem = shapeProblem(spec);
  if (req.role === 'template') {
    if (problem) throw new Error(`this VM cannot be a template: ${problem}`);
    if (spec.fsShares.length > 0) throw new Error('a template VM has no virtio-fs share (clones get theirs)');
    await createTemplateRam(files, spec.memoryMiB);
    const inputs = await templateInputs(spec);
    return {
      spec: { ...spec, templateRam: files.memory },
      use: { role: 'template', files, inputs, fsShares: [], nics: [] },
    };
  }
  const boot = (why: string) => {
    log.warn({ template: req.dir, reason: why }, `VM template not used: ${why}; booting the VM`);
    return { spec };
  };
  if (problem) return boot(problem);
  let meta: TemplateMeta | undefined;
  try {
    meta = await readTemplateMeta(req.dir);
  } catch (e) {
    return boot((e as Error).message);
  }
  if (!meta) return boot(`there is no template at ${req.dir} (kata-ctl factory init makes one)`);
  const inputs = await templateInputs(spec);
  const mismatch = templateMismatch(meta, inputs, { vcpus: spec.vcpus, memoryMiB: spec.memoryMiB });
  if (mismatch) return boot(mismatch);
  const ram = path.join(spec.runDir, 'memory');
  return {
    spec: { ...spec, fsShares: [], templateRam: ram, incoming: true },
    use: { role: 'clone', files, inputs, meta, ram, fsShares: spec.fsShares, nics: [] },
  };
}

/** Before a clone's QEMU starts: its RAM copy, and its NICs taken off the command line (hotplugged later). */
export async function beforeCloneSpawn(
  use: TemplateUse,
  coldNics: ColdPlugNics,
  deadline: number,
): Promise<void> {
  if (use.ram) await copyTemplateRam(use.files, use.ram, Math.max(deadline - Date.now(), 1));
  use.nics.push(...coldNics.take());
}

/** After a clone's QEMU is up on QMP: load the template's state; QEMU runs the guest once it is loaded. */
export async function restoreClone(
  use: TemplateUse,
  qmp: QmpClient,
  sendFds: FdSender,
  deadline: number,
): Promise<void> {
  await restoreTemplateState(qmp, sendFds, use.files, Math.max(deadline - Date.now(), 1));
}

/** Once the clone runs: its virtio-fs shares and NICs, by hotplug (the sink owns each NIC's fds once given). */
export async function plugIntoClone(
  use: TemplateUse,
  o: { qmp: QmpClient; hotplug: QemuHotplug; sink: NicSink },
): Promise<void> {
  for (const fs of use.fsShares) await o.hotplug.addFsShare(o.qmp, fs);
  for (let nic = use.nics.shift(); nic; nic = use.nics.shift()) await o.sink.attachNic(nic);
}

/** Closes the fds of NICs a clone never got (it failed to start). */
export function releaseCloneNics(use: TemplateUse | undefined): void {
  if (use) closeNicFds(use.nics.splice(0));
}

/** Saves a running VM prepared as a template (pause, device state, meta); the VM stays paused. */
export async function saveAsTemplate(
  use: TemplateUse | undefined,
  vm: { vcpus: number; memoryMiB: number },
  qmp: QmpClient,
  sendFds: FdSender,
  timeoutMs: number,
): Promise<void> {
  if (use?.role !== 'template') throw new Error('saveTemplate: this VM was not prepared as a template');
  const meta = { inputs: use.inputs, vcpus: vm.vcpus, memoryMiB: vm.memoryMiB };
  await saveTemplateState(qmp, sendFds, use.files, meta, timeoutMs);
}
