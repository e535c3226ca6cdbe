// A process's stdio as the host sees it through ReadStdout/ReadStderr/WriteStdin: output is buffered up to
// a limit (then the pipe is paused, so the process blocks instead of the agent growing), handed out in
// order exactly once, and EOF (an empty read) is reported only after everything written has been read.
import fs from 'node:fs';
import net from 'node:net';
import type { Readable, Writable } from 'node:stream';
import tty from 'node:tty';
import { setTtyWriterNonBlocking } from '../common/node-internals.js';
import { closeFd, dupFd, pipe, setPipeSize } from './native.js';

export interface OutputOptions {
  /** Pause the source above this many buffered bytes. */
  highWater?: number;
  /** Resume it below this many. */
  lowWater?: number;
  /**
   * After the process exited, a source that stays open but idle this long is treated as ended: a
   * background child may hold the pipe open forever (upstream uses the same bounded drain).
   */
  exitGraceMs?: number;
  /**
   * A waiting read whose size is not reached yet is answered this long after the first byte came, so one
   * answer carries many pipe chunks instead of one (each answer costs a round trip over the VM's channel).
   */
  coalesceMs?: number;
}

interface Waiter {
  max: number;
  resolve: (b: Buffer[]) => void;
  reject: (e: Error) => void;
  signal?: AbortSignal;
  onAbort?: () => void;
}

/** A read after EOF was already reported. */
export class StreamEofError extends Error {
  constructor() {
    super('EOF: the stream is closed and drained');
    this.name = 'StreamEofError';
  }
}

// A few answers of MAX_READ can be on their way to the host at once: buffer that much before pausing.
const DEFAULT_HIGH_WATER = 4 << 20;
const DEFAULT_READ = 32 << 10;
const MAX_READ = 1 << 20;
// A process's pipes hold this much (Linux's default is 64 KiB): a writer of big blocks then fills the pipe in
// one go and the agent drains it in several reads without a context switch between each. In a TCG guest every
// switch costs a TLB flush and retranslation, which made 64 KiB pipes the stdio bottleneck.
const PIPE_SIZE = 1 << 20;

/** One output stream of a process (stdout, stderr or the pty master). */
export class OutputStream {
  private chunks: Buffer[] = [];
  private size = 0;
  private ended = false;
  private paused = false;
  private exited = false;
  private idleTimer: NodeJS.Timeout | undefined;
  private coalesceTimer: NodeJS.Timeout | undefined;
  private readonly coalesceMs: number;
  private readonly waiters: Waiter[] = [];
  private readonly high: number;
  private readonly low: number;
  private readonly graceMs: number;
  /** True once a reader was told EOF (nothing more will ever come). */
  private eofReported = false;
  /** Why the source ended abnormally, if it did (EIO on a pty is normal). */
  error: Error | undefined;

  constructor(
    private readonly source: Readable | null,
    opts: OutputOptions = {},
  ) {
    this.high = opts.highWater ?? DEFAULT_HIGH_WATER;
    this.low = opts.lowWater ?? Math.floor(this.high / 2);
    this.graceMs = opts.exitGraceMs ?? 500;
    this.coalesceMs = opts.coalesceMs ?? 1;
    if (!source) {
      this.ended = true; // nothing will ever come (a terminal's stderr)
      return;
    }
    source.on('data', (c: Buffer) => this.onData(c));
    source.on('end', () => this.finish());
    source.on('close', () => this.finish());
    source.on('error', (e: NodeJS.ErrnoException) => {
      // A pty master reads EIO once every slave fd is closed: that is its EOF.
      if (e.code !== 'EIO') this.error = e;
      this.finish();
    });
  }

  /**
   * Whether the host has everything: EOF was reported (or there never was a source). Used to decide
   * when a finished process's streams can be released.
   */
  get drained(): boolean {
    return this.ended && this.size === 0 && (this.eofReported || !this.source);
  }

  /** Bytes buffered in the agent (not counting the kernel pipe). */
  get buffered(): number {
    return this.size;
  }

  get isPaused(): boolean {
    return this.paused;
  }

  /**
   * Up to `max` bytes (default 32 KiB), waiting for data if none is buffered. EOF is an empty buffer,
   * as upstream's agent answers (both Kata runtimes take a zero-length read as EOF); reads after that
   * reject with StreamEofError, for callers that wait for an error status instead. A read canceled
   * through `signal` consumes nothing.
   */
  read(max = DEFAULT_READ, signal?: AbortSignal): Promise<Buffer> {
    return this.readChunks(max, signal).then((parts) =>
      parts.length === 1 ? parts[0]! : Buffer.concat(parts),
    );
  }

  /** As read(), but the bytes as the pieces they arrived in (no copy); EOF is an empty list. */
  readChunks(max = DEFAULT_READ, signal?: AbortSignal): Promise<Buffer[]> {
    const n = Math.min(max > 0 ? max : DEFAULT_READ, MAX_READ);
    if (this.waiters.length === 0) {
      if (this.size > 0) return Promise.resolve(this.take(n));
      if (this.ended) return this.eof();
    }
    if (signal?.aborted) return Promise.reject(signal.reason as Error);
    return new Promise((resolve, reject) => {
      const w: Waiter = { max: n, resolve, reject, signal };
      if (signal) {
        w.onAbort = () => {
          const i = this.waiters.indexOf(w);
          if (i >= 0) this.waiters.splice(i, 1);
          reject(signal.reason as Error);
        };
        signal.addEventListener('abort', w.onAbort, { once: true });
      }
      this.waiters.push(w);
    });
  }

  /** The process exited: start the bounded wait for a source that never closes. */
  processExited(): void {
    this.exited = true;
    this.armIdle();
  }

  /** Drops buffered output and closes the source; pending readers get EOF. */
  destroy(): void {
    this.chunks = [];
    this.size = 0;
    this.source?.destroy();
    this.finish();
  }

  private eof(): Promise<Buffer[]> {
    if (!this.eofReported) {
      this.eofReported = true;
      return Promise.resolve([]);
    }
    return Promise.reject(new StreamEofError());
  }

  private onData(c: Buffer): void {
    if (c.length === 0) return;
    this.chunks.push(c);
    this.size += c.length;
    const first = this.waiters[0];
    if (first && this.size < first.max && this.size <= this.high && this.coalesceMs > 0) {
      this.coalesceTimer ??= setTimeout(() => {
        this.coalesceTimer = undefined;
        this.serve();
      }, this.coalesceMs);
    } else {
      this.serve();
    }
    if (this.size > this.high && !this.paused) {
      this.paused = true;
      this.source?.pause();
      clearTimeout(this.idleTimer);
    }
    this.armIdle();
  }

  private finish(): void {
    if (this.ended) return;
    this.ended = true;
    clearTimeout(this.idleTimer);
    this.serve();
  }

  private serve(): void {
    clearTimeout(this.coalesceTimer);
    this.coalesceTimer = undefined;
    while (this.waiters.length > 0 && (this.size > 0 || this.ended)) {
      const w = this.waiters.shift()!;
      if (w.onAbort) w.signal?.removeEventListener('abort', w.onAbort);
      if (this.size > 0) w.resolve(this.take(w.max));
      else {
        this.eofReported = true;
        w.resolve([]);
      }
    }
  }

  private take(max: number): Buffer[] {
    const parts: Buffer[] = [];
    let n = 0;
    while (this.chunks.length > 0 && n < max) {
      const c = this.chunks[0]!;
      if (n + c.length > max) {
        parts.push(c.subarray(0, max - n));
        this.chunks[0] = c.subarray(max - n);
        n = max;
      } else {
        parts.push(this.chunks.shift()!);
        n += c.length;
      }
    }
    this.size -= n;
    if (this.paused && this.size <= this.low && !this.ended) {
      this.paused = false;
      this.source?.resume();
      this.armIdle();
    }
    return parts;
  }

  private armIdle(): void {
    clearTimeout(this.idleTimer);
    if (!this.exited || this.ended || this.paused || !this.source) return;
    this.idleTimer = setTimeout(() => {
      this.source?.destroy();
      this.finish();
    }, this.graceMs);
    this.idleTimer.unref();
  }
}

/** A process's stdin: writes resolve once the data is handed to the kernel (back-pressure to the host). */
export class InputStream {
  private closed = false;
  private failure: Error | undefined;

  constructor(private readonly sink: Writable) {
    sink.on('error', (e) => {
      this.failure = e;
    });
  }

  get isClosed(): boolean {
    return this.closed;
  }

  write(data: Uint8Array): Promise<number> {
    if (this.closed) return Promise.reject(new Error('stdin is closed'));
    if (this.failure) return Promise.reject(new Error(`stdin failed: ${this.failure.message}`));
    if (data.length === 0) return Promise.resolve(0);
    return new Promise((resolve, reject) => {
      this.sink.write(Buffer.from(data.buffer, data.byteOffset, data.byteLength), (err) =>
        err ? reject(new Error(`writing stdin: ${err.message}`)) : resolve(data.length),
      );
    });
  }

  /** Closes our end; the process reads EOF once it has consumed what was written. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.sink.end();
  }

  destroy(): void {
    this.closed = true;
    this.sink.destroy();
  }
}

/** The agent's ends of a process's stdio, and the fds to give the process (via crun). */
export interface ProcessIo {
  readonly terminal: boolean;
  readonly stdin: InputStream | undefined;
  readonly stdout: OutputStream;
  readonly stderr: OutputStream;
  /** The pty master (terminal only), for TIOCSWINSZ. */
  readonly ptyMaster: number | undefined;
  processExited(): void;
  closeStdin(): void;
  destroy(): void;
}

function pipeReader(fd: number): Readable {
  return new net.Socket({ fd, readable: true, writable: false });
}

function pipeWriter(fd: number): Writable {
  return new net.Socket({ fd, readable: false, writable: true });
}

/** Pipes for a non-terminal process: `childFds` go to crun as its stdin/stdout/stderr. */
export class PipeIo implements ProcessIo {
  readonly terminal = false;
  readonly stdin: InputStream;
  readonly stdout: OutputStream;
  readonly stderr: OutputStream;
  readonly ptyMaster = undefined;
  /** The child's ends; close them (closeChildFds) once the child has them. */
  childFds: [number, number, number] | undefined;

  constructor(opts: OutputOptions = {}) {
    const fds: number[] = [];
    try {
      const i = pipe();
      fds.push(i.read, i.write);
      const o = pipe();
      fds.push(o.read, o.write);
      const e = pipe();
      fds.push(e.read, e.write);
      for (const fd of [i.write, o.write, e.write]) growPipe(fd);
      this.childFds = [i.read, o.write, e.write];
      this.stdin = new InputStream(pipeWriter(i.write));
      this.stdout = new OutputStream(pipeReader(o.read), opts);
      this.stderr = new OutputStream(pipeReader(e.read), opts);
    } catch (err) {
      for (const fd of fds) closeQuietly(fd);
      throw err;
    }
  }

  closeChildFds(): void {
    for (const fd of this.childFds ?? []) closeQuietly(fd);
    this.childFds = undefined;
  }

  processExited(): void {
    this.stdout.processExited();
    this.stderr.processExited();
  }

  closeStdin(): void {
    this.stdin.close();
  }

  destroy(): void {
    this.closeChildFds();
    this.stdin.destroy();
    this.stdout.destroy();
    this.stderr.destroy();
  }
}

/** A terminal process: the pty master carries both directions; stderr is merged (reads EOF at once). */
export class TtyIo implements ProcessIo {
  readonly terminal = true;
  readonly stdin: InputStream;
  readonly stdout: OutputStream;
  readonly stderr: OutputStream;

  constructor(
    readonly ptyMaster: number,
    opts: OutputOptions = {},
  ) {
    // libuv tracks watchers by fd, so reading and writing use two fds of the same pty master.
    const writeFd = dupFd(ptyMaster);
    this.stdout = new OutputStream(new tty.ReadStream(ptyMaster), opts);
    const writer = new tty.WriteStream(writeFd);
    // tty.WriteStream makes its fd blocking (for a local terminal's stdout). Here it is a pty master
    // shared with the reader: a blocked write would stall the whole agent, so undo it.
    setTtyWriterNonBlocking(writer);
    this.stdin = new InputStream(writer);
    this.stderr = new OutputStream(null);
  }

  processExited(): void {
    this.stdout.processExited();
  }

  closeStdin(): void {
    // As upstream: drop our writing end only; the terminal itself stays up for output.
    this.stdin.close();
  }

  destroy(): void {
    this.stdin.destroy();
    this.stdout.destroy();
  }
}

/** Best effort: an unprivileged agent (a host test run) may be held to fs.pipe-max-size; 64 KiB then stays. */
function growPipe(fd: number): void {
  try {
    setPipeSize(fd, PIPE_SIZE);
  } catch (e) {
    // EPERM: above pipe-max-size without CAP_SYS_RESOURCE (or the user's pipe quota): the default size works.
    if ((e as { code?: string }).code !== 'EPERM') throw e;
  }
}

export function closeQuietly(fd: number): void {
  try {
    closeFd(fd);
  } catch {
    // already closed: nothing to release
  }
}

/** For tests: whether an fd is open in this process. */
export function fdIsOpen(fd: number): boolean {
  return fs.existsSync(`/proc/self/fd/${fd}`);
}
