// One container of the sandbox: its bundle and spec, its init process and its execs, and the agent calls that
// act on it. containerd's rules on states (kill a finished process, delete a running one) are enforced here.
import type { Logger } from '../common/log.js';
import type { AgentClient } from './agent.js';
import type { RootfsMount } from './deps.js';
import { RuntimeError, alreadyExists, failedPrecondition, notFound } from './errors.js';
import type { StdioPaths } from './io.js';
import { type OciProcess, type OciResources, type OciSpec, toGrpcProcess, toGrpcResources } from './oci.js';
import { ContainerProcess, type ExitInfo, UNKNOWN_EXIT_STATUS } from './process.js';

export type ContainerStatus = 'created' | 'running' | 'paused' | 'stopped';

export type ExitListener = (p: ContainerProcess, e: ExitInfo) => void;

/** containerd's view of one process (Task State). */
export interface ProcessState {
  id: string;
  execId: string;
  bundle: string;
  pid: number;
  status: ContainerStatus;
  stdio: StdioPaths;
  exit?: ExitInfo;
}

export class Container {
  readonly init: ContainerProcess;
  readonly execs = new Map<string, ContainerProcess>();
  paused = false;
  /** True once prepareContainer mounted the rootfs (so delete knows to release it). */
  rootfsMounted = false;

  constructor(
    readonly id: string,
    readonly bundle: string,
    readonly spec: OciSpec,
    readonly rootfs: RootfsMount[],
    stdio: StdioPaths,
    readonly log: Logger,
  ) {
    this.init = new ContainerProcess(id, '', stdio, log);
  }

  get status(): ContainerStatus {
    if (this.init.status === 'stopped') return 'stopped';
    if (this.paused) return 'paused';
    return this.init.status;
  }

  process(execId: string): ContainerProcess {
    if (!execId) return this.init;
    const p = this.execs.get(execId);
    if (!p) throw notFound(`process ${execId} does not exist in container ${this.id}`);
    return p;
  }

  processState(execId: string): ProcessState {
    const p = this.process(execId);
    const status = p.status === 'stopped' ? 'stopped' : this.paused ? 'paused' : p.status;
    return {
      id: execId || this.id,
      execId,
      bundle: this.bundle,
      pid: p.pid,
      status,
      stdio: p.stdio,
      exit: p.exit,
    };
  }

  /** Every process still tracked (init first). */
  all(): ContainerProcess[] {
    return [this.init, ...this.execs.values()];
  }

  async start(
    agent: AgentClient,
    execId: string,
    pid: number,
    onExit: ExitListener,
  ): Promise<ContainerProcess> {
    const p = this.process(execId);
    if (p.status !== 'created') {
      throw failedPrecondition(`${describe(p)} is ${p.status}, it can only be started once`);
    }
    if (p.isInit) {
      await agent.startContainer({ containerId: this.id });
    } else {
      if (this.status !== 'running')
        throw failedPrecondition(`container ${this.id} is ${this.status}; cannot start exec ${execId}`);
      try {
        await agent.execProcess({ containerId: this.id, execId, process: toGrpcProcess(p.spec ?? {}) });
      } catch (e) {
        // An exec that never ran has finished: containerd follows a failed Start with Wait, Kill and Delete
        // (CRI's ExecSync does), and a Wait that never returns stalls it until its one-minute deadline.
        // runc's shim ends the wait the same way; no exit event, as with runc.
        p.markExited(UNKNOWN_EXIT_STATUS);
        throw e;
      }
    }
    p.started(agent, pid, onExit);
    return p;
  }

  async addExec(execId: string, spec: OciProcess, stdio: StdioPaths): Promise<ContainerProcess> {
    if (!execId) throw new RuntimeError('InvalidArgument', `exec in container ${this.id} needs an exec id`);
    this.checkExecAllowed(execId);
    if (!spec.args?.length)
      throw new RuntimeError('InvalidArgument', `exec ${execId} in container ${this.id} has no args`);
    const p = new ContainerProcess(this.id, execId, stdio, this.log.child({ exec_id: execId }), {
      ...spec,
      terminal: stdio.terminal,
    });
    await p.openIo();
    // Checked again: an Exec of the same id, or the container's exit, may have come while the FIFOs opened.
    try {
      this.checkExecAllowed(execId);
    } catch (e) {
      await p.release();
      throw e;
    }
    this.execs.set(execId, p);
    return p;
  }

  private checkExecAllowed(execId: string): void {
    if (this.execs.has(execId)) throw alreadyExists(`exec ${execId} already exists in container ${this.id}`);
    if (this.status === 'stopped')
      throw failedPrecondition(`container ${this.id} is stopped; cannot exec ${execId}`);
  }

  /**
   * The one place that decides "already finished": a stopped process, or any process once its VM is gone
   * (`agent.gone` says why), is NotFound "process already finished", as runc answers containerd.
   */
  async kill(
    agent: AgentClient | { gone: string },
    execId: string,
    signal: number,
    all: boolean,
  ): Promise<void> {
    const p = this.process(execId);
    if (p.status === 'stopped') throw notFound(`${describe(p)}: process already finished`);
    if ('gone' in agent) throw notFound(`${describe(p)}: process already finished (${agent.gone})`);
    // `all` widens a kill of the init to the execs; an exec's kill (containerd sends all for WithProcessKill)
    // is that exec's alone, as in runc's shim.
    await agent.signalProcess({ containerId: this.id, execId, signal });
    if (all && !execId) {
      // The agent signals the init; the execs get the signal too, as runc's kill --all does.
      for (const e of this.execs.values()) {
        if (e.status !== 'running') continue;
        await agent
          .signalProcess({ containerId: this.id, execId: e.execId, signal })
          .catch((err: unknown) => {
            this.log.debug({ exec_id: e.execId, err: String(err) }, 'signal exec (kill all)');
          });
      }
    }
  }

  async resizePty(agent: AgentClient, execId: string, width: number, height: number): Promise<void> {
    const p = this.process(execId);
    if (!p.stdio.terminal) throw failedPrecondition(`${describe(p)} has no terminal`);
    if (p.status !== 'running') return; // containerd resizes right after start; a finished process has no tty
    await agent.ttyWinResize({ containerId: this.id, execId, row: height, column: width });
  }

  async update(agent: AgentClient, resources: OciResources): Promise<void> {
    if (this.status === 'stopped') throw failedPrecondition(`container ${this.id} is stopped`);
    await agent.updateContainer({ containerId: this.id, resources: toGrpcResources(resources) });
  }

  async pause(agent: AgentClient): Promise<void> {
    if (this.status !== 'running')
      throw failedPrecondition(`container ${this.id} is ${this.status}; only a running one can be paused`);
    await agent.pauseContainer({ containerId: this.id });
    this.paused = true;
  }

  async resume(agent: AgentClient): Promise<void> {
    if (this.status !== 'paused')
      throw failedPrecondition(`container ${this.id} is ${this.status}, not paused`);
    await agent.resumeContainer({ containerId: this.id });
    this.paused = false;
  }

  /** Forgets a finished exec; returns its exit. */
  async deleteExec(execId: string): Promise<{ pid: number; exit: ExitInfo }> {
    const p = this.process(execId);
    if (p.status === 'running')
      throw failedPrecondition(`${describe(p)} is running; kill it before deleting`);
    this.execs.delete(execId);
    await p.release();
    return { pid: p.pid, exit: p.exit ?? { exitStatus: 0, exitedAt: new Date() } };
  }
}

export function describe(p: ContainerProcess): string {
  return p.isInit ? `container ${p.containerId}` : `exec ${p.execId} in container ${p.containerId}`;
}
