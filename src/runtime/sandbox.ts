// A sandbox: one VM (hypervisor + virtio-fs share + agent connection) and the containers running in it.
// Start order: persist → shared fs → VM → agent → CreateSandbox; any failure undoes what was done, in reverse.
import type { Logger } from '../common/log.js';
import type { KataConfig } from '../config/types.js';
import type { Hypervisor, VmConfig, VmExit } from '../hypervisor/hypervisor.js';
import type { ProcessIdentity } from '../hypervisor/proc.js';
import type { StatsContainerResponse } from '../protocols/gen/agent_pb.js';
import type { NetworkRecord } from '../resource/network/index.js';
import { DEFAULT_SHM_BYTES } from '../resource/volumes.js';
import { watchSandboxAgent } from './agent-watchdog.js';
import type { AgentClient, AgentConnection } from './agent.js';
import { createInGuest } from './container-create.js';
import { Container, type ExitListener, type ProcessState } from './container.js';
import type { PersistedSandbox, SandboxCgroupHandle, SharedFsHandle } from './deps.js';
import { RuntimeError, alreadyExists, attempts, errorMessage, notFound, withContext } from './errors.js';
import { renewClone, templateRequest } from './factory.js';
import type { StdioPaths } from './io.js';
import type { OciProcess, OciResources } from './oci.js';
import { type ContainerProcess, type ExitInfo, UNKNOWN_EXIT_STATUS } from './process.js';
import { joinSandboxCgroup } from './sandbox-cgroup.js';
import { SandboxNetwork, internetworkingModel } from './sandbox-network.js';
import type { CreateContainerRequest, SandboxOptions, SandboxStatus } from './sandbox-options.js';
import { SandboxSizer } from './sandbox-sizing.js';
import { StateWriter, sandboxSnapshot } from './sandbox-state.js';
import { releaseSandboxResources } from './sandbox-teardown.js';
import {
  createSandboxRequest,
  describeVmExit,
  guestConsoleTail,
  sandboxRunDir,
  sandboxVmConfig,
} from './vm-config.js';

const VM_START_TIMEOUT_MS = 60_000;

/** Logs a start-up milestone; bench/startup.ts reads these lines (field `phase`) from the shim log. */
export function phase(log: Logger, name: string, fields: Record<string, unknown> = {}): void {
  log.info({ phase: name, t: Date.now(), ...fields }, `phase ${name}`);
}

export class Sandbox {
  status: SandboxStatus = 'starting';
  readonly containers = new Map<string, Container>();
  private hv: Hypervisor | undefined;
  private fs: SharedFsHandle | undefined;
  private cgroup: SandboxCgroupHandle | undefined;
  private conn: AgentConnection | undefined;
  private net: SandboxNetwork | undefined;
  /** Set with static_sandbox_resource_mgmt = false: the VM grows and shrinks with its containers' limits. */
  private sizer: SandboxSizer | undefined;
  private netRecord: NetworkRecord | undefined;
  private cgroupPath: string | undefined;
  private stopping: Promise<void> | undefined;
  /** Why the VM exited on its own (set before the stop it causes). */
  private vmGone: string | undefined;
  private readonly stateWriter: StateWriter;
  private shim: ProcessIdentity | undefined;
  /** Aborted when the sandbox stops: ends background waits (the OOM watch's retry pause). */
  private readonly stopped = new AbortController();
  private readonly createdAt = new Date().toISOString();
  private readonly log: Logger;
  private readonly onExit: ExitListener;

  private constructor(private readonly o: SandboxOptions) {
    this.log = o.log;
    this.stateWriter = new StateWriter((s) => o.deps.saveState(s));
    this.onExit = (p, e) => {
      if (p.isInit)
        phase(this.log.child({ container_id: p.containerId }), 'exit_seen', { exit_status: e.exitStatus });
      this.persistSoon();
      o.events.exit(p, e);
    };
  }

  get id(): string {
    return this.o.id;
  }

  get config(): KataConfig {
    return this.o.config;
  }

  /** The pid containerd sees for every process: the VMM's (the processes themselves live in the guest). */
  get pid(): number {
    return this.hv?.getPids()[0] ?? 0;
  }

  private get agent(): AgentClient {
    if (!this.conn || this.status !== 'running') {
      throw new RuntimeError(
        'FailedPrecondition',
        `sandbox ${this.id} is ${this.status}; its agent cannot be reached`,
      );
    }
    return this.conn.agent;
  }

  static async start(o: SandboxOptions): Promise<Sandbox> {
    const sb = new Sandbox(o);
    try {
      await sb.boot();
    } catch (e) {
      sb.log.error({ err: errorMessage(e) }, 'sandbox start failed; cleaning up');
      await sb
        .stop()
        .catch((err: unknown) => sb.log.error({ err: errorMessage(err) }, 'cleanup after failed start'));
      throw withContext(e, `starting sandbox ${o.id}`);
    }
    return sb;
  }

  private async boot(): Promise<void> {
    const { config, deps, id } = this.o;
    this.shim = await deps.processes?.identify(process.pid);
    // Persist first: if this process dies half-way, `shim delete` finds what to undo.
    await this.persistNow('created');
    this.fs = deps.sharedFs(id);
    await this.fs.setup();

    this.hv = deps.createHypervisor(config, this.log);
    const vm: VmConfig = {
      ...sandboxVmConfig({
        sandboxId: id,
        config,
        hostSharedDir: this.fs.hostSharedDir,
        staticResources: this.o.staticResources,
        // The hypervisor persists through us before it creates anything on the host (run dir, processes, ...).
        persistState: () => this.persistNow(this.status === 'running' ? 'running' : 'created'),
      }),
      template: templateRequest(config),
    };
    await this.hv.prepareVm(vm);
    await this.setupNetwork();
    await this.hv.startVm(VM_START_TIMEOUT_MS);
    phase(this.log, 'vm_launched', { pids: this.hv.getPids() });
    if (deps.sandboxCgroup)
      this.cgroup = await joinSandboxCgroup({
        make: deps.sandboxCgroup,
        sandboxId: id,
        cgroupsPath: this.o.cgroupsPath,
        pids: this.hv.getPids(),
        record: async (p) => {
          this.cgroupPath = p;
          if (p) await this.persistNow('created');
        },
        log: this.log,
      });

    // Stop waiting for the agent as soon as the VMM dies (bad kernel, QEMU error): the error says why.
    const vmGone = new AbortController();
    const runDir = sandboxRunDir(id);
    void this.hv.exited.then(async (exit) =>
      vmGone.abort(new Error(`the VM exited: ${describeVmExit(exit)}${await guestConsoleTail(runDir)}`)),
    );
    this.conn = await deps.connectAgent(this.hv.agentEndpoint(), {
      timeoutMs: config.agent.dial_timeout * 1000,
      log: this.log,
      signal: vmGone.signal,
    });
    const origin = this.hv.origin();
    if (origin !== 'boot') await renewClone(this.conn.agent, this.log);
    phase(this.log, 'agent_ready', { from: origin });
    this.status = 'running';
    await this.agent.createSandbox(
      createSandboxRequest(
        config,
        id,
        this.o.hostname,
        this.fs.guestStorage(),
        this.o.shmBytes ?? DEFAULT_SHM_BYTES,
      ),
    );
    phase(this.log, 'sandbox_created');
    // A VM taken from the cache is replaced now, in the background (after this sandbox's own first steps).
    if (origin === 'cache') deps.refillVmCache?.(config, this.o.configPath, this.log);
    if (this.net?.size) {
      await this.net.configureGuest(this.agent, this.stopped.signal);
      phase(this.log, 'network_configured');
    }
    this.sizer = SandboxSizer.forSandbox(config, this.hv, () => this.agent, vm, this.log);
    await this.persistNow('running');
    void this.hv.exited.then((exit) => this.onVmExit(exit));
    watchSandboxAgent(this.conn, {
      timeoutMs: config.agent.health_check_request_timeout_ms,
      signal: this.stopped.signal,
      onOom: (cid) => this.o.events.oom(cid),
      onDead: (reason) => this.onVmGone(reason),
      log: this.log,
    });
  }

  /** The pod netns's interfaces as NICs on QEMU's command line (before boot). */
  private async setupNetwork(): Promise<void> {
    if (!this.o.netnsPath || !this.hv) return;
    this.net = await SandboxNetwork.forSandbox(this.o.netnsPath, this.config, this.o.deps.network, {
      log: this.log.child({ component: 'network' }),
      persist: (r) => {
        this.netRecord = r;
        return this.persistNow('created');
      },
    });
    await this.net.plug(this.hv.nicSink());
  }

  container(id: string): Container {
    const c = this.containers.get(id);
    if (!c) throw notFound(`container ${id} does not exist in sandbox ${this.id}`);
    return c;
  }

  async createContainer(req: CreateContainerRequest): Promise<Container> {
    if (this.containers.has(req.id))
      throw alreadyExists(`container ${req.id} already exists in sandbox ${this.id}`);
    const c = new Container(
      req.id,
      req.bundle,
      req.spec,
      req.rootfs,
      req.stdio,
      this.log.child({ container_id: req.id }),
    );
    this.containers.set(req.id, c);
    try {
      // Before CreateContainer, as Kata: the container's cgroup can then use what was added for it.
      await this.sizer?.resize(req.id, req.spec.linux?.resources);
      await createInGuest(c, {
        agent: this.agent,
        fs: this.fs!,
        config: this.config,
        persist: () => this.persistNow('running'),
      });
    } catch (e) {
      this.containers.delete(req.id);
      this.persistSoon();
      this.shrinkFor(req.id);
      throw withContext(e, `creating container ${req.id}`);
    }
    c.init.pid = this.pid;
    phase(c.log, 'container_created');
    return c;
  }

  async start(containerId: string, execId: string): Promise<ContainerProcess> {
    const c = this.container(containerId);
    // Kata's rescan: interfaces a caller added to the netns after Create (Docker 26+) join before the pod runs.
    if (containerId === this.id && !execId && this.hv)
      await this.net?.rescanAtStart(this.hv, this.agent, this.stopped.signal);
    const p = await c.start(this.agent, execId, this.pid, this.onExit);
    if (!execId) phase(this.log.child({ container_id: containerId }), 'container_started');
    this.persistSoon();
    return p;
  }

  exec(containerId: string, execId: string, spec: OciProcess, stdio: StdioPaths): Promise<ContainerProcess> {
    return this.container(containerId).addExec(execId, spec, stdio);
  }

  /**
   * Signals a process. This layer decides only whether the VM can be reached: once it is gone (stopping or
   * stopped) no process can be running any more, and the container says so the way runc does (NotFound).
   */
  async kill(containerId: string, execId: string, signal: number, all: boolean): Promise<void> {
    const c = this.container(containerId);
    const vm =
      this.status === 'running' ? this.agent : { gone: `the VM of sandbox ${this.id} is ${this.status}` };
    await c.kill(vm, execId, signal, all);
  }

  /** containerd's view of one process (State). */
  processState(containerId: string, execId: string): ProcessState {
    return this.container(containerId).processState(execId);
  }

  /** The process's exit, once it happened (and its output reached the FIFOs). */
  wait(containerId: string, execId: string): Promise<ExitInfo> {
    return this.container(containerId).process(execId).exited;
  }

  async closeIo(containerId: string, execId: string): Promise<void> {
    await this.container(containerId).process(execId).closeStdin();
  }

  async resizePty(containerId: string, execId: string, width: number, height: number): Promise<void> {
    await this.container(containerId).resizePty(this.agent, execId, width, height);
  }

  async update(containerId: string, resources: OciResources): Promise<void> {
    const c = this.container(containerId);
    await this.sizer?.resize(containerId, resources);
    await c.update(this.agent, resources);
  }

  /** A container gone: its share of the VM goes too (vCPUs; memory stays). Never fails the caller. */
  private shrinkFor(containerId: string): void {
    this.sizer
      ?.resize(containerId, undefined)
      .catch((e: unknown) =>
        this.log.warn({ err: errorMessage(e), container_id: containerId }, 'shrinking the VM'),
      );
  }

  async pause(containerId: string): Promise<void> {
    await this.container(containerId).pause(this.agent);
    this.persistSoon();
  }

  async resume(containerId: string): Promise<void> {
    await this.container(containerId).resume(this.agent);
    this.persistSoon();
  }

  async stats(containerId: string): Promise<StatsContainerResponse> {
    const c = this.container(containerId);
    if (c.status === 'stopped')
      throw new RuntimeError('FailedPrecondition', `container ${containerId} is stopped`);
    return this.agent.statsContainer({ containerId });
  }

  /**
   * Deletes a finished process. For a container's init, the container goes too: removed in the guest, its
   * rootfs unmounted on the host. With `sandboxEnds` (the sandbox stops next) the guest is not asked:
   * DestroySandbox ends every container at once. Returns what containerd reports (pid, exit status, time).
   */
  async delete(
    containerId: string,
    execId: string,
    { sandboxEnds = false } = {},
  ): Promise<{ pid: number; exit: ExitInfo }> {
    const c = this.container(containerId);
    if (execId) return c.deleteExec(execId);
    const status = c.status;
    const what = `container ${containerId} is ${status}; kill it before deleting`;
    if (status === 'running' || status === 'paused') throw new RuntimeError('FailedPrecondition', what);
    if (this.status === 'running' && !sandboxEnds) {
      await this.agent.removeContainer({ containerId, timeout: 0 }).catch((e: unknown) => {
        const log = this.log.child({ container_id: containerId });
        log.warn({ err: errorMessage(e) }, 'RemoveContainer failed; releasing the host side anyway');
      });
    }
    // A created-but-never-started init has no exit; containerd still expects one.
    if (!c.init.exit) c.init.markExited(status === 'created' ? 0 : UNKNOWN_EXIT_STATUS);
    for (const p of c.all()) await p.release();
    this.containers.delete(containerId);
    if (this.status === 'running') this.shrinkFor(containerId);
    if (c.rootfsMounted) {
      await this.fs?.releaseContainer(containerId, { bundle: c.bundle, rootfsMounted: true });
      c.rootfsMounted = false;
    }
    // A stopped sandbox has released everything and removed its state: writing it again would leave it behind.
    if (this.status === 'running' && !sandboxEnds) await this.persistNow('running');
    return { pid: c.init.pid, exit: c.init.exit! };
  }

  /** Stops the VM and releases every host resource; idempotent, safe at any point of start. */
  stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    const wasRunning = this.status === 'running';
    this.status = 'stopping';
    this.stopped.abort(new Error(`sandbox ${this.id} is stopping`));
    const { errors, run: attempt } = attempts();
    // A dead VM has no agent to tell: its containers simply exited.
    if (wasRunning && this.conn && !this.vmGone) {
      const agent = this.conn.agent;
      await attempt('DestroySandbox', () => agent.destroySandbox({}, { timeoutMs: 5000 }));
    }
    this.conn?.close();
    for (const c of this.containers.values()) {
      for (const p of c.all()) {
        p.markExited(UNKNOWN_EXIT_STATUS, this.onExit);
        await p.release();
      }
    }
    await releaseSandboxResources(
      { hv: this.hv, net: this.net, cgroup: this.cgroup, fs: this.fs, containers: this.containers.values() },
      attempt,
    );
    // The containers stay, stopped, until containerd deletes them: after a VM death containerd still asks for
    // their State, Wait and Delete (as for runc's processes killed under it).
    this.status = 'stopped';
    await this.stateWriter.settled();
    if (errors.length === 0) {
      await attempt('removing the persisted state', () => this.o.deps.removeState(this.id));
    } else {
      // Keep the state file: `shim delete` (or kata-ctl) can finish the job.
      await this.persistNow('stopped').catch((e: unknown) => {
        // Without it `shim delete` sees the last state written ('running') and still cleans up, so go on.
        errors.push(`writing the stopped state: ${(e as Error).message}`);
        this.log.error({ err: e }, 'writing the stopped sandbox state failed');
      });
    }
    phase(this.log, 'sandbox_stopped');
    if (errors.length > 0) throw new Error(`stopping sandbox ${this.id}: ${errors.join('; ')}`);
  }

  private onVmExit(exit: VmExit): void {
    if (this.status !== 'running') return;
    this.log.error({ reason: exit.reason, stderr: exit.stderrTail }, 'the VM exited unexpectedly');
    this.onVmGone(exit.reason);
  }

  /** The VM is dead or hung: its containers exit (255) and everything is released, without asking the agent. */
  private onVmGone(reason: string): void {
    if (this.status !== 'running') return;
    this.vmGone = reason;
    this.log.error({ reason }, 'the VM is gone; stopping the sandbox');
    void this.stop().catch((e: unknown) =>
      this.log.error({ err: errorMessage(e) }, 'cleanup after the VM died'),
    );
  }

  private persistNow(state: PersistedSandbox['state']): Promise<void> {
    return this.stateWriter.write(
      sandboxSnapshot({
        sandboxId: this.id,
        namespace: this.o.namespace,
        bundle: this.o.bundle,
        hypervisorName: this.config.hypervisorName,
        hv: this.hv,
        shim: this.shim,
        containers: [...this.containers.values()].map((c) => ({
          id: c.id,
          bundle: c.bundle,
          rootfsMounted: c.rootfsMounted,
        })),
        sharedFsRoot: this.fs?.hostSharedDir,
        createdAt: this.createdAt,
        state,
        network: this.netRecord,
        cgroupPath: this.cgroupPath,
      }),
    );
  }

  /** Persists in the background (state changes that must not fail the RPC). */
  private persistSoon(): void {
    if (this.status === 'stopping' || this.status === 'stopped') return;
    this.persistNow(this.status === 'running' ? 'running' : 'created').catch((e: unknown) =>
      this.log.warn({ err: errorMessage(e) }, 'persisting sandbox state failed'),
    );
  }
}
