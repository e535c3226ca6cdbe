// One process of a container (its init, exec_id "", or an exec'd one): pid, stdio, exit status.
import fs from 'node:fs';
import type { Logger } from '../common/log.js';
import { type ExitStatus, waitForExit } from './reaper.js';
import type { ProcessIo } from './stdio.js';

/** After WaitProcess, unread output is kept this long for the host to drain, then dropped. */
const RETIRE_GRACE_MS = 30_000;

export class ContainerProcess {
  private status: ExitStatus | undefined;
  readonly exited: Promise<ExitStatus>;
  /** Set once WaitProcess returned its status. */
  waited = false;
  private retireTimer: NodeJS.Timeout | undefined;
  private destroyed = false;

  constructor(
    readonly containerId: string,
    readonly execId: string,
    readonly pid: number,
    readonly io: ProcessIo,
    readonly init: boolean,
    private readonly log: Logger,
  ) {
    this.exited = waitForExit(pid).then(
      (s) => {
        this.status = s;
        this.io.processExited();
        this.log.info({ pid, exec_id: execId, exit_code: s.exitCode }, 'process exited');
        return s;
      },
      (e: Error) => {
        // Not our child: we cannot learn its status. Report 255 as containerd does for unknown ones.
        this.log.error({ err: e, pid, exec_id: execId }, 'cannot wait for process');
        const s = { exitCode: 255, signal: null };
        this.status = s;
        this.io.processExited();
        return s;
      },
    );
  }

  get exitStatus(): ExitStatus | undefined {
    return this.status;
  }

  get hasExited(): boolean {
    return this.status !== undefined;
  }

  /** Sends a signal unless the process is known to be gone (its pid may already be reused). */
  signal(sig: number): void {
    if (this.hasExited) return;
    try {
      process.kill(this.pid, sig);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw e;
    }
  }

  /** Whether the process catches, blocks or ignores `sig` (a pid-namespace init ignores unhandled ones). */
  handlesSignal(sig: number): boolean {
    let text: string;
    try {
      text = fs.readFileSync(`/proc/${this.pid}/status`, 'utf8');
    } catch {
      return false;
    }
    const bit = 1n << BigInt(sig - 1);
    for (const line of text.split('\n')) {
      const m = /^(SigBlk|SigIgn|SigCgt):\s*([0-9a-f]+)/.exec(line);
      if (m && (BigInt(`0x${m[2]}`) & bit) !== 0n) return true;
    }
    return false;
  }

  /**
   * Called after WaitProcess: stdin is closed; output stays readable until the host has read EOF or a
   * grace period passed, then everything is released. `onGone` runs once released.
   */
  retire(onGone: () => void): void {
    this.waited = true;
    this.io.closeStdin();
    const check = () => {
      if (this.destroyed) return;
      if (this.io.stdout.drained && this.io.stderr.drained) {
        this.destroy();
        onGone();
      }
    };
    if (!this.retireTimer) {
      this.retireTimer = setTimeout(() => {
        this.destroy();
        onGone();
      }, RETIRE_GRACE_MS);
      this.retireTimer.unref();
    }
    check();
    this.afterRead = check;
  }

  /** Hook run after each read reached EOF (set by retire). */
  afterRead: (() => void) | undefined;

  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    clearTimeout(this.retireTimer);
    this.io.destroy();
  }

  get isDestroyed(): boolean {
    return this.destroyed;
  }
}
