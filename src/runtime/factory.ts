// The VM factory (Kata's [factory] enable_template): making the template VM (`kata-ctl factory init`), telling
// what is there (`status`), removing it (`destroy`), and making a restored clone its own machine before any
// container runs in it. The hypervisor driver owns how a template is saved and restored; this owns when.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, open, rm } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../common/log.js';
import type { KataConfig } from '../config/types.js';
import type { VmConfig } from '../hypervisor/hypervisor.js';
import {
  type SlotState,
  type TemplateMeta,
  destroySlot,
  destroyTemplateFiles,
  listSlots,
  lockFilling,
  newSlot,
  readTemplateMeta,
  stopFiller,
  sweepDoomed,
  templateFiles,
  vmCacheDir,
} from '../hypervisor/index.js';
import type { AgentClient } from './agent.js';
import type { RuntimeDeps } from './deps.js';
import { errorMessage } from './errors.js';
import { sandboxVmConfig } from './vm-config.js';

/** The entropy a clone gets before anything else runs in it (Linux's CRNG needs 32 bytes to be seeded). */
const RESEED_BYTES = 512;
const TEMPLATE_START_TIMEOUT_MS = 120_000;
const TEMPLATE_SAVE_TIMEOUT_MS = 60_000;
/** The sandbox id the template VM uses for its logs and QEMU name (not a sandbox anyone can address). */
export const TEMPLATE_VM_ID = 'factory-template';

/** The template request a sandbox's VmConfig carries when templating is on (and the VM cache, if kept). */
export function templateRequest(config: KataConfig): VmConfig['template'] {
  const f = config.factory;
  if (!f.enable_template) return undefined;
  return {
    dir: f.template_path,
    role: 'clone',
    cacheDir: f.vm_cache_number > 0 ? vmCacheDir(f.template_path) : undefined,
  };
}

/**
 * A clone starts with the template's random state and clock: feed the guest fresh host entropy (agent
 * ReseedRandomDev: mixed in, CRNG reseeded; QEMU's vmgenid made the kernel reseed on restore already) and set
 * its clock (SetGuestDateTime). Done before CreateSandbox, so no container ever sees the template's state.
 */
export async function renewClone(agent: AgentClient, log: Logger): Promise<void> {
  const now = Date.now();
  // Both in flight at once (one round trip): both are done before the caller goes on to CreateSandbox.
  await Promise.all([
    agent.reseedRandomDev({ data: randomBytes(RESEED_BYTES) }),
    agent.setGuestDateTime({ Sec: BigInt(Math.floor(now / 1000)), Usec: BigInt((now % 1000) * 1000) }),
  ]);
  log.debug({ bytes: RESEED_BYTES }, 'clone reseeded and its clock set');
}

export type FactoryDeps = Pick<RuntimeDeps, 'createHypervisor' | 'connectAgent'>;

/**
 * `kata-ctl factory init`: boots a VM of the sandboxes' default shape with no devices, waits until its agent
 * serves (modules loaded: any agent call but Health waits for them), closes the agent channel, pauses and saves
 * it, and stops it. An existing template is replaced (running clones hold their own RAM copy and state).
 */
export async function initTemplate(
  config: KataConfig,
  deps: FactoryDeps,
  log: Logger,
): Promise<TemplateMeta> {
  const files = templateFiles(config.factory.template_path);
  await destroyTemplateFiles(files);
  const base = sandboxVmConfig({
    sandboxId: TEMPLATE_VM_ID,
    config,
    hostSharedDir: '',
    persistState: undefined,
  });
  const vm: VmConfig = {
    ...base,
    runDir: files.runDir,
    devices: [],
    template: { dir: files.dir, role: 'template' },
  };
  const hv = deps.createHypervisor(config, log);
  try {
    await hv.prepareVm(vm);
    await hv.startVm(TEMPLATE_START_TIMEOUT_MS);
    const conn = await deps.connectAgent(hv.agentEndpoint(), {
      timeoutMs: Math.max(config.agent.dial_timeout * 1000, TEMPLATE_START_TIMEOUT_MS),
      log,
    });
    try {
      await conn.agent.getGuestDetails({});
    } finally {
      conn.close();
    }
    await hv.saveTemplate(TEMPLATE_SAVE_TIMEOUT_MS);
  } catch (e) {
    await destroyTemplateFiles(files).catch((err: unknown) =>
      log.error({ err: errorMessage(err) }, 'removing a half-made VM template'),
    );
    throw new Error(`making the VM template at ${files.dir}: ${errorMessage(e)}`, { cause: e });
  } finally {
    await hv.stopVm();
    await hv.cleanup();
  }
  const meta = await readTemplateMeta(files.dir);
  if (!meta) throw new Error(`making the VM template at ${files.dir}: no template.json after the save`);
  return meta;
}

export interface TemplateStatus {
  path: string;
  exists: boolean;
  meta?: TemplateMeta;
  /** The VM cache's slots: ready (parked, for a sandbox to take), filling, or dead (to be cleared). */
  cache: { dir: string; slots: { slot: string; state: SlotState['state']; pid?: number; since?: string }[] };
}

export async function templateStatus(config: KataConfig): Promise<TemplateStatus> {
  const meta = await readTemplateMeta(config.factory.template_path);
  const dir = vmCacheDir(config.factory.template_path);
  const slots = (await listSlots(dir)).map((s) => ({
    slot: s.name,
    state: s.state,
    pid: s.meta?.qemu.pid,
    since: s.meta?.createdAt,
  }));
  return { path: config.factory.template_path, exists: meta !== undefined, meta, cache: { dir, slots } };
}

/** Removes the template and every cached VM (stopped first). */
export async function destroyTemplate(config: KataConfig, log: Logger): Promise<void> {
  await destroyVmCache(config, log);
  await destroyTemplateFiles(templateFiles(config.factory.template_path));
}

// --- the VM cache (vm_cache_number) ------------------------------------------------------------------------

const CACHED_VM_START_TIMEOUT_MS = 60_000;

/** Stops and removes every cached VM (and any filler still at work). */
export async function destroyVmCache(config: KataConfig, log: Logger): Promise<void> {
  const dir = vmCacheDir(config.factory.template_path);
  await stopFiller(dir, log);
  for (const slot of await listSlots(dir)) await destroySlot(slot, log);
  await sweepDoomed(dir, log);
  await rm(dir, { recursive: true, force: true });
}

/** Restores one clone into a claimed slot and parks it there, paused. */
async function parkOneVm(config: KataConfig, deps: FactoryDeps, slotDir: string, log: Logger): Promise<void> {
  const base = sandboxVmConfig({
    sandboxId: `vm-cache-${path.basename(slotDir)}`,
    config,
    hostSharedDir: '',
    persistState: undefined,
  });
  // No devices: the sandbox that takes the VM hotplugs its own virtio-fs share and NICs.
  const vm: VmConfig = {
    ...base,
    runDir: slotDir,
    devices: [],
    template: { dir: config.factory.template_path, role: 'cached' },
  };
  const hv = deps.createHypervisor(config, log);
  try {
    await hv.prepareVm(vm);
    await hv.startVm(CACHED_VM_START_TIMEOUT_MS);
    // Warmed before it is paused: a restored guest's first agent calls run on a cold TCG translation cache
    // (~0.35 s here); the same calls a sandbox makes first (entropy, clock) move that cost off its path.
    const conn = await deps.connectAgent(hv.agentEndpoint(), {
      timeoutMs: CACHED_VM_START_TIMEOUT_MS,
      log,
    });
    try {
      await renewClone(conn.agent, log);
    } finally {
      conn.close();
    }
    await hv.pauseVm();
    await hv.keepInCache();
  } catch (e) {
    await hv.stopVm();
    await hv.cleanup();
    throw e;
  }
}

/**
 * `kata-ctl factory fill`: parks clones of the template until the cache holds vm_cache_number ready VMs,
 * clearing dead slots, those of another template and any above the number; returns the slots it filled. One
 * filler at a time: a second one returns at once (the first fills up to the number, looking again after each
 * VM, so a VM taken meanwhile is replaced too).
 */
export async function fillVmCache(config: KataConfig, deps: FactoryDeps, log: Logger): Promise<string[]> {
  const f = config.factory;
  if (!f.enable_template || f.vm_cache_number === 0) return [];
  const meta = await readTemplateMeta(f.template_path);
  if (!meta)
    throw new Error(
      `filling the VM cache: there is no VM template at ${f.template_path} (kata-ctl factory init)`,
    );
  const dir = vmCacheDir(f.template_path);
  const release = await lockFilling(dir);
  if (!release) {
    log.info({ cache: dir }, 'another filler is at work on the VM cache');
    return [];
  }
  const filled: string[] = [];
  try {
    await sweepDoomed(dir, log);
    for (;;) {
      const live: SlotState[] = [];
      for (const slot of await listSlots(dir)) {
        // With the lock held, a slot still filling is a dead filler's.
        const usable = slot.state === 'ready' && slot.meta?.fingerprint === meta.fingerprint;
        if (usable && live.length < f.vm_cache_number) live.push(slot);
        else await destroySlot(slot, log);
      }
      if (live.length >= f.vm_cache_number) break;
      const slot = await newSlot(dir);
      try {
        await parkOneVm(config, deps, slot, log);
      } catch (e) {
        await rm(slot, { recursive: true, force: true });
        throw new Error(`filling VM cache slot ${slot}: ${errorMessage(e)}`, { cause: e });
      }
      filled.push(slot);
    }
  } finally {
    await release();
  }
  return filled;
}

/**
 * Replaces a taken cached VM: `kata-ctl factory fill` detached, at a lower CPU priority than sandboxes (it
 * runs while the sandbox that took the VM starts its containers); it exits once the slots are full.
 */
export function spawnCacheFiller(
  kataCtl: string,
  o: { config: KataConfig; configPath: string | undefined; log: Logger },
): void {
  const args = [kataCtl, 'factory', 'fill', '--nice', ...(o.configPath ? ['--config', o.configPath] : [])];
  // Its output goes to a file beside the slots: nobody reads a detached child's pipes.
  const logFile = path.join(vmCacheDir(o.config.factory.template_path), 'filler.log');
  const start = async () => {
    await mkdir(path.dirname(logFile), { recursive: true, mode: 0o750 });
    const out = await open(logFile, 'a', 0o600);
    try {
      const child = spawn(process.execPath, args, { detached: true, stdio: ['ignore', out.fd, out.fd] });
      child.on('error', (e) => o.log.warn({ err: e.message }, 'the VM cache filler could not be started'));
      child.unref();
      o.log.info({ pid: child.pid, log: logFile }, 'refilling the VM cache');
    } finally {
      await out.close();
    }
  };
  void start().catch((e: unknown) =>
    o.log.warn({ err: errorMessage(e) }, 'the VM cache filler could not be started'),
  );
}
