// Persisted sandbox state: what a restarted shim (or `kata-ctl`) needs to find and clean up a sandbox.
// One JSON file per sandbox, /run/kata/<sandbox-id>/state.json, replaced atomically.
import fs from 'node:fs/promises';
import path from 'node:path';
import { checkId } from '../contract/index.js';
import { isAtomicTempName, writeFileAtomic } from './atomic.js';

export { writeFileAtomic } from './atomic.js';

export interface SandboxState {
  sandboxId: string;
  namespace?: string;
  bundle?: string;
  hypervisor: { name: string; pid: number; virtiofsdPid?: number; runDir: string };
  containers: { id: string; bundle: string; rootfsMounted: boolean }[];
  sharedFsRoot?: string;
  createdAt: string;
  state: 'created' | 'running' | 'stopped';
}

export const PERSIST_ROOT = '/run/kata';
export const STATE_FILE = 'state.json';

/** Thrown for unreadable or malformed state; the message names the file. */
export class PersistError extends Error {
  constructor(
    message: string,
    readonly file: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'PersistError';
  }
}

export function sandboxStateDir(id: string, root = PERSIST_ROOT): string {
  // The shim checked the id at its edge; this cheap re-check (same grammar) keeps a path from leaving root.
  checkId('sandbox', id);
  return path.join(root, id);
}

export function sandboxStateFile(id: string, root = PERSIST_ROOT): string {
  return path.join(sandboxStateDir(id, root), STATE_FILE);
}

export async function saveSandboxState(s: SandboxState, root = PERSIST_ROOT): Promise<void> {
  const dir = sandboxStateDir(s.sandboxId, root);
  await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  await writeFileAtomic(path.join(dir, STATE_FILE), `${JSON.stringify(s, null, 2)}\n`);
}

/** The saved state, or undefined when there is none. Throws PersistError naming the file when it is corrupt. */
export async function loadSandboxState(id: string, root = PERSIST_ROOT): Promise<SandboxState | undefined> {
  const file = sandboxStateFile(id, root);
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new PersistError(`read sandbox state ${file}: ${(err as Error).message}`, file, { cause: err });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new PersistError(`sandbox state ${file} is corrupt: ${(err as Error).message}`, file, {
      cause: err,
    });
  }
  const problem = validate(value, id);
  if (problem) throw new PersistError(`sandbox state ${file} is invalid: ${problem}`, file);
  return value as SandboxState;
}

/** Removes the state file (and temp files a crash left); the dir too when nothing else is in it. Idempotent. */
export async function removeSandboxState(id: string, root = PERSIST_ROOT): Promise<void> {
  const dir = sandboxStateDir(id, root);
  let names: string[];
  try {
    names = await fs.readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw new Error(`remove sandbox state ${dir}: ${(err as Error).message}`, { cause: err });
  }
  for (const n of names) {
    if (n === STATE_FILE || isAtomicTempName(n, STATE_FILE)) await fs.rm(path.join(dir, n), { force: true });
  }
  try {
    await fs.rmdir(dir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // Other components may keep files in the sandbox dir; they remove them and the dir.
    if (code !== 'ENOENT' && code !== 'ENOTEMPTY') {
      throw new Error(`remove sandbox state dir ${dir}: ${(err as Error).message}`, { cause: err });
    }
  }
}

/** Ids of sandboxes that have a state file under root (sorted). */
export async function listSandboxStates(root = PERSIST_ROOT): Promise<string[]> {
  let entries: import('node:fs').Dirent[];
  try {
    entries = await fs.readdir(root, { withFileTypes: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new Error(`list sandbox states in ${root}: ${(err as Error).message}`, { cause: err });
  }
  const ids: string[] = [];
  for (const e of entries) {
    if (!e.isDirectory()) continue;
    try {
      await fs.access(path.join(root, e.name, STATE_FILE));
      ids.push(e.name);
    } catch {
      // A dir without state.json is not a persisted sandbox (half-created or half-removed).
    }
  }
  return ids.sort();
}

const STATES = new Set(['created', 'running', 'stopped']);

function validate(v: unknown, id: string): string | undefined {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return 'not a JSON object';
  const s = v as Record<string, unknown>;
  if (s.sandboxId !== id) return `sandboxId is ${JSON.stringify(s.sandboxId)}, want ${JSON.stringify(id)}`;
  const h = s.hypervisor as Record<string, unknown> | undefined;
  if (typeof h !== 'object' || h === null) return 'hypervisor is missing';
  if (typeof h.name !== 'string') return 'hypervisor.name is not a string';
  if (typeof h.pid !== 'number') return 'hypervisor.pid is not a number';
  if (h.virtiofsdPid !== undefined && typeof h.virtiofsdPid !== 'number')
    return 'hypervisor.virtiofsdPid is not a number';
  if (typeof h.runDir !== 'string') return 'hypervisor.runDir is not a string';
  if (!Array.isArray(s.containers)) return 'containers is not an array';
  for (const [i, c] of s.containers.entries()) {
    const r = c as Record<string, unknown>;
    if (typeof r !== 'object' || r === null || typeof r.id !== 'string' || typeof r.bundle !== 'string') {
      return `containers[${i}] needs string id and bundle`;
    }
    if (typeof r.rootfsMounted !== 'boolean') return `containers[${i}].rootfsMounted is not a boolean`;
  }
  if (typeof s.createdAt !== 'string') return 'createdAt is not a string';
  if (!STATES.has(s.state as string))
    return `state ${JSON.stringify(s.state)} is not created, running or stopped`;
  for (const k of ['namespace', 'bundle', 'sharedFsRoot'] as const) {
    if (s[k] !== undefined && typeof s[k] !== 'string') return `${k} is not a string`;
  }
  return undefined;
}
