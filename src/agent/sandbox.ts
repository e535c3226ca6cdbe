// The sandbox as the agent holds it: containers by id, sandbox storages, shared namespaces, OOM events.
// Every container RPC lands here after service.ts decoded it.
import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from '../common/log.js';
import type {
  CreateContainerRequest,
  CreateSandboxRequest,
  ExecProcessRequest,
  Storage,
} from '../protocols/gen/agent_pb.js';
import type { LinuxResources } from '../protocols/gen/oci_pb.js';
import { processFromGrpc, resourcesFromGrpc, specFromGrpc } from '../protocols/oci-spec.js';
import { Container, type SharedNamespaces, applyDevices, prepareSpec } from './container.js';
import type { Crun } from './crun.js';
import { alreadyExists, failedPrecondition, invalidArgument, notFound } from './errors.js';
import type { ContainerProcess } from './process.js';
import { checkId } from './safe-path.js';
import type { StorageManager } from './storage.js';

export interface SandboxDeps {
  crun: Crun;
  storage: StorageManager;
  log: Logger;
  /** Bundles live under <stateDir>/containers. */
  stateDir: string;
  kataRunDir: string;
}

const SIGKILL = 9;
const SIGTERM = 15;

export class Sandbox {
  id = '';
  hostname = '';
  sandboxPidns = false;
  private sandboxStorages: string[] = [];
  readonly containers = new Map<string, Container>();
  /** Ids being created or removed right now (the RPCs are async; a second call must not race). */
  private readonly busy = new Set<string>();
  private shared: SharedNamespaces = {};
  private nsHolder: ContainerProcess | undefined;
  private readonly oomQueue: string[] = [];
  private readonly oomWaiters: ((cid: string) => void)[] = [];
  private readonly apparmor: boolean;
  private readonly selinux: boolean;

  constructor(private readonly deps: SandboxDeps) {
    this.apparmor = readTrimmed('/sys/module/apparmor/parameters/enabled') === 'Y';
    this.selinux = fs.existsSync('/sys/fs/selinux/enforce');
  }

  async createSandbox(req: CreateSandboxRequest): Promise<void> {
    if (req.sandboxId) checkId(req.sandboxId, 'sandbox id');
    this.id = req.sandboxId;
    this.hostname = req.hostname;
    this.sandboxPidns = req.sandboxPidns;
    const added = await this.deps.storage.add(req.storages);
    this.sandboxStorages.push(...added);
  }

  async addSandboxStorages(storages: readonly Storage[]): Promise<void> {
    this.sandboxStorages.push(...(await this.deps.storage.add(storages)));
  }

  container(cid: string): Container {
    const c = this.containers.get(cid);
    if (!c) throw notFound(`container ${JSON.stringify(cid)} not found`);
    return c;
  }

  /** exec_id "" is the container's init process. */
  process(cid: string, execId: string): ContainerProcess {
    const c = this.container(cid);
    if (execId === '' || execId === cid) return c.init;
    const p = c.processes.get(execId);
    if (!p) throw notFound(`process ${JSON.stringify(execId)} of container ${cid} not found`);
    return p;
  }

  async createContainer(req: CreateContainerRequest): Promise<void> {
    const cid = req.containerId;
    try {
      checkId(cid);
    } catch (e) {
      throw invalidArgument((e as Error).message);
    }
    if (this.containers.has(cid) || this.busy.has(cid))
      throw alreadyExists(`container ${cid} already exists`);
    if (!req.OCI) throw invalidArgument(`container ${cid}: the request carries no OCI spec`);
    const log = this.deps.log.child({ container_id: cid });
    this.busy.add(cid);
    try {
      const raw = specFromGrpc(req.OCI);
      if (!raw.process) throw invalidArgument(`container ${cid}: the OCI spec has no process`);
      if (!raw.root?.path) throw invalidArgument(`container ${cid}: the OCI spec has no root path`);
      const storages = await this.deps.storage.add(req.storages);
      try {
        const holder = this.nsHolder && !this.nsHolder.hasExited ? this.nsHolder : undefined;
        const usePidns = req.sandboxPidns || this.sandboxPidns;
        const shared: SharedNamespaces = holder
          ? {
              ipc: `/proc/${holder.pid}/ns/ipc`,
              uts: `/proc/${holder.pid}/ns/uts`,
              pid: usePidns ? `/proc/${holder.pid}/ns/pid` : undefined,
            }
          : {};
        const spec = prepareSpec(raw, {
          containerId: cid,
          kataRunDir: this.deps.kataRunDir,
          shared,
          apparmor: this.apparmor,
          selinux: this.selinux,
          log,
        });
        applyDevices(spec, req.devices, log);
        const bundle = path.join(this.deps.stateDir, 'containers', cid);
        const c = await Container.create(cid, bundle, spec, storages, { crun: this.deps.crun, log });
        this.containers.set(cid, c);
        if (!holder) this.nsHolder = c.init;
        log.info({ pid: c.init.pid, bundle }, 'container created');
      } catch (e) {
        this.deps.storage.release(storages);
        throw e;
      }
    } finally {
      this.busy.delete(cid);
    }
  }

  async startContainer(cid: string): Promise<void> {
    const c = this.container(cid);
    if (c.status !== 'created') throw failedPrecondition(`container ${cid} is ${c.status}, not created`);
    if (c.init.hasExited) throw failedPrecondition(`container ${cid} has already exited`);
    await c.start();
    if (cid !== this.id) c.startOomWatch(() => this.pushOom(cid));
  }

  async execProcess(req: ExecProcessRequest): Promise<void> {
    const c = this.container(req.containerId);
    if (!req.execId) throw invalidArgument(`exec in container ${c.id}: empty exec id`);
    if (c.processes.has(req.execId))
      throw alreadyExists(`process ${req.execId} already exists in container ${c.id}`);
    if (!req.process) throw invalidArgument(`exec ${req.execId} in container ${c.id}: no process given`);
    if (req.process.Args.length === 0)
      throw invalidArgument(`exec ${req.execId} in container ${c.id}: no command`);
    if (c.status !== 'running' || c.init.hasExited) {
      throw failedPrecondition(
        `cannot exec in container ${c.id}: it is ${c.init.hasExited ? 'stopped' : c.status}`,
      );
    }
    const proc = processFromGrpc(req.process);
    if (!proc.cwd) proc.cwd = '/';
    await c.exec(req.execId, proc);
  }

  async signalProcess(cid: string, execId: string, signal: number): Promise<void> {
    if (!Number.isInteger(signal) || signal < 0 || signal > 64) {
      throw invalidArgument(`signal ${signal} is not a valid signal number`);
    }
    const c = this.container(cid);
    if (execId === '' && signal === SIGKILL) {
      await c.killAll(SIGKILL);
      return;
    }
    const p = this.process(cid, execId);
    let sig = signal;
    // A pid-namespace init ignores signals it has no handler for; SIGTERM must still stop it.
    if (p.init && sig === SIGTERM && !p.handlesSignal(SIGTERM)) sig = SIGKILL;
    p.signal(sig);
  }

  async waitProcess(cid: string, execId: string): Promise<number> {
    const p = this.process(cid, execId);
    const s = await p.exited;
    const c = this.containers.get(cid);
    p.retire(() => {
      if (!p.init && c?.processes.get(p.execId) === p) c.processes.delete(p.execId);
    });
    return s.exitCode;
  }

  async updateContainer(cid: string, resources: LinuxResources | undefined): Promise<void> {
    const c = this.container(cid);
    if (!resources) return;
    await c.update(resourcesFromGrpc(resources));
  }

  async removeContainer(cid: string, timeoutSec: number): Promise<void> {
    const c = this.container(cid);
    if (this.busy.has(cid)) throw failedPrecondition(`container ${cid} is being created or removed`);
    this.busy.add(cid);
    try {
      await c.destroy(timeoutSec > 0 ? timeoutSec * 1000 : 10_000);
      this.containers.delete(cid);
      if (this.nsHolder === c.init) this.nsHolder = undefined;
      this.deps.storage.release(c.storages);
    } finally {
      this.busy.delete(cid);
    }
  }

  pushOom(cid: string): void {
    this.deps.log.warn({ container_id: cid }, 'OOM kill in container');
    const w = this.oomWaiters.shift();
    if (w) w(cid);
    else this.oomQueue.push(cid);
  }

  /** The next container that had an OOM kill, waiting for one if none is queued. */
  nextOom(signal?: AbortSignal): Promise<string> {
    const queued = this.oomQueue.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    return new Promise((resolve, reject) => {
      const w = (cid: string) => {
        signal?.removeEventListener('abort', onAbort);
        resolve(cid);
      };
      const onAbort = () => {
        const i = this.oomWaiters.indexOf(w);
        if (i >= 0) this.oomWaiters.splice(i, 1);
        reject(signal?.reason as Error);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.oomWaiters.push(w);
    });
  }

  /**
   * Before the VM powers off: every container's processes killed. No crun delete and no unmounts: the guest goes
   * as a whole, and skipping them spares the teardown a crun run per container under TCG.
   */
  async stopForPowerOff(): Promise<void> {
    await Promise.all(
      [...this.containers.values()].map((c) =>
        c
          .stopProcesses(5000)
          .catch((e: unknown) =>
            this.deps.log.error({ err: e, container_id: c.id }, 'stopping container before power-off failed'),
          ),
      ),
    );
  }

  /** Removes every container (in reverse creation order) and the sandbox storages. */
  async destroyAll(): Promise<void> {
    for (const cid of [...this.containers.keys()].reverse()) {
      try {
        await this.removeContainer(cid, 10);
      } catch (e) {
        this.deps.log.error(
          { err: e, container_id: cid },
          'removing container during sandbox teardown failed',
        );
      }
    }
    this.deps.storage.release(this.sandboxStorages.splice(0));
  }
}

function readTrimmed(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8').trim();
  } catch {
    return undefined;
  }
}
