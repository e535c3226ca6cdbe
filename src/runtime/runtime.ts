// One shim's runtime: the sandbox it serves (created with its first container) and the task operations on it.
// The shim's Task service is a thin layer over this class.
import type { Logger } from '../common/log.js';
import type { KataConfig } from '../config/types.js';
import type { StatsContainerResponse } from '../protocols/gen/agent_pb.js';
import type { RootfsMount, RuntimeDeps } from './deps.js';
import { RuntimeError, errorMessage, withContext } from './errors.js';
import type { StdioPaths } from './io.js';
import type { OciProcess, OciResources, OciSpec } from './oci.js';
import type { ContainerProcess, ExitInfo } from './process.js';
import { Sandbox, type SandboxEvents } from './sandbox.js';

export interface RuntimeOptions {
  /** The shim's -id: the sandbox id (the first container's id, or the pod's sandbox id). */
  sandboxId: string;
  namespace: string;
  deps: RuntimeDeps;
  log: Logger;
  events: SandboxEvents;
}

export interface CreateRequest {
  id: string;
  bundle: string;
  spec: OciSpec;
  rootfs: RootfsMount[];
  stdio: StdioPaths;
  /** runtimeoptions ConfigPath (`ctr run --runtime-config-path`). */
  configPath?: string;
}

export interface ProcessState {
  id: string;
  execId: string;
  bundle: string;
  pid: number;
  status: 'created' | 'running' | 'paused' | 'stopped';
  stdio: StdioPaths;
  exit?: ExitInfo;
}

export class Runtime {
  private sandbox: Sandbox | undefined;
  private starting: Promise<Sandbox> | undefined;
  /** Serializes Create: the second container of a pod waits for the sandbox the first one starts. */
  private createChain: Promise<unknown> = Promise.resolve();

  constructor(private readonly o: RuntimeOptions) {}

  get containerCount(): number {
    return this.sandbox?.containers.size ?? 0;
  }

  get sandboxPid(): number {
    return this.sandbox?.pid ?? 0;
  }

  create(req: CreateRequest): Promise<{ pid: number }> {
    const run = this.createChain.catch(() => {}).then(() => this.doCreate(req));
    this.createChain = run;
    return run;
  }

  private async doCreate(req: CreateRequest): Promise<{ pid: number }> {
    let sb = this.sandbox;
    let fresh = false;
    if (!sb || sb.status === 'stopped' || sb.status === 'stopping') {
      sb = await this.startSandbox(req);
      fresh = true;
    }
    try {
      const c = await sb.createContainer(req);
      return { pid: c.init.pid };
    } catch (e) {
      if (fresh) {
        // The sandbox existed only for this container: nothing may be left behind.
        await this.stopSandbox().catch((err: unknown) =>
          this.o.log.error({ err: errorMessage(err) }, 'stopping the sandbox after a failed create'),
        );
      }
      throw e;
    }
  }

  private async startSandbox(req: CreateRequest): Promise<Sandbox> {
    const annotations = req.spec.annotations ?? {};
    let config: KataConfig;
    try {
      config = this.o.deps.loadConfig({ configPath: req.configPath, annotations });
    } catch (e) {
      throw withContext(e, 'loading the Kata configuration');
    }
    // Number(): the spec's integers may be bigints (exact int64); sizing needs only doubles.
    const limit = Number(req.spec.linux?.resources?.memory?.limit ?? 0);
    const cpu = req.spec.linux?.resources?.cpu;
    const quota = Number(cpu?.quota ?? 0);
    const period = Number(cpu?.period ?? 0);
    const cpus = quota > 0 && period ? quota / period : 0;
    this.starting = Sandbox.start({
      id: this.o.sandboxId,
      namespace: this.o.namespace,
      bundle: req.bundle,
      hostname: req.spec.hostname ?? '',
      config,
      deps: this.o.deps,
      log: this.o.log,
      events: this.o.events,
      staticResources: { memoryBytes: limit > 0 ? limit : 0, cpus },
    });
    try {
      this.sandbox = await this.starting;
    } finally {
      this.starting = undefined;
    }
    return this.sandbox;
  }

  private sb(): Sandbox {
    if (!this.sandbox) throw new RuntimeError('NotFound', 'container not created');
    return this.sandbox;
  }

  start(id: string, execId: string): Promise<ContainerProcess> {
    return this.sb().start(id, execId);
  }

  state(id: string, execId: string): ProcessState {
    const c = this.sb().container(id);
    const p = c.process(execId);
    const status = p.status === 'stopped' ? 'stopped' : c.paused ? 'paused' : p.status;
    return { id: execId || id, execId, bundle: c.bundle, pid: p.pid, status, stdio: p.stdio, exit: p.exit };
  }

  exec(id: string, execId: string, spec: OciProcess, stdio: StdioPaths): void {
    this.sb().exec(id, execId, spec, stdio);
  }

  kill(id: string, execId: string, signal: number, all: boolean): Promise<void> {
    return this.sb().kill(id, execId, signal, all);
  }

  closeIo(id: string, execId: string): Promise<void> {
    return this.sb().closeIo(id, execId);
  }

  resizePty(id: string, execId: string, width: number, height: number): Promise<void> {
    return this.sb().resizePty(id, execId, width, height);
  }

  update(id: string, resources: OciResources): Promise<void> {
    return this.sb().update(id, resources);
  }

  pause(id: string): Promise<void> {
    return this.sb().pause(id);
  }

  resume(id: string): Promise<void> {
    return this.sb().resume(id);
  }

  stats(id: string): Promise<StatsContainerResponse> {
    return this.sb().stats(id);
  }

  /** The process's exit, once it happened (and its output reached the FIFOs). */
  wait(id: string, execId: string): Promise<ExitInfo> {
    return this.sb().container(id).process(execId).exited;
  }

  pids(id: string): { pid: number; execIds: string[] } {
    const c = this.sb().container(id);
    return { pid: this.sandboxPid, execIds: [...c.execs.keys()] };
  }

  containerPid(id: string): number {
    try {
      return this.sb().container(id).init.pid;
    } catch {
      return 0;
    }
  }

  async delete(id: string, execId: string): Promise<{ pid: number; exit: ExitInfo }> {
    const sb = this.sb();
    const res = await sb.delete(id, execId);
    // The sandbox container going (or the last container) ends the sandbox, as Kata does.
    if (!execId && (id === sb.id || sb.containers.size === 0)) await this.stopSandbox();
    return res;
  }

  /** Stops the sandbox (if any); idempotent. */
  async stopSandbox(): Promise<void> {
    const sb = this.sandbox ?? (this.starting ? await this.starting.catch(() => undefined) : undefined);
    if (!sb) return;
    try {
      await sb.stop();
    } finally {
      if (this.sandbox === sb) this.sandbox = undefined;
    }
  }
}
