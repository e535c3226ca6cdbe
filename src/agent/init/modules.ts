// Kernel modules at boot, like modprobe: the list the image builder wrote, each module's dependencies from
// modules.dep, built-in ones skipped. The channel modules load before the agent listens, the rest on a koffi
// worker thread while it already answers.
import fs from 'node:fs';
import path from 'node:path';
import { GUEST_MODULES_LOAD_FILE } from '../../contract/index.js';
import { finitModule, finitModuleInBackground } from '../native.js';

/** Modules the agent's channels need: loaded before it listens. The rest load in the background. */
export const CHANNEL_MODULES = ['virtio_pci', 'virtio_console', 'vsock', 'vmw_vsock_virtio_transport'];
/** Loaded only when the VM has a vsock device: without one they would only delay the agent. */
export const VSOCK_MODULES = ['vsock', 'vmw_vsock_virtio_transport'];
export const VIRTIO_ID_VSOCK = 19;

/**
 * A module's canonical name, as /sys/module and the kernel spell it: '-' and '_' are the same character in
 * module names, and a path or file name loses its directory and `.ko[.xz|.zst|...]`.
 */
export function moduleName(nameOrKo: string): string {
  return path
    .basename(nameOrKo)
    .replace(/\.ko(\.\w+)?$/, '')
    .replace(/-/g, '_');
}

/** The running kernel's module dir. Read from /proc, not os.release(), which a V8 startup snapshot would freeze. */
function modulesDir(): string {
  return path.join('/lib/modules', fs.readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim());
}

/** modules.dep of the running kernel: module name → [its .ko path, then its dependencies' paths]. */
function readModulesDep(dir: string): Map<string, string[]> {
  const deps = new Map<string, string[]>();
  const text = fs.readFileSync(path.join(dir, 'modules.dep'), 'utf8');
  for (const line of text.split('\n')) {
    const colon = line.indexOf(':');
    if (colon < 0) continue;
    const ko = line.slice(0, colon);
    const rest = line
      .slice(colon + 1)
      .trim()
      .split(/\s+/)
      .filter(Boolean);
    deps.set(moduleName(ko), [ko, ...rest]);
  }
  return deps;
}

/** modules.builtin of the running kernel as module names; empty without the file (nothing known built in). */
function readModulesBuiltin(dir: string): Set<string> {
  let text = '';
  try {
    text = fs.readFileSync(path.join(dir, 'modules.builtin'), 'utf8');
  } catch {
    // no list: nothing is known to be built in
  }
  return new Set(
    text
      .split('\n')
      .filter((l) => l.trim())
      .map((l) => moduleName(l.trim())),
  );
}

const loadedModules = new Set<string>();

/** The .ko files to insert for these modules, dependencies first, each once; built-in modules are skipped. */
function modulePlan(names: string[]): { dir: string; kos: string[] } {
  const dir = modulesDir();
  const deps = readModulesDep(dir);
  const builtin = readModulesBuiltin(dir);
  const kos: string[] = [];
  for (const raw of names) {
    const name = moduleName(raw);
    const chain = deps.get(name);
    if (!chain) {
      if (builtin.has(name)) continue;
      throw new Error(`loading kernel module ${name}: not in ${dir}/modules.dep and not built in`);
    }
    // modules.dep lists the deepest dependency last: reversed, each one's dependencies come first.
    for (const ko of [...chain].reverse()) if (!kos.includes(ko)) kos.push(ko);
  }
  return { dir, kos: kos.filter((ko) => !loadedModules.has(moduleName(ko))) };
}

function insertModule(dir: string, ko: string): 'loaded' | 'already' {
  const name = moduleName(ko);
  if (loadedModules.has(name)) return 'already';
  const fd = fs.openSync(path.join(dir, ko), 'r');
  try {
    const outcome = finitModule(fd, `loading kernel module ${name} (${ko})`);
    loadedModules.add(name);
    return outcome === 'loaded' ? 'loaded' : 'already';
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Loads kernel modules and their dependencies (from modules.dep), like `modprobe`. A module built into the
 * kernel is skipped; a module that is neither built in nor shipped is an error naming it.
 */
export function loadKernelModules(names: string[]): string[] {
  const { dir, kos } = modulePlan(names);
  const loaded: string[] = [];
  for (const ko of kos) if (insertModule(dir, ko) === 'loaded') loaded.push(moduleName(ko));
  return loaded;
}

/**
 * The same on a koffi worker thread, so that the agent answers while the kernel links the modules (about half a
 * second under TCG). Resolves with what was loaded and what failed; never rejects.
 */
export function loadKernelModulesInBackground(
  names: string[],
): Promise<{ loaded: string[]; problems: string[] }> {
  const loaded: string[] = [];
  const problems: string[] = [];
  if (!names.length) return Promise.resolve({ loaded, problems });
  let plan: { dir: string; kos: string[] };
  try {
    plan = modulePlan(names);
  } catch (e) {
    return Promise.resolve({ loaded, problems: [(e as Error).message] });
  }
  return (async () => {
    for (const ko of plan.kos) {
      const name = moduleName(ko);
      const fd = fs.openSync(path.join(plan.dir, ko), 'r');
      try {
        const rc = await finitModuleInBackground(fd);
        // errno is the worker thread's: /sys/module tells whether the module is there after all (EEXIST).
        if (rc === 0 || fs.existsSync(`/sys/module/${name}`)) {
          loadedModules.add(name);
          if (rc === 0) loaded.push(name);
        } else {
          problems.push(`loading kernel module ${name} (${ko}) failed`);
        }
      } catch (e) {
        problems.push(`loading kernel module ${name} (${ko}): ${(e as Error).message}`);
      } finally {
        fs.closeSync(fd);
      }
    }
    return { loaded, problems };
  })();
}

/** True when the VM has a virtio device of this type (virtio_pci must be loaded to see them). */
export function hasVirtioDevice(id: number): boolean {
  try {
    return fs
      .readdirSync('/sys/bus/virtio/devices')
      .some((d) => Number(fs.readFileSync(`/sys/bus/virtio/devices/${d}/device`, 'utf8').trim()) === id);
  } catch {
    return false;
  }
}

/** Modules the image asked to load at boot, in order. */
export function bootModules(file = GUEST_MODULES_LOAD_FILE): string[] {
  if (!fs.existsSync(file)) return [];
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .map((l) => l.replace(/#.*/, '').trim())
    .filter(Boolean);
}
