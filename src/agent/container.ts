// One container: its bundle (config.json written from the host's grpc.Spec), crun lifecycle, processes.
import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from '../common/log.js';
import type { Device } from '../protocols/gen/agent_pb.js';
import type { OciMount, OciNamespace, OciProcess, OciResources, OciSpec } from '../protocols/oci-spec.js';
import { stringifyOciJson } from '../protocols/oci-spec.js';
import { type CgroupRef, cgroupOf, oomEventsFile, oomKillCount } from './cgroups.js';
import { ConsoleSocket, type Crun } from './crun.js';
import { invalidArgument } from './errors.js';
import { setWindowSize } from './native.js';
import { ContainerProcess } from './process.js';
import {
  SafePathError,
  checkContainerPath,
  inKataDir,
  isWithin,
  pinUnder,
  resolveExistingUnder,
} from './safe-path.js';
import { PipeIo, type ProcessIo, TtyIo, closeQuietly } from './stdio.js';

export type ContainerStatus = 'created' | 'running' | 'paused' | 'stopped';

/** Namespaces of the sandbox's first container that later containers join. */
export interface SharedNamespaces {
  ipc?: string;
  uts?: string;
  pid?: string;
}

export interface PrepareContext {
  containerId: string;
  /** Allowed root for the rootfs and bind mount sources (the guest's /run/kata-containers). */
  kataRunDir: string;
  shared: SharedNamespaces;
  /** Whether the guest kernel has AppArmor / SELinux (labels are dropped otherwise). */
  apparmor: boolean;
  selinux: boolean;
  log: Logger;
}

/** Guest directories a bind mount may name besides the Kata directory (devices, proc and sys files). */
const SYSTEM_BIND_ROOTS = ['/dev', '/proc', '/sys'];

function isBind(m: OciMount): boolean {
  return m.type === 'bind' || (m.options ?? []).some((o) => o === 'bind' || o === 'rbind');
}

/** Turns a systemd-style "slice:prefix:name" into a cgroupfs path; checks a plain one. */
export function normalizeCgroupsPath(p: string | undefined, containerId: string): string {
  if (!p) return `/kata_agent/${containerId}`;
  let out = p;
  if (!p.startsWith('/') && p.split(':').length === 3) {
    const [slice, prefix, name] = p.split(':') as [string, string, string];
    out = `/${slice || 'system.slice'}/${prefix ? `${prefix}-` : ''}${name}`;
  }
  if (!out.startsWith('/')) out = `/${out}`;
  if (out.split('/').includes('..') || out.includes('\0')) {
    throw new SafePathError(`cgroups path ${JSON.stringify(p)} contains '..'`);
  }
  return out;
}

/**
 * Rewrites the host's spec for this guest: rootfs and bind sources checked under the
 * allowed root, namespaces the host cannot meaningfully name replaced by the agent's choice, cgroups
 * path normalized, labels dropped when the guest cannot enforce them.
 */
export function prepareSpec(input: OciSpec, ctx: PrepareContext): OciSpec {
  const spec: OciSpec = structuredClone(input);
  if (!spec.process) throw invalidArgument(`container ${ctx.containerId}: the OCI spec has no process`);
  if (!spec.process.cwd) spec.process.cwd = '/';
  if (!spec.root?.path) throw invalidArgument(`container ${ctx.containerId}: the OCI spec has no root path`);
  const rootfs = resolveExistingUnder(
    ctx.kataRunDir,
    inKataDir(ctx.kataRunDir, spec.root.path),
    'container rootfs',
  );
  if (!fs.statSync(rootfs).isDirectory())
    throw new SafePathError(`container rootfs ${spec.root.path} is not a directory`);
  spec.root.path = rootfs;

  for (const m of spec.mounts ?? []) {
    checkContainerPath(m.destination, 'mount destination');
    if (!isBind(m)) continue;
    if (!m.source) throw new SafePathError(`bind mount on ${m.destination} has no source`);
    m.source = inKataDir(ctx.kataRunDir, m.source);
    // Host volumes arrive through the share (under the Kata directory); binds of the guest's own /dev,
    // /proc and /sys are passed through by the runtime as upstream does. Nothing else may be bound.
    const what = `source of the bind mount on ${m.destination}`;
    const root = [ctx.kataRunDir, ...SYSTEM_BIND_ROOTS].find((r) => isWithin(r, m.source ?? ''));
    if (!root) {
      throw new SafePathError(
        `${what} ${m.source} is not under ${ctx.kataRunDir} (nor ${SYSTEM_BIND_ROOTS.join(', ')})`,
      );
    }
    // The kernel's own view of the opened source decides; crun gets the physical path (it cannot
    // bind a /proc/<pid>/fd path: that mount lives in the agent's mount namespace, not crun's).
    const pin = pinUnder(root, m.source, what);
    m.source = pin.realPath;
    pin.close();
  }

  if (!spec.linux) spec.linux = {};
  const linux = spec.linux;
  const wanted = new Set((linux.namespaces ?? []).map((n) => n.type));
  // The guest's network is the sandbox's; host paths of namespaces mean nothing here.
  const ns: OciNamespace[] = [];
  for (const type of ['mount', 'ipc', 'uts', 'cgroup', 'user']) {
    if (type !== 'mount' && !wanted.has(type)) continue;
    const shared = type === 'ipc' ? ctx.shared.ipc : type === 'uts' ? ctx.shared.uts : undefined;
    ns.push(shared ? { type, path: shared } : { type });
  }
  ns.push(ctx.shared.pid ? { type: 'pid', path: ctx.shared.pid } : { type: 'pid' });
  linux.namespaces = ns;
  linux.cgroupsPath = normalizeCgroupsPath(linux.cgroupsPath, ctx.containerId);
  if (!ctx.apparmor) spec.process.apparmorProfile = undefined;
  if (!ctx.selinux) {
    spec.process.selinuxLabel = undefined;
    linux.mountLabel = undefined;
  }
  return spec;
}

/** Points the spec's devices at the guest's device nodes for devices the host hotplugged. */
export function applyDevices(spec: OciSpec, devices: readonly Device[], log: Logger): void {
  for (const d of devices) {
    if (!d.containerPath) continue;
    if (!d.vmPath.startsWith('/dev/')) {
      log.warn(
        { device: d.id, type: d.type, vm_path: d.vmPath },
        'device without a guest /dev path: not mapped',
      );
      continue;
    }
    let st: fs.Stats;
    try {
      st = fs.statSync(d.vmPath);
    } catch (e) {
      throw invalidArgument(
        `device ${d.id}: ${d.vmPath} is not present in the guest: ${(e as Error).message}`,
      );
    }
    const major = Math.floor(st.rdev / 256) & 0xfff;
    const minor = (st.rdev & 0xff) | ((st.rdev >> 12) & 0xfff00);
    const entry = spec.linux?.devices?.find((x) => x.path === d.containerPath);
    if (entry) {
      entry.major = major;
      entry.minor = minor;
    }
  }
}

export interface ContainerDeps {
  crun: Crun;
  log: Logger;
}

let fileSeq = 0;

export class Container {
  status: ContainerStatus = 'created';
  readonly processes = new Map<string, ContainerProcess>();
  init!: ContainerProcess;
  cgroup: CgroupRef = { v1: {} };
  private oomTimer: NodeJS.Timeout | undefined;
  private oomWatch: fs.FSWatcher | undefined;
  private oomSeen = 0;

  private constructor(
    readonly id: string,
    readonly bundle: string,
    readonly spec: OciSpec,
    readonly storages: string[],
    private readonly deps: ContainerDeps,
  ) {}

  /**
   * Writes the bundle and runs `crun create`. On failure nothing is left behind (the caller still owns
   * `storages` and releases them).
   */
  static async create(
    id: string,
    bundle: string,
    spec: OciSpec,
    storages: string[],
    deps: ContainerDeps,
  ): Promise<Container> {
    const c = new Container(id, bundle, spec, storages, deps);
    fs.mkdirSync(bundle, { recursive: true, mode: 0o700 });
    try {
      fs.writeFileSync(path.join(bundle, 'config.json'), stringifyOciJson(spec, 2), { mode: 0o600 });
      const pidFile = path.join(bundle, 'init.pid');
      const { io, pid } = await c.launch(spec.process!, pidFile, (o) => deps.crun.create(id, bundle, o));
      c.init = new ContainerProcess(id, '', pid, io, true, deps.log);
      try {
        c.cgroup = cgroupOf(pid);
      } catch (e) {
        deps.log.warn({ err: e, pid }, 'cannot read the container cgroup');
      }
      void c.init.exited.then(() => {
        c.status = 'stopped';
        c.stopOomWatch();
      });
      return c;
    } catch (e) {
      if (deps.crun.exists(id))
        await deps.crun
          .delete(id, true)
          .catch((de: unknown) =>
            deps.log.error({ err: de, container_id: id }, 'deleting the half-created container failed'),
          );
      fs.rmSync(bundle, { recursive: true, force: true });
      throw e;
    }
  }

  /** Runs a crun create/exec with the right stdio; returns the process's io and pid. */
  private async launch(
    proc: OciProcess,
    pidFile: string,
    run: (o: {
      pidFile: string;
      stdio: [number, number, number] | 'ignore';
      consoleSocket?: string;
    }) => Promise<void>,
  ): Promise<{ io: ProcessIo; pid: number }> {
    fs.rmSync(pidFile, { force: true });
    if (proc.terminal) {
      const sock = ConsoleSocket.listen(path.join(this.bundle, `console-${++fileSeq}.sock`));
      let master = -1;
      try {
        const launched = run({ pidFile, stdio: 'ignore', consoleSocket: sock.path });
        master = await sock.receive(launched);
        await launched;
        if (proc.consoleSize) setWindowSize(master, proc.consoleSize.height, proc.consoleSize.width);
        const io = new TtyIo(master);
        master = -1;
        return { io, pid: readPidFile(pidFile) };
      } finally {
        if (master >= 0) closeQuietly(master);
        sock.close();
      }
    }
    const io = new PipeIo();
    try {
      await run({ pidFile, stdio: io.childFds! });
      io.closeChildFds();
      return { io, pid: readPidFile(pidFile) };
    } catch (e) {
      io.destroy();
      throw e;
    }
  }

  async start(): Promise<void> {
    await this.deps.crun.start(this.id);
    this.status = 'running';
  }

  /** Starts an exec'd process (crun exec --detach) with its own stdio. */
  async exec(execId: string, proc: OciProcess): Promise<ContainerProcess> {
    const n = ++fileSeq;
    const file = path.join(this.bundle, `exec-${n}.json`);
    const pidFile = path.join(this.bundle, `exec-${n}.pid`);
    fs.writeFileSync(file, stringifyOciJson(proc), { mode: 0o600 });
    try {
      const { io, pid } = await this.launch(proc, pidFile, (o) => this.deps.crun.exec(this.id, file, o));
      const p = new ContainerProcess(this.id, execId, pid, io, false, this.deps.log);
      this.processes.set(execId, p);
      return p;
    } finally {
      fs.rmSync(file, { force: true });
      fs.rmSync(pidFile, { force: true });
    }
  }

  async update(resources: OciResources): Promise<void> {
    const file = path.join(this.bundle, `resources-${++fileSeq}.json`);
    fs.writeFileSync(file, stringifyOciJson(resources), { mode: 0o600 });
    try {
      await this.deps.crun.update(this.id, file);
      if (this.spec.linux) this.spec.linux.resources = { ...this.spec.linux.resources, ...resources };
    } finally {
      fs.rmSync(file, { force: true });
    }
  }

  async pause(): Promise<void> {
    await this.deps.crun.pause(this.id);
    this.status = 'paused';
  }

  async resume(): Promise<void> {
    await this.deps.crun.resume(this.id);
    this.status = 'running';
  }

  /** SIGKILL to every process in the container (exec_id "" with SIGKILL means "all"). */
  async killAll(signal: number): Promise<void> {
    if (this.init.hasExited && this.processes.size === 0) return;
    try {
      await this.deps.crun.kill(this.id, signal, true);
    } catch (e) {
      if (!this.init.hasExited) throw e;
      // the container is stopped; crun refuses --all then, so signal the stragglers directly
      for (const p of this.processes.values()) p.signal(signal);
    }
  }

  /** Watches the cgroup's OOM-kill counter; calls onOom for each increase. */
  startOomWatch(onOom: () => void): void {
    if (this.oomTimer) return;
    this.oomSeen = oomKillCount(this.cgroup);
    const check = () => {
      const n = oomKillCount(this.cgroup);
      if (n > this.oomSeen) {
        this.oomSeen = n;
        onOom();
      }
    };
    const file = oomEventsFile(this.cgroup);
    if (file) {
      try {
        this.oomWatch = fs.watch(file, check); // cgroup v2 notifies modifications of memory.events
        this.oomWatch.on('error', () => {});
        this.oomWatch.unref();
      } catch {
        // polling below still catches it
      }
    }
    this.oomTimer = setInterval(check, 1000);
    this.oomTimer.unref();
  }

  stopOomWatch(): void {
    clearInterval(this.oomTimer);
    this.oomTimer = undefined;
    this.oomWatch?.close();
    this.oomWatch = undefined;
  }

  /**
   * Kills what still runs, waits (bounded) for it to be reaped, deletes the crun container and the
   * bundle, and releases every stdio stream.
   */
  async destroy(timeoutMs: number): Promise<void> {
    await this.stopProcesses(timeoutMs);
    if (this.deps.crun.exists(this.id)) await this.deps.crun.delete(this.id, true);
    for (const p of [this.init, ...this.processes.values()]) p.destroy();
    this.processes.clear();
    this.status = 'stopped';
    fs.rmSync(this.bundle, { recursive: true, force: true });
  }

  /** SIGKILLs every process of the container still running and waits (up to timeoutMs) for their exits. */
  async stopProcesses(timeoutMs: number): Promise<void> {
    this.stopOomWatch();
    if (this.status === 'paused') {
      // frozen tasks do not die from SIGKILL under cgroup v1's freezer: thaw first
      await this.resume().catch((e) => this.deps.log.warn({ err: e }, 'resuming before delete failed'));
    }
    const all = [this.init, ...this.processes.values()];
    if (all.some((p) => !p.hasExited)) {
      await this.killAll(9).catch((e) => this.deps.log.warn({ err: e }, 'kill before delete failed'));
      const done = Promise.all(all.map((p) => p.exited));
      let timer: NodeJS.Timeout | undefined;
      const timedOut = await Promise.race([
        done.then(() => false),
        new Promise<boolean>((r) => {
          timer = setTimeout(() => r(true), timeoutMs);
        }),
      ]);
      clearTimeout(timer);
      if (timedOut)
        this.deps.log.warn({ container_id: this.id }, 'processes still running after SIGKILL; going on');
    }
  }
}

function readPidFile(file: string): number {
  const text = fs.readFileSync(file, 'utf8').trim();
  const pid = Number(text);
  if (!Number.isInteger(pid) || pid <= 0)
    throw new Error(`pid file ${file} holds ${JSON.stringify(text)}, not a pid`);
  return pid;
}
