// One shim's runtime: the lifecycle of the sandbox it serves. The first Create starts it (configuration from the
// runtime options and annotations, sizing from the first container), Creates are serialized so a pod's second
// container waits for it, and the sandbox container's Delete (or the last one's) stops it.
import type { Logger } from '../common/log.js';
import type { KataConfig } from '../config/types.js';
import type { RootfsMount, RuntimeDeps } from './deps.js';
import { RuntimeError, errorMessage, withContext } from './errors.js';
import type { StdioPaths } from './io.js';
import type { OciSpec } from './oci.js';
import type { ExitInfo } from './process.js';
import { specNetnsPath } from './sandbox-network.js';
import type { SandboxEvents } from './sandbox-options.js';
import { Sandbox } from './sandbox.js';

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

export class Runtime {
  private current: Sandbox | undefined;
  private starting: Promise<Sandbox> | undefined;
  /** Serializes Create: the second container of a pod waits for the sandbox the first one starts. */
  private createChain: Promise<unknown> = Promise.resolve();

  constructor(private readonly o: RuntimeOptions) {}

  get containerCount(): number {
    return this.current?.containers.size ?? 0;
  }

  get sandboxPid(): number {
    return this.current?.pid ?? 0;
  }

  create(req: CreateRequest): Promise<{ pid: number }> {
    const run = this.createChain.catch(() => {}).then(() => this.doCreate(req));
    this.createChain = run;
    return run;
  }

  private async doCreate(req: CreateRequest): Promise<{ pid: number }> {
    let sb = this.current;
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
    const shmBytes = await this.o.deps.podShmBytes?.(req.spec);
    this.starting = Sandbox.start({
      id: this.o.sandboxId,
      namespace: this.o.namespace,
      bundle: req.bundle,
      hostname: req.spec.hostname ?? '',
      config,
      configPath: req.configPath,
      deps: this.o.deps,
      log: this.o.log,
      events: this.o.events,
      staticResources: { memoryBytes: limit > 0 ? limit : 0, cpus },
      netnsPath: specNetnsPath(req.spec),
      shmBytes,
      cgroupsPath: req.spec.linux?.cgroupsPath,
    });
    try {
      this.current = await this.starting;
    } finally {
      this.starting = undefined;
    }
    return this.current;
  }

  /**
   * The sandbox that serves task requests; NotFound before the first Create. Per-process operations go to it
   * directly: this class owns only the sandbox's lifecycle (started by the first Create, stopped by the last
   * Delete or Shutdown).
   */
  sandbox(): Sandbox {
    if (!this.current) throw new RuntimeError('NotFound', 'container not created');
    return this.current;
  }

  containerPid(id: string): number {
    try {
      return this.sandbox().container(id).init.pid;
    } catch {
      return 0;
    }
  }

  async delete(id: string, execId: string): Promise<{ pid: number; exit: ExitInfo }> {
    const sb = this.sandbox();
    // The sandbox container going (or the last container) ends the sandbox, as Kata does.
    const ends = !execId && (id === sb.id || (sb.containers.size === 1 && sb.containers.has(id)));
    const res = await sb.delete(id, execId, { sandboxEnds: ends });
    if (ends || (!execId && sb.status === 'stopped')) await this.stopSandbox();
    return res;
  }

  /** Stops the sandbox (if any); idempotent. */
  async stopSandbox(): Promise<void> {
    const sb = this.current ?? (this.starting ? await this.starting.catch(() => undefined) : undefined);
    if (!sb) return;
    try {
      await sb.stop();
    } finally {
      // Stopped containers stay deletable (State, Wait, Delete) until containerd deletes the last one.
      if (this.current === sb && sb.containers.size === 0) this.current = undefined;
    }
  }
}
