// The VM cache (Kata's [factory] vm_cache_number) without a daemon: each cached VM is a clone of the template,
// restored and paused in its own slot dir under <template_path>/cache/, with its QMP and agent sockets
// listening and its output in a file. Directory operations are the locks: rename(2) moves a ready slot to
// whoever takes it (a sandbox's run dir, or a doomed name before it is
// destroyed), so each cached VM has exactly one owner at a time; one filler works at a time (a lock dir).
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Logger } from '../../common/log.js';
import { AdoptedProcess } from '../adopted.js';
import {
  type ProcessIdentity,
  isAlive,
  processFromPidFile,
  processIdentity,
  terminateProcess,
} from '../proc.js';
import { runDirPaths } from './cmdline.js';

export const CACHED_VM_FORMAT = 1;
const SLOT_PREFIX = 'vm-';
/** A slot with no filler record this long after it was made lost its filler before it wrote one. */
const ORPHAN_SLOT_MS = 10_000;

export interface CachedVmMeta {
  format: number;
  createdAt: string;
  /** The template inputs' fingerprint the VM was restored from: only a sandbox with the same takes it. */
  fingerprint: string;
  vcpus: number;
  memoryMiB: number;
  /** The parked QEMU. */
  qemu: ProcessIdentity;
}

export function vmCacheDir(templateDir: string): string {
  return path.join(templateDir, 'cache');
}

export function slotPaths(slotDir: string) {
  return {
    /** CachedVmMeta, written last: its presence means the VM is parked and ready. */
    meta: path.join(slotDir, 'vm.json'),
    /** The filler process while it works (pid + start time). */
    filler: path.join(slotDir, 'filler.json'),
    /** QEMU's stdout and stderr. */
    output: path.join(slotDir, 'qemu.log'),
  };
}

async function readJson<T>(file: string): Promise<T | undefined> {
  try {
    return JSON.parse(await readFile(file, 'utf8')) as T;
  } catch {
    return undefined; // missing, or torn by a filler that died mid-write: either way not a ready VM
  }
}

/**
 * True while the process `ownerFile` names is alive, or, with no owner written yet, while `dir` is young (its
 * maker may be between mkdir and writing the owner).
 */
async function held(ownerFile: string, dir: string): Promise<boolean> {
  const owner = await readJson<ProcessIdentity>(ownerFile);
  if (owner) return isAlive(owner);
  const st = await stat(dir).catch(() => undefined);
  return st !== undefined && Date.now() - st.mtimeMs < ORPHAN_SLOT_MS;
}

async function writeJson(file: string, value: unknown): Promise<void> {
  const tmp = `${file}.tmp`;
  await writeFile(tmp, `${JSON.stringify(value, null, 2)}\n`, { mode: 0o600 });
  await rename(tmp, file);
}

/**
 * A new slot for one VM, recorded with its filler. Never a reused name: a QEMU that was taken from a slot still
 * unlinks the slot's socket and pid file paths when it exits, which must not be another VM's.
 */
export async function newSlot(cacheDir: string): Promise<string> {
  await mkdir(cacheDir, { recursive: true, mode: 0o750 });
  const dir = path.join(cacheDir, `${SLOT_PREFIX}${Date.now()}-${randomBytes(3).toString('hex')}`);
  await mkdir(dir, { mode: 0o750 });
  await writeJson(slotPaths(dir).filler, await processIdentity(process.pid));
  return dir;
}

/**
 * One filler at a time (mkdir of a lock dir that names its holder): undefined when a live filler holds it, or
 * a release function. A lock whose holder died is taken over.
 */
export async function lockFilling(cacheDir: string): Promise<(() => Promise<void>) | undefined> {
  await mkdir(cacheDir, { recursive: true, mode: 0o750 });
  const lock = path.join(cacheDir, '.filling');
  const owner = path.join(lock, 'owner.json');
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await mkdir(lock, { mode: 0o750 });
      await writeJson(owner, await processIdentity(process.pid));
      return () => rm(lock, { recursive: true, force: true });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    if (await held(owner, lock)) return undefined;
    await rm(lock, { recursive: true, force: true }); // its holder died: take it over
  }
  return undefined;
}

/** Marks a slot's VM parked and ready (the filler is done with it). */
export async function markSlotReady(slotDir: string, meta: Omit<CachedVmMeta, 'format' | 'createdAt'>) {
  const full: CachedVmMeta = { format: CACHED_VM_FORMAT, createdAt: new Date().toISOString(), ...meta };
  await writeJson(slotPaths(slotDir).meta, full);
  await rm(slotPaths(slotDir).filler, { force: true });
}

/** Stops the filler holding the lock, if any (factory destroy: a filler at work would park VMs after it). */
export async function stopFiller(cacheDir: string, log: Logger): Promise<void> {
  const holder = await readJson<ProcessIdentity>(path.join(cacheDir, '.filling', 'owner.json'));
  if (holder && holder.pid !== process.pid)
    await terminateProcess(holder, { graceMs: 2000, log, what: 'VM cache filler' });
  await rm(path.join(cacheDir, '.filling'), { recursive: true, force: true });
}

export interface SlotState {
  name: string;
  dir: string;
  state: 'ready' | 'filling' | 'dead';
  meta?: CachedVmMeta;
}

async function slotState(dir: string): Promise<SlotState> {
  const name = path.basename(dir);
  const p = slotPaths(dir);
  const meta = await readJson<CachedVmMeta>(p.meta);
  if (meta?.format === CACHED_VM_FORMAT && meta.qemu) {
    return { name, dir, meta, state: (await isAlive(meta.qemu)) ? 'ready' : 'dead' };
  }
  return { name, dir, state: (await held(p.filler, dir)) ? 'filling' : 'dead' };
}

/** The cache's slots and what each holds. */
export async function listSlots(cacheDir: string): Promise<SlotState[]> {
  let names: string[];
  try {
    names = await readdir(cacheDir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new Error(`reading the VM cache ${cacheDir}: ${(e as Error).message}`, { cause: e });
  }
  const slots = names.filter((n) => n.startsWith(SLOT_PREFIX)).sort();
  return Promise.all(slots.map((n) => slotState(path.join(cacheDir, n))));
}

/**
 * Destroys a slot: first renamed to a doomed name (so nobody takes it meanwhile), then its filler and its QEMU
 * (by the identity in its meta, or the pid file QEMU wrote) stopped, then removed.
 */
export async function destroySlot(slot: SlotState, log: Logger): Promise<void> {
  const doomed = path.join(path.dirname(slot.dir), `.doomed-${slot.name}-${randomBytes(4).toString('hex')}`);
  try {
    await rename(slot.dir, doomed);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return; // taken or destroyed meanwhile
    throw new Error(`destroying VM cache slot ${slot.dir}: ${(e as Error).message}`, { cause: e });
  }
  const filler = await readJson<ProcessIdentity>(slotPaths(doomed).filler);
  if (filler) await terminateProcess(filler, { graceMs: 2000, log, what: 'VM cache filler' });
  await removeSlotVm(doomed, log);
}

/** Stops a slot's QEMU (by the identity in its meta, or the pid file QEMU wrote) and removes the slot. */
async function removeSlotVm(dir: string, log: Logger): Promise<void> {
  const meta = await readJson<CachedVmMeta>(slotPaths(dir).meta);
  const qemu = meta?.qemu ?? (await processFromPidFile(runDirPaths(dir).pidFile));
  if (qemu) await terminateProcess(qemu, { graceMs: 2000, log, what: 'cached VM' });
  await rm(dir, { recursive: true, force: true });
}

/** Removes doomed slots whose destroyer died half-way (their processes are gone or go now). */
export async function sweepDoomed(cacheDir: string, log: Logger): Promise<void> {
  const names = await readdir(cacheDir).catch(() => [] as string[]);
  for (const n of names.filter((x) => x.startsWith('.doomed-')))
    await removeSlotVm(path.join(cacheDir, n), log);
}

export interface TakenVm {
  meta: CachedVmMeta;
  qemu: AdoptedProcess;
}

/**
 * Takes a ready cached VM restored from `fingerprint` with this shape: its slot is renamed to `runDir` (which
 * must not exist yet), so its sockets, RAM file and console log are the sandbox's from then on. Undefined when
 * none fits (or the rename cannot be done: another filesystem), logged.
 */
export async function takeCachedVm(
  cacheDir: string,
  want: { fingerprint: string; vcpus: number; memoryMiB: number },
  runDir: string,
  log: Logger,
): Promise<TakenVm | undefined> {
  const slots = await listSlots(cacheDir);
  const passed: string[] = []; // why each slot was passed over, for the log
  for (const slot of slots) {
    const m = slot.meta;
    if (slot.state !== 'ready' || !m) {
      passed.push(`${slot.name}: ${slot.state}`);
      continue;
    }
    if (m.fingerprint !== want.fingerprint || m.vcpus !== want.vcpus || m.memoryMiB !== want.memoryMiB) {
      passed.push(`${slot.name}: another template or shape (${m.vcpus} vCPUs, ${m.memoryMiB} MiB)`);
      continue;
    }
    try {
      await rename(slot.dir, runDir);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') {
        passed.push(`${slot.name}: taken by another sandbox first`);
        continue;
      }
      log.warn({ slot: slot.dir, err: (e as Error).message }, 'a cached VM could not be taken; cloning');
      return undefined;
    }
    if (!(await isAlive(m.qemu))) {
      // It died between the look and the rename: ours to clear, then clone as if the cache were empty.
      await rm(runDir, { recursive: true, force: true });
      passed.push(`${slot.name}: its QEMU died`);
      continue;
    }
    await renice(m.qemu.pid, 0);
    log.info({ slot: slot.name, pid: m.qemu.pid }, 'took a VM from the VM cache');
    return { meta: m, qemu: new AdoptedProcess('qemu', m.qemu, slotPaths(runDir).output) };
  }
  log.info({ cache: cacheDir, slots: passed }, 'no ready VM in the VM cache fits; cloning');
  return undefined;
}

/**
 * Gives every thread of a process this niceness: a filler runs niced (kata-ctl factory fill --nice), and the VM
 * it parked must not stay so once a sandbox runs in it. Per thread: Linux's setpriority affects one thread.
 */
async function renice(pid: number, priority: number): Promise<void> {
  let tids: string[] = [];
  try {
    tids = await readdir(`/proc/${pid}/task`);
  } catch {
    return; // gone: its end is seen by the watch
  }
  for (const tid of tids) {
    try {
      os.setPriority(Number(tid), priority);
    } catch {
      // a thread that ended meanwhile
    }
  }
}
