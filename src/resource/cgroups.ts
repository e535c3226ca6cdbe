// The host cgroup of a sandbox, holding the VMM and its helpers (QEMU, virtiofsd) so the sandbox's host-side
// usage is accounted and limitable in one place. As runtime-rs, it is the sandbox container's linux.cgroupsPath
// (CRI: <cgroup_parent>/<sandbox id>, so kubelet's pod cgroup holds the VM and containerd's PodSandboxStats reads
// it); without one, kata_<sid> at the root. Works on cgroup v2 (one unified tree) and on v1 / hybrid hosts (one
// dir per v1 hierarchy; the empty v2 tree of a hybrid host is not used).
import fs from 'node:fs/promises';
import path from 'node:path';
import { logger } from '../common/log.js';
import { PollTimeoutError, pollUntil } from '../common/poll.js';
import { checkId } from '../contract/index.js';
import { readMountInfo } from './mount.js';

export type CgroupVersion = 'v1' | 'v2';
export const CGROUP_MOUNT_ROOT = '/sys/fs/cgroup';
const CGROUP2_SUPER_MAGIC = 0x63677270;

/** v2 when the cgroup mount root is itself a cgroup2 mount; anything else (a tmpfs of v1 mounts) is v1. */
export async function detectCgroupVersion(mountRoot = CGROUP_MOUNT_ROOT): Promise<CgroupVersion> {
  try {
    const st = await fs.statfs(mountRoot);
    return st.type === CGROUP2_SUPER_MAGIC ? 'v2' : 'v1';
  } catch (err) {
    throw new Error(`detect cgroup version at ${mountRoot}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * The sandbox cgroup's path from the sandbox spec's linux.cgroupsPath, in the cgroupfs driver's form (absolute:
 * from the hierarchy root; relative: under this process's cgroup, as runc). The systemd driver's
 * `slice:prefix:name` needs systemd, which kata-ts does not drive: undefined (kata_<sid> at the root), with why.
 */
export function sandboxCgroupPath(cgroupsPath: string | undefined): { path?: string; ignored?: string } {
  const p = cgroupsPath?.trim();
  if (!p) return {};
  if (!p.startsWith('/') && p.split(':').length === 3)
    return {
      ignored: `cgroupsPath ${p} is in the systemd driver's form; kata-ts manages cgroupfs paths only`,
    };
  const parts = p.split('/').filter(Boolean);
  if (parts.length === 0 || parts.some((c) => c === '.' || c === '..'))
    return { ignored: `cgroupsPath ${JSON.stringify(p)} names no cgroup below the root` };
  return { path: p.startsWith('/') ? `/${parts.join('/')}` : parts.join('/') };
}

export interface SandboxCgroupOptions {
  /** The sandbox cgroup itself (sandboxCgroupPath's form); default: kata_<sid> under `parent`. */
  path?: string;
  /** Cgroup path the sandbox cgroup goes under, relative to the hierarchy root (default: the root, as Kata). */
  parent?: string;
  /** Put the cgroup under this process's own cgroup (then `parent` is relative to it). */
  nestUnderSelf?: boolean;
  /** Where cgroup filesystems are mounted (default /sys/fs/cgroup). */
  mountRoot?: string;
  /** Force a version instead of probing mountRoot (e.g. a hybrid host's cgroup2 at .../unified). */
  version?: CgroupVersion;
}

interface Hierarchy {
  /** Mount point of the hierarchy. */
  mount: string;
  /** /proc/self/cgroup key: "" for v2, the controller list ("cpu", "name=systemd") for v1. */
  controllers: string[];
}

// The /proc/<pid>/cgroup line of this process for a hierarchy.
async function selfPath(h: Hierarchy, version: CgroupVersion): Promise<string> {
  const lines = (await fs.readFile('/proc/self/cgroup', 'utf8')).split('\n').filter(Boolean);
  for (const l of lines) {
    const [, ctrl = '', p = '/'] = l.match(/^(\d+):([^:]*):(.*)$/) ?? [];
    if (version === 'v2' && ctrl === '') return p;
    if (version === 'v1' && ctrl !== '') {
      const set = ctrl.split(',');
      if (h.controllers.length === set.length && h.controllers.every((c) => set.includes(c))) return p;
    }
  }
  return '/';
}

const V1_SUPER_OPTIONS_IGNORED = new Set([
  'rw',
  'ro',
  'noprefix',
  'clone_children',
  'xattr',
  'cpuset_v2_mode',
]);

async function hierarchies(mountRoot: string, version: CgroupVersion): Promise<Hierarchy[]> {
  const infos = (await readMountInfo()).filter(
    (m) => m.mountPoint === mountRoot || m.mountPoint.startsWith(`${mountRoot}/`),
  );
  if (version === 'v2') {
    const m =
      infos.find((i) => i.fstype === 'cgroup2' && i.mountPoint === mountRoot) ??
      infos.find((i) => i.fstype === 'cgroup2');
    return m ? [{ mount: m.mountPoint, controllers: [] }] : [];
  }
  return infos
    .filter((i) => i.fstype === 'cgroup')
    .map((i) => ({
      mount: i.mountPoint,
      controllers: i.superOptions.filter(
        (o) => !V1_SUPER_OPTIONS_IGNORED.has(o) && !o.startsWith('release_agent='),
      ),
    }))
    .filter((h) => h.controllers.length > 0);
}

export class SandboxCgroup {
  readonly sandboxId: string;
  /** The cgroup's own name: the last part of its path (kata_<sid> by default). */
  readonly name: string;
  private readonly opts: SandboxCgroupOptions;
  private resolved?: { version: CgroupVersion; dirs: string[] };
  private readonly log;

  constructor(sandboxId: string, opts: SandboxCgroupOptions = {}) {
    checkId('sandbox', sandboxId);
    this.sandboxId = sandboxId;
    this.name = opts.path ? path.posix.basename(opts.path) : `kata_${sandboxId}`;
    this.opts = opts;
    this.log = logger('resource', { sandbox_id: sandboxId });
  }

  /** The cgroup dirs (one on v2, one per v1 hierarchy) and the version; probes the host on first use. */
  async paths(): Promise<{ version: CgroupVersion; dirs: string[] }> {
    if (this.resolved) return this.resolved;
    const mountRoot = path.resolve(this.opts.mountRoot ?? CGROUP_MOUNT_ROOT);
    const version = this.opts.version ?? (await detectCgroupVersion(mountRoot));
    const hs = await hierarchies(mountRoot, version);
    if (hs.length === 0)
      throw new Error(`sandbox ${this.sandboxId}: no cgroup ${version} hierarchy under ${mountRoot}`);
    const dirs: string[] = [];
    for (const h of hs) {
      const p = this.opts.path;
      const base = this.opts.nestUnderSelf || (p && !p.startsWith('/')) ? await selfPath(h, version) : '/';
      const rel = p
        ? path.posix.join('/', base, p)
        : path.posix.join('/', base, this.opts.parent ?? '', this.name);
      dirs.push(path.join(h.mount, rel));
    }
    this.resolved = { version, dirs };
    return this.resolved;
  }

  /**
   * Creates the cgroup in every hierarchy, with any missing parent (kubelet's pod cgroup when no kubelet made
   * it); idempotent. On failure removes what it created. Parents stay, as runc leaves them: they are shared.
   */
  async create(): Promise<void> {
    const { version, dirs } = await this.paths();
    const mountRoot = path.resolve(this.opts.mountRoot ?? CGROUP_MOUNT_ROOT);
    const made: string[] = [];
    try {
      for (const d of dirs) {
        // Top-down, so that each new v1 cpuset level can take its parent's cpus and mems.
        const chain: string[] = [];
        for (let c = d; c.length > mountRoot.length && c !== path.dirname(c); c = path.dirname(c))
          chain.unshift(c);
        for (const c of chain) {
          if (await exists(c)) continue;
          await fs.mkdir(c);
          made.push(c);
          if (version === 'v1') await inheritCpuset(c);
        }
      }
    } catch (err) {
      for (const d of made.reverse()) await fs.rmdir(d).catch(() => undefined);
      throw new Error(`create cgroup ${this.name} for sandbox ${this.sandboxId}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    this.log.debug({ dirs, version }, 'sandbox cgroup created');
  }

  /** Moves a process (QEMU, virtiofsd) into the cgroup in every hierarchy. */
  async addProcess(pid: number): Promise<void> {
    if (!Number.isInteger(pid) || pid <= 0)
      throw new Error(`sandbox ${this.sandboxId}: invalid pid ${pid} for cgroup`);
    const { dirs } = await this.paths();
    for (const d of dirs) {
      try {
        await fs.writeFile(path.join(d, 'cgroup.procs'), `${pid}\n`);
      } catch (err) {
        throw new Error(
          `add pid ${pid} to cgroup ${d} of sandbox ${this.sandboxId}: ${(err as Error).message}`,
          {
            cause: err,
          },
        );
      }
    }
  }

  /** Pids in the cgroup (union over hierarchies); empty when the cgroup does not exist. */
  async pids(): Promise<number[]> {
    const { dirs } = await this.paths();
    const all = new Set<number>();
    for (const d of dirs) {
      let text = '';
      try {
        text = await fs.readFile(path.join(d, 'cgroup.procs'), 'utf8');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw new Error(`read ${path.join(d, 'cgroup.procs')}: ${(err as Error).message}`, { cause: err });
      }
      for (const l of text.split('\n')) if (l) all.add(Number(l));
    }
    return [...all].sort((a, b) => a - b);
  }

  /**
   * Removes the cgroup once its processes have exited (waits up to timeoutMs; with kill, SIGKILLs what is left
   * first). Idempotent; throws naming the pids still inside.
   */
  async remove(opts: { timeoutMs?: number; kill?: boolean } = {}): Promise<void> {
    const { dirs } = await this.paths();
    if (opts.kill) {
      for (const pid of await this.pids()) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
        }
      }
    }
    const timeoutMs = opts.timeoutMs ?? 5000;
    const left = new Set(dirs);
    // rmdir fails with EBUSY until the last process in the cgroup has exited.
    const removeEmpty = async (): Promise<boolean> => {
      for (const d of [...left]) {
        try {
          await fs.rmdir(d);
          left.delete(d);
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          if (code === 'ENOENT') left.delete(d);
          else if (code !== 'EBUSY') {
            throw new Error(`remove cgroup ${d} of sandbox ${this.sandboxId}: ${(err as Error).message}`, {
              cause: err,
            });
          }
        }
      }
      return left.size === 0;
    };
    try {
      await pollUntil(removeEmpty, { timeoutMs, intervalMs: 50, what: `cgroup ${this.name} to empty` });
    } catch (err) {
      if (!(err instanceof PollTimeoutError)) throw err;
      const pids = await this.pids();
      throw new Error(
        `remove cgroup ${this.name} of sandbox ${this.sandboxId}: still busy (${[...left].join(', ')}), ` +
          `pids inside: ${pids.join(', ') || 'none'}`,
      );
    }
    this.log.debug({ dirs }, 'sandbox cgroup removed');
  }
}

/** A v1 cpuset cgroup admits no task until it has cpus and mems: a new one takes its parent's. */
async function inheritCpuset(dir: string): Promise<void> {
  if (!(await exists(path.join(dir, 'cpuset.cpus')))) return;
  for (const f of ['cpuset.cpus', 'cpuset.mems']) {
    const cur = (await fs.readFile(path.join(dir, f), 'utf8')).trim();
    if (cur === '')
      await fs.writeFile(path.join(dir, f), await fs.readFile(path.join(path.dirname(dir), f), 'utf8'));
  }
}

async function exists(p: string): Promise<boolean> {
  try {
    await fs.access(p);
    return true;
  } catch {
    return false;
  }
}
