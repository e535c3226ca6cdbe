// A process we take over rather than spawn: a VM parked in the VM cache by `kata-ctl factory fill`, whose
// parent has gone. We cannot wait for it, so its end is seen by polling its identity (pid + start time, so a
// recycled pid is never taken for it); its output went to a file, whose tail stands in for a stderr pipe.
import { readFileTail } from '../common/files.js';
import { type ProcessIdentity, isAlive } from './proc.js';
import { type ChildExit, type WatchedProcess, waitFor } from './supervisor.js';

const POLL_MS = 100;
/** Once its end is near (asked to stop, or its QMP socket closed): look this often for a while, so a stop is not slowed. */
const FAST_POLL_MS = 10;
const FAST_FOR_MS = 5000;
const TAIL_BYTES = 4096;

export class AdoptedProcess implements WatchedProcess {
  readonly exited: Promise<ChildExit>;
  private resolveExited!: (e: ChildExit) => void;
  private exitInfo: ChildExit | undefined;
  private timer: NodeJS.Timeout | undefined;
  private checking = false;
  /** Until when to look every FAST_POLL_MS. */
  private fastUntil = 0;

  constructor(
    readonly name: string,
    private readonly id: ProcessIdentity,
    /** Where the process writes its stdout and stderr. */
    private readonly outputFile: string,
  ) {
    this.exited = new Promise<ChildExit>((resolve) => {
      this.resolveExited = resolve;
    });
    this.schedule();
  }

  get pid(): number {
    return this.id.pid;
  }

  get running(): boolean {
    return this.exitInfo === undefined;
  }

  stderrTail(): string {
    return this.exitInfo?.stderrTail ?? '';
  }

  private schedule(): void {
    const ms = Date.now() < this.fastUntil ? FAST_POLL_MS : POLL_MS;
    // Unref'd: watching a process must not keep its watcher alive.
    this.timer = setTimeout(() => void this.look(), ms);
    this.timer.unref();
  }

  /** Looks now (a closed QMP socket says the VMM is going), then often until it is gone; else every POLL_MS. */
  async check(): Promise<void> {
    this.fastUntil = Date.now() + FAST_FOR_MS;
    return this.look();
  }

  private async look(): Promise<void> {
    if (this.exitInfo || this.checking) return;
    this.checking = true;
    clearTimeout(this.timer);
    try {
      if (await isAlive(this.id).catch(() => true)) return;
      const tail = await readFileTail(this.outputFile, TAIL_BYTES).catch(() => ({ text: '' }));
      this.exitInfo ??= { code: null, signal: null, stderrTail: tail.text, statusUnknown: true };
      this.resolveExited(this.exitInfo);
    } finally {
      this.checking = false;
      if (!this.exitInfo) this.schedule();
    }
  }

  private async signal(sig: NodeJS.Signals): Promise<void> {
    if (!(await isAlive(this.id))) return; // never signal a recycled pid
    try {
      process.kill(this.id.pid, sig);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
    }
  }

  async terminate(graceMs: number, skipTerm = false): Promise<ChildExit> {
    if (!this.running) return this.exited;
    void this.check(); // from now on look often
    if (!skipTerm) await this.signal('SIGTERM');
    const exited = await waitFor(this.exited, graceMs);
    if (exited) return exited;
    await this.signal('SIGKILL');
    return this.exited;
  }
}
