// A process's stdio between containerd's FIFOs and the agent's stream calls: ReadStdout/ReadStderr loops into the
// stdout/stderr FIFOs (until a zero-length read, the agent's EOF, or an error), the stdin FIFO into WriteStdin, and
// CloseIO (or the FIFO's writer closing) into CloseStdin once everything written before it was forwarded.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import { promisify } from 'node:util';
import type { Logger } from '../common/log.js';
import type { AgentClient } from './agent.js';
import { errorMessage } from './errors.js';

export interface StdioPaths {
  stdin: string;
  stdout: string;
  stderr: string;
  terminal: boolean;
}

type StreamAgent = Pick<AgentClient, 'readStdout' | 'readStderr' | 'writeStdin' | 'closeStdin'>;

const READ_CHUNK = 64 * 1024;
// Each ReadStdout/WriteStdin is a round trip over the VM's channel: move up to 1 MiB per call (the agent's
// largest answer; ttrpc allows 4 MiB) and keep several calls in flight so the channel never idles.
const READ_SIZE = 1 << 20;
const READS_IN_FLIGHT = 3;
const STDIN_BATCH = 1 << 20;
const STDIN_IN_FLIGHT = 2;

/** Where one output stream goes; write() resolves once the kernel took the bytes (backpressure). */
interface Sink {
  write(data: Uint8Array): Promise<void>;
  close(): Promise<void>;
}

const nullSink: Sink = { write: async () => {}, close: async () => {} };

// The fd-returning forms: net.Socket takes a raw fd, which a FileHandle would close behind its back.
const openFd = promisify(fs.open);
const closeFd = promisify(fs.close);
const readFd = promisify(fs.read);

async function isFifo(path: string): Promise<boolean> {
  try {
    return (await fsp.stat(path)).isFIFO();
  } catch {
    return false;
  }
}

/** A FIFO or pipe fd as a non-blocking libuv stream; a broken reader makes later writes no-ops. */
function socketSink(fd: number, what: string, log: Logger): Sink {
  const sock = new net.Socket({ fd, readable: false, writable: true });
  let broken: string | undefined;
  sock.on('error', (e) => {
    if (!broken)
      log.warn({ stream: what, err: e.message }, 'output stream reader went away; dropping output');
    broken = e.message;
  });
  return {
    write: (data) =>
      new Promise<void>((resolve) => {
        if (broken || sock.destroyed) return resolve();
        sock.write(data, (err) => {
          if (err && !broken) broken = err.message;
          resolve();
        });
      }),
    close: async () => {
      sock.destroy();
    },
  };
}

async function fileSink(path: string): Promise<Sink> {
  const file = await fsp.open(
    path,
    fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT,
    0o640,
  );
  return {
    write: async (data) => {
      await file.write(data);
    },
    close: () => file.close(),
  };
}

/** Opens containerd's stdout/stderr target: a FIFO, a file, or a file:// URI; "" discards. */
async function openSink(target: string, what: string, log: Logger): Promise<Sink> {
  if (!target) return nullSink;
  let path = target;
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(target)) {
    const url = new URL(target);
    if (url.protocol !== 'file:') {
      throw new Error(
        `${what} ${target}: only FIFOs, files and file:// URIs are supported, not ${url.protocol}//`,
      );
    }
    path = decodeURIComponent(url.pathname);
  }
  if (!(await isFifo(path))) return fileSink(path);
  let fd: number;
  try {
    // containerd opened the read side before asking us; if not, O_RDWR keeps the data until a reader comes.
    fd = await openFd(path, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENXIO') throw e;
    fd = await openFd(path, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
  }
  return socketSink(fd, what, log);
}

export class ProcessIo {
  private stdoutSink: Sink = nullSink;
  private stderrSink: Sink = nullSink;
  private stdinFd: number | undefined;
  /**
   * A second read end of the stdin FIFO, for finishStdin's drain once the socket is gone: one reader at a time,
   * and the FIFO's data outlives the socket's fd.
   */
  private stdinDrainFd: number | undefined;
  private stdinSock: net.Socket | undefined;
  /** Stdin read from the FIFO, not yet sent. */
  private stdinPending: Buffer[] = [];
  private stdinPendingBytes = 0;
  /** WriteStdin calls on their way; sent in order, the agent writes them in order. */
  private stdinInFlight = new Set<Promise<void>>();
  private stdinClosed = false;
  /** CloseIO arrived before the process started. */
  private closeRequested = false;
  private stdinFinishing: Promise<void> | undefined;
  /** finishStdin's read of what the FIFO still holds, while it runs. */
  private stdinDraining: Promise<void> | undefined;
  /** The stdin socket closes the fd itself once it wraps it. */
  private stdinSockOwnsFd = false;
  private started = false;
  private outputs: Promise<void>[] = [];
  private agent: StreamAgent | undefined;

  private constructor(
    readonly paths: StdioPaths,
    private readonly containerId: string,
    private readonly execId: string,
    private readonly log: Logger,
  ) {}

  /** Opens the FIFOs now (so a bad path fails Create/Exec), copying starts with start(). */
  static async open(paths: StdioPaths, containerId: string, execId: string, log: Logger): Promise<ProcessIo> {
    const io = new ProcessIo(paths, containerId, execId, log);
    try {
      io.stdoutSink = await openSink(paths.stdout, 'stdout', log);
      if (!paths.terminal) io.stderrSink = await openSink(paths.stderr, 'stderr', log);
      if (paths.stdin) {
        // Read side only: Linux reports hang-up on it only once a writer came and went, so the stream ends when
        // containerd closes its end (ctr does not send CloseIO when its stdin ends before Create returns).
        io.stdinFd = await openFd(paths.stdin, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
        io.stdinDrainFd = await openFd(paths.stdin, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
      }
    } catch (e) {
      await io.close();
      throw new Error(
        `opening stdio of ${execId ? `exec ${execId} in ` : ''}container ${containerId}: ${errorMessage(e)}`,
        {
          cause: e,
        },
      );
    }
    return io;
  }

  /** Starts the copy loops; call once the process runs in the guest. */
  start(agent: StreamAgent): void {
    if (this.started) return;
    this.started = true;
    this.agent = agent;
    const ids = { containerId: this.containerId, execId: this.execId };
    this.outputs.push(this.pump('stdout', (len) => agent.readStdout({ ...ids, len }), this.stdoutSink));
    if (!this.paths.terminal) {
      this.outputs.push(this.pump('stderr', (len) => agent.readStderr({ ...ids, len }), this.stderrSink));
    }
    if (this.stdinFd === undefined || this.closeRequested) {
      // No stdin (the process must see EOF, as with runc's /dev/null), or CloseIO came before Start (ctr sends it
      // as soon as its own stdin ends): forward what the FIFO holds, then close.
      void this.finishStdin();
    } else {
      this.startStdin();
    }
  }

  /** Resolves when every output stream reached EOF and was written to its FIFO. */
  async outputDone(): Promise<void> {
    await Promise.all(this.outputs);
  }

  /** containerd's CloseIO(stdin): forward what is still buffered in the FIFO, then close the process's stdin. */
  async closeStdin(): Promise<void> {
    if (!this.started) {
      this.closeRequested = true; // done by start()
      return;
    }
    await this.finishStdin();
  }

  private finishStdin(): Promise<void> {
    this.stdinFinishing ??= (async () => {
      this.stdinClosed = true;
      const sock = this.stdinSock;
      if (sock) {
        // What the socket read but did not hand out (it was paused for back-pressure) is older than what the FIFO
        // still holds: queue it, and close the socket in the same tick, so no read of its comes in between.
        sock.removeAllListeners('data');
        for (let c: Buffer | null = sock.read(); c !== null; c = sock.read()) this.queueStdin(c);
        sock.destroy();
        this.stdinSock = undefined;
      }
      const drainFd = sock ? this.stdinDrainFd : this.stdinFd;
      if (drainFd !== undefined) {
        this.stdinDraining = this.drainStdinFifo(drainFd);
        await this.stdinDraining;
      }
      await this.flushStdin();
      await this.closeStdinFds();
      try {
        await this.agent?.closeStdin({ containerId: this.containerId, execId: this.execId });
      } catch (e) {
        this.log.debug({ err: errorMessage(e) }, 'CloseStdin failed (process gone?)');
      }
    })();
    return this.stdinFinishing;
  }

  /** Releases every fd; output loops end on their own when the agent connection goes. */
  async close(): Promise<void> {
    this.stdinClosed = true;
    // A drain still reading the fd must finish first: closing under it could read from a reused fd number.
    await this.stdinDraining;
    this.stdinSock?.destroy();
    await this.closeStdinFds();
    await Promise.allSettled([this.stdoutSink.close(), this.stderrSink.close()]);
  }

  /** Closes the stdin FIFO's fds that are ours (the socket closes the one it wraps). */
  private async closeStdinFds(): Promise<void> {
    const fds = [this.stdinSockOwnsFd ? undefined : this.stdinFd, this.stdinDrainFd];
    this.stdinFd = undefined;
    this.stdinDrainFd = undefined;
    for (const fd of fds) {
      if (fd === undefined) continue;
      await closeFd(fd).catch((e: unknown) =>
        this.log.warn({ err: errorMessage(e), fd }, 'closing the stdin FIFO'),
      );
    }
  }

  private startStdin(): void {
    const sock = new net.Socket({ fd: this.stdinFd!, readable: true, writable: false });
    this.stdinSockOwnsFd = true;
    this.stdinSock = sock;
    sock.on('error', (e) => this.log.warn({ err: e.message }, 'reading the stdin FIFO failed'));
    sock.on('end', () => void this.finishStdin()); // containerd closed the FIFO: EOF for the process
    sock.on('data', (chunk: Buffer) => {
      this.queueStdin(chunk);
      if (this.stdinPendingBytes >= STDIN_BATCH * STDIN_IN_FLIGHT) sock.pause();
    });
  }

  private queueStdin(chunk: Buffer): void {
    this.stdinPending.push(chunk);
    this.stdinPendingBytes += chunk.length;
    this.sendStdin();
  }

  /** Sends what is pending, up to STDIN_IN_FLIGHT calls of up to STDIN_BATCH bytes each. */
  private sendStdin(): void {
    while (this.stdinInFlight.size < STDIN_IN_FLIGHT && this.stdinPendingBytes > 0) {
      const parts: Buffer[] = [];
      let n = 0;
      while (this.stdinPending.length > 0 && n < STDIN_BATCH) {
        let c = this.stdinPending[0]!;
        if (n + c.length > STDIN_BATCH) {
          this.stdinPending[0] = c.subarray(STDIN_BATCH - n);
          c = c.subarray(0, STDIN_BATCH - n);
        } else {
          this.stdinPending.shift();
        }
        parts.push(c);
        n += c.length;
      }
      this.stdinPendingBytes -= n;
      const call: Promise<void> = this.forwardStdin(
        parts.length === 1 ? parts[0]! : Buffer.concat(parts, n),
      ).finally(() => {
        this.stdinInFlight.delete(call);
        const sock = this.stdinSock;
        if (sock && !this.stdinClosed && !sock.destroyed && this.stdinPendingBytes < STDIN_BATCH)
          sock.resume();
        this.sendStdin();
      });
      this.stdinInFlight.add(call);
    }
  }

  /** Resolves once everything queued so far was handed to the agent (or dropped with the process). */
  private async flushStdin(): Promise<void> {
    while (this.stdinInFlight.size > 0) await Promise.all([...this.stdinInFlight]);
  }

  /** Non-blocking reads of whatever the FIFO still holds, queued for the agent; never rejects. */
  private async drainStdinFifo(fd: number): Promise<void> {
    const buf = Buffer.alloc(READ_CHUNK);
    for (;;) {
      let n: number;
      try {
        n = (await readFd(fd, buf, 0, buf.length, null)).bytesRead;
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code !== 'EAGAIN' && code !== 'EWOULDBLOCK')
          this.log.warn({ err: errorMessage(e) }, 'draining stdin');
        return;
      }
      if (n <= 0) return;
      this.queueStdin(Buffer.from(buf.subarray(0, n)));
    }
  }

  private async forwardStdin(chunk: Uint8Array): Promise<void> {
    let data = chunk;
    while (data.length > 0 && this.agent) {
      try {
        const res = await this.agent.writeStdin({ containerId: this.containerId, execId: this.execId, data });
        const n = res.len > 0 ? Math.min(res.len, data.length) : data.length;
        // Kata's agent and ours write everything; a short write from another agent is resent, which could
        // reorder it with the next call in flight, so say so.
        if (n < data.length)
          this.log.warn({ asked: data.length, written: n }, 'agent wrote stdin partly; resending');
        data = data.subarray(n);
      } catch (e) {
        this.log.debug({ err: errorMessage(e) }, 'WriteStdin failed; dropping stdin');
        return;
      }
    }
  }

  private async pump(
    name: string,
    read: (len: number) => Promise<{ data: Uint8Array }>,
    sink: Sink,
  ): Promise<void> {
    let bytes = 0;
    // Reads are answered in the order they were asked (the agent queues them), so keep a few asked ahead.
    const ahead: Promise<Uint8Array>[] = [];
    const ask = () => {
      const p = read(READ_SIZE).then((r) => r.data);
      p.catch(() => {}); // the reads asked past the end fail; only the awaited one counts
      ahead.push(p);
    };
    try {
      for (let i = 0; i < READS_IN_FLIGHT; i++) ask();
      for (;;) {
        let data: Uint8Array;
        try {
          data = await ahead.shift()!;
        } catch (e) {
          // An error also ends the stream (the process or the VM is gone).
          this.log.debug({ stream: name, bytes, end: errorMessage(e) }, 'output stream ended');
          return;
        }
        if (data.length === 0) {
          // A zero-length read is EOF, as Kata's agent answers it (later reads fail).
          this.log.debug({ stream: name, bytes }, 'output stream ended');
          return;
        }
        ask();
        bytes += data.length;
        await sink.write(data);
      }
    } finally {
      await sink
        .close()
        .catch((e: unknown) => this.log.warn({ stream: name, err: errorMessage(e) }, 'closing output'));
    }
  }
}
