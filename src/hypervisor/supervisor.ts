// A child process we supervise directly (QEMU, virtiofsd): no daemonizing, so its death is seen at once and
// the error the caller gets can carry the tail of what it printed on stderr.
import { type ChildProcess, spawn } from 'node:child_process';
import type { Logger } from '../common/log.js';

export interface ChildExit {
  code: number | null;
  signal: string | null;
  /** Last bytes the child wrote to stderr (and stdout). */
  stderrTail: string;
  /** Set when the child could not be started at all (ENOENT, EACCES, ...). */
  spawnError?: string;
  /** Set for a process that is not our child (adopted.ts): it went, but its status was its parent's to see. */
  statusUnknown?: boolean;
}

/** A VMM process we watch and stop: our child (SupervisedChild) or one we took over (adopted.ts). */
export interface WatchedProcess {
  readonly pid: number | undefined;
  readonly running: boolean;
  readonly exited: Promise<ChildExit>;
  stderrTail(): string;
  /** SIGTERM (unless `skipTerm`), wait up to `graceMs`, then SIGKILL and wait for the exit. */
  terminate(graceMs: number, skipTerm?: boolean): Promise<ChildExit>;
}

const DEFAULT_TAIL_BYTES = 4096;

/** Keeps only the last `max` bytes written to it. */
export class TailBuffer {
  private buf: Buffer = Buffer.alloc(0);
  constructor(private readonly max = DEFAULT_TAIL_BYTES) {}

  push(chunk: Buffer): void {
    const joined = Buffer.concat([this.buf, chunk]);
    this.buf = joined.length > this.max ? joined.subarray(joined.length - this.max) : joined;
  }

  toString(): string {
    return this.buf.toString('utf8');
  }
}

export interface SpawnOptions {
  log: Logger;
  env?: NodeJS.ProcessEnv;
  tailBytes?: number;
  /** Host fds the child gets as fd 3, 4, ... (tap fds for cold-plugged NICs). */
  extraFds?: readonly number[];
  /**
   * An open file for the child's stdout and stderr instead of pipes, in its own session: a child meant to
   * outlive us (a VM parked in the VM cache) must not write into a pipe nobody reads once we are gone.
   */
  detachedOutput?: number;
}

export class SupervisedChild implements WatchedProcess {
  readonly exited: Promise<ChildExit>;
  private readonly child: ChildProcess;
  private readonly tail: TailBuffer;
  private exitInfo: ChildExit | undefined;

  private constructor(
    readonly name: string,
    readonly command: string,
    readonly args: readonly string[],
    opts: SpawnOptions,
  ) {
    this.tail = new TailBuffer(opts.tailBytes);
    const log = opts.log;
    const out = opts.detachedOutput ?? 'pipe';
    this.child = spawn(command, args, {
      stdio: ['ignore', out, out, ...(opts.extraFds ?? [])],
      env: opts.env ?? process.env,
      detached: opts.detachedOutput !== undefined,
    });
    const onOutput = (stream: 'stdout' | 'stderr') => (chunk: Buffer) => {
      this.tail.push(chunk);
      for (const line of chunk.toString('utf8').split('\n')) {
        if (line.trim() !== '') log.debug({ child: name, stream }, line.trimEnd());
      }
    };
    this.child.stdout?.on('data', onOutput('stdout'));
    this.child.stderr?.on('data', onOutput('stderr'));

    this.exited = new Promise<ChildExit>((resolve) => {
      let spawnError: string | undefined;
      const finish = (code: number | null, signal: string | null) => {
        if (this.exitInfo) return;
        this.exitInfo = { code, signal, stderrTail: this.tail.toString(), spawnError };
        log.debug({ child: name, pid: this.child.pid, code, signal }, `${name} exited`);
        resolve(this.exitInfo);
      };
      this.child.on('error', (err) => {
        // 'error' without a pid means the exec itself failed; no 'exit' follows.
        spawnError = `${err.message}`;
        if (this.child.pid === undefined) finish(null, null);
      });
      this.child.on('exit', (code, signal) => {
        // Give the pipes a moment to drain so the tail holds the last words (e.g. QEMU's error line).
        const timer = setTimeout(() => finish(code, signal), 300);
        this.child.once('close', () => {
          clearTimeout(timer);
          finish(code, signal);
        });
      });
    });
  }

  static spawn(name: string, command: string, args: readonly string[], opts: SpawnOptions): SupervisedChild {
    return new SupervisedChild(name, command, args, opts);
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get running(): boolean {
    return this.exitInfo === undefined && this.child.pid !== undefined;
  }

  stderrTail(): string {
    return this.tail.toString();
  }

  /** Lets this process end without waiting for the child (which then outlives it). */
  unref(): void {
    this.child.unref();
  }

  signal(sig: NodeJS.Signals): void {
    if (this.running) this.child.kill(sig);
  }

  /** SIGTERM (unless `skipTerm`), wait up to `graceMs`, then SIGKILL and wait for the exit. */
  async terminate(graceMs: number, skipTerm = false): Promise<ChildExit> {
    if (!this.running) return this.exited;
    if (!skipTerm) this.signal('SIGTERM');
    const exited = await waitFor(this.exited, graceMs);
    if (exited) return exited;
    this.signal('SIGKILL');
    return this.exited;
  }
}

/** Resolves with the promise's value, or undefined after `ms`. */
export async function waitFor<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** A short human description of how a child ended, for error messages. */
export function describeExit(name: string, e: ChildExit): string {
  if (e.spawnError) return `${name} could not be started: ${e.spawnError}`;
  if (e.signal) return `${name} was killed by ${e.signal}`;
  if (e.statusUnknown) return `${name} exited (not our child: its exit status is not ours to see)`;
  return `${name} exited with code ${e.code}`;
}

/** The tail formatted for inclusion in an error message. */
export function formatTail(label: string, tail: string): string {
  const t = tail.trim();
  return t === '' ? '' : `\n--- ${label} (tail) ---\n${t}`;
}
