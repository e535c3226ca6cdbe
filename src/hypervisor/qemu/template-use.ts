// Whether and how one VM uses a template (template.ts): as the template itself, as a clone, or not at all
// (booted as usual, with the reason logged). A clone's shares come back by hotplug once it runs.
import { open } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../../common/log.js';
import type { NicSink, NicSpec, VmConfig } from '../hypervisor.js';
import type { ProcessIdentity } from '../proc.js';
import type { SupervisedChild } from '../supervisor.js';
import type { BootFsShare, QemuLaunchSpec } from './cmdline.js';
import type { QemuHotplug } from './hotplug.js';
import { type ColdPlugNics, type FdSender, closeNicFds } from './netdev.js';
import { spawnQemu } from './process.js';
import type { QmpClient } from './qmp.js';
import {
  type TemplateFiles,
  type TemplateMeta,
  copyTemplateRam,
  createTemplateRam,
  fingerprintOf,
  readTemplateMeta,
  restoreTemplateState,
  saveTemplateState,
  templateFiles,
  templateInputs,
  templateMismatch,
} from './template.js';
import { type TakenVm, markSlotReady, slotPaths, takeCachedVm } from './vm-cache.js';

export interface TemplateUse {
  /** `cached`: a clone restored to be parked, paused, in the VM cache (vm-cache.ts) for a sandbox to take. */
  role: 'template' | 'clone' | 'cached';
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
  /** The VM cache a clone first takes a parked VM from (role clone). */
  cacheDir?: string;
  /** The parked VM this clone took from the cache: restored already, its QEMU not our child. */
  taken?: TakenVm;
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
    if (req.role === 'cached') throw new Error(`this VM cannot be cached: ${why}`);
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
    use: {
      role: req.role,
      files,
      inputs,
      meta,
      ram,
      fsShares: spec.fsShares,
      nics: [],
      cacheDir: req.role === 'clone' ? req.cacheDir : undefined,
    },
  };
}

/**
 * A clone first looks in the VM cache: a parked VM of its shape moves into its run dir (which must not exist
 * yet) and is its VMM from then on. Undefined when the cache has none (the clone is restored as usual).
 */
export async function takeFromCache(
  use: TemplateUse,
  runDir: string,
  log: Logger,
): Promise<TakenVm | undefined> {
  if (use.role !== 'clone' || !use.cacheDir || !use.meta) return undefined;
  const want = {
    fingerprint: fingerprintOf(use.inputs),
    vcpus: use.meta.vcpus,
    memoryMiB: use.meta.memoryMiB,
  };
  use.taken = await takeCachedVm(use.cacheDir, want, runDir, log);
  return use.taken;
}

/**
 * Spawns QEMU; a VM to be parked in the cache writes its output to a file, not to pipes: the filler that
 * starts it goes away.
 */
export async function spawnVmm(
  use: TemplateUse | undefined,
  qemuPath: string,
  args: readonly string[],
  o: { runDir: string; nics: ColdPlugNics; log: Logger },
): Promise<SupervisedChild> {
  const out = use?.role === 'cached' ? await open(slotPaths(o.runDir).output, 'a', 0o600) : undefined;
  try {
    return spawnQemu(qemuPath, args, o.nics, o.log, out?.fd);
  } finally {
    await out?.close();
  }
}

/**
 * Parks a restored, paused VM in its cache slot, ready for a sandbox to take. QMP serves one client at a time:
 * ours goes before the VM is marked ready, or a taker would wait on us. On failure QEMU is killed: unparked,
 * nobody would ever take or stop it.
 */
export async function parkInCache(
  use: TemplateUse | undefined,
  o: {
    runDir: string;
    vcpus: number;
    memoryMiB: number;
    qemu: SupervisedChild;
    vmm: ProcessIdentity | undefined;
    qmp: QmpClient | undefined;
    log: Logger;
  },
): Promise<void> {
  o.qmp?.close();
  o.qemu.unref();
  try {
    if (use?.role !== 'cached' || !use.meta)
      throw new Error('keepInCache: this VM was not prepared for the VM cache');
    if (!o.vmm) throw new Error('keepInCache: QEMU is not running');
    const qemu = { pid: o.vmm.pid, startTime: o.vmm.startTime };
    const meta = { fingerprint: fingerprintOf(use.inputs), vcpus: o.vcpus, memoryMiB: o.memoryMiB, qemu };
    await markSlotReady(o.runDir, meta);
  } catch (e) {
    o.qemu.signal('SIGKILL');
    throw e;
  }
  o.log.info({ pid: o.qemu.pid, slot: o.runDir }, 'VM parked in the VM cache');
}

/** Before a clone's QEMU starts: its RAM copy, and its NICs taken off the command line (hotplugged later). */
export async function beforeCloneSpawn(
  use: TemplateUse,
  coldNics: ColdPlugNics,
  deadline: number,
): Promise<void> {
  // A VM taken from the cache has its RAM copy already (it moved in with the slot).
  if (use.ram && !use.taken) await copyTemplateRam(use.files, use.ram, Math.max(deadline - Date.now(), 1));
  use.nics.push(...coldNics.take());
}

/**
 * After a clone's QEMU is up on QMP: load the template's state and run the guest. A VM taken from the cache is
 * restored already (and was paused when parked): it only continues.
 */
export async function restoreClone(
  use: TemplateUse,
  qmp: QmpClient,
  sendFds: FdSender,
  deadline: number,
): Promise<void> {
  if (use.taken) {
    await qmp.cont();
    return;
  }
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
