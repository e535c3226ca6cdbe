// One process of a container (exec id "" is the container's init): its stdio, status and exit.
import type { Logger } from '../common/log.js';
import { sleep } from '../common/poll.js';
import type { AgentClient } from './agent.js';
import { errorMessage } from './errors.js';
import { ProcessIo, type StdioPaths } from './io.js';
import type { OciProcess } from './oci.js';

export type ProcessStatus = 'created' | 'running' | 'stopped';

export interface ExitInfo {
  exitStatus: number;
  exitedAt: Date;
}

/** containerd's "unknown" exit status: the process's fate could not be learnt (VM died, agent lost). */
export const UNKNOWN_EXIT_STATUS = 255;
/** How long to keep copying output after the process exited (a daemonized child may hold the pipe open). */
const OUTPUT_GRACE_MS = 10_000;

export class ContainerProcess {
  status: ProcessStatus = 'created';
  /** Host pid containerd sees; like Kata, the VMM's pid (the real process lives in the guest). */
  pid = 0;
  exit: ExitInfo | undefined;
  readonly exited: Promise<ExitInfo>;
  private resolveExited!: (e: ExitInfo) => void;
  private io: ProcessIo | undefined;

  constructor(
    readonly containerId: string,
    readonly execId: string,
    readonly stdio: StdioPaths,
    private readonly log: Logger,
    /** The OCI process of an exec (the init's is in the container spec). */
    readonly spec?: OciProcess,
  ) {
    this.exited = new Promise((r) => {
      this.resolveExited = r;
    });
  }

  get isInit(): boolean {
    return this.execId === '';
  }

  /** Opens containerd's FIFOs; fails (naming the path) before anything runs in the guest. */
  async openIo(): Promise<void> {
    this.io = await ProcessIo.open(this.stdio, this.containerId, this.execId, this.log);
  }

  /** The process runs in the guest: start copying stdio and wait for its exit. */
  started(agent: AgentClient, pid: number, onExit: (p: ContainerProcess, e: ExitInfo) => void): void {
    this.status = 'running';
    this.pid = pid;
    this.io?.start(agent);
    void this.watch(agent, onExit);
  }

  async closeStdin(): Promise<void> {
    await this.io?.closeStdin();
  }

  /** Records an exit learnt elsewhere (VM died); no-op if the exit is known already. */
  markExited(exitStatus: number, onExit?: (p: ContainerProcess, e: ExitInfo) => void): void {
    if (this.exit) return;
    const e = { exitStatus, exitedAt: new Date() };
    this.exit = e;
    this.status = 'stopped';
    this.resolveExited(e);
    onExit?.(this, e);
  }

  async release(): Promise<void> {
    await this.io?.close();
  }

  private async watch(agent: AgentClient, onExit: (p: ContainerProcess, e: ExitInfo) => void): Promise<void> {
    let status = UNKNOWN_EXIT_STATUS;
    try {
      status = (await agent.waitProcess({ containerId: this.containerId, execId: this.execId })).status;
    } catch (e) {
      this.log.warn(
        { exec_id: this.execId, err: errorMessage(e) },
        'WaitProcess failed; exit status unknown',
      );
    }
    // containerd's Wait must not return before the output reached the FIFOs.
    if (this.io) {
      const settled = new AbortController();
      const late = await Promise.race([
        this.io.outputDone().then(() => false),
        sleep(OUTPUT_GRACE_MS, settled.signal).then(
          () => true,
          () => false,
        ),
      ]);
      settled.abort();
      if (late)
        this.log.warn(
          { exec_id: this.execId },
          'output still open after the process exited; not waiting longer',
        );
    }
    this.markExited(status < 0 ? UNKNOWN_EXIT_STATUS : status, onExit);
  }
}
