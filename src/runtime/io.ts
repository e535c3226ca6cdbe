// A process's stdio between containerd's FIFOs and the agent's stream calls: ReadStdout/ReadStderr loops into the
// stdout/stderr FIFOs (until a zero-length read, the agent's EOF, or an error), the stdin FIFO into WriteStdin, and
// CloseIO (or the FIFO's writer closing) into CloseStdin once everything written before it was forwarded.
import fs from 'node:fs';
import net from 'node:net';
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

/** Where one output stream goes; write() resolves once the kernel took the bytes (backpressure). */
interface Sink {
  write(data: Uint8Array): Promise<void>;
  close(): Promise<void>;
}

const nullSink: Sink = { write: async () => {}, close: async () => {} };

function isFifo(path: string): boolean {
  try {
    return fs.statSync(path).isFIFO();
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

function fileSink(path: string): Sink {
  const fd = fs.openSync(path, fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT, 0o640);
  return {
    write: (data) =>
      new Promise<void>((resolve, reject) => {
        fs.write(fd, data, (err) => (err ? reject(err) : resolve()));
      }),
    close: async () => {
      fs.closeSync(fd);
    },
  };
}

/** Opens containerd's stdout/stderr target: a FIFO, a file, or a file:// URI; "" discards. */
function openSink(target: string, what: string, log: Logger): Sink {
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
  if (!isFifo(path)) return fileSink(path);
  let fd: number;
  try {
    // containerd opened the read side before asking us; if not, O_RDWR keeps the data until a reader comes.
    fd = fs.openSync(path, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENXIO') throw e;
    fd = fs.openSync(path, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
  }
  return socketSink(fd, what, log);
}

export class ProcessIo {
  private stdoutSink: Sink = nullSink;
  private stderrSink: Sink = nullSink;
  private stdinFd: number | undefined;
  private stdinSock: net.Socket | undefined;
  private stdinChain: Promise<void> = Promise.resolve();
  private stdinClosed = false;
  /** CloseIO arrived before the process started. */
  private closeRequested = false;
  private stdinFinishing: Promise<void> | undefined;
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
  static open(paths: StdioPaths, containerId: string, execId: string, log: Logger): ProcessIo {
    const io = new ProcessIo(paths, containerId, execId, log);
    try {
      io.stdoutSink = openSink(paths.stdout, 'stdout', log);
      if (!paths.terminal) io.stderrSink = openSink(paths.stderr, 'stderr', log);
      if (paths.stdin) {
        // Read side only: Linux reports hang-up on it only once a writer came and went, so the stream ends when
        // containerd closes its end (ctr does not send CloseIO when its stdin ends before Create returns).
        io.stdinFd = fs.openSync(paths.stdin, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
      }
    } catch (e) {
      void io.close();
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
      this.stdinSock?.pause();
      await this.stdinChain;
      if (this.stdinFd !== undefined) {
        for (const chunk of this.drainStdinFifo()) await this.forwardStdin(chunk);
      }
      this.stdinSock?.destroy();
      this.stdinSock = undefined;
      if (this.stdinFd !== undefined && !this.stdinSockOwnsFd) fs.closeSync(this.stdinFd);
      this.stdinFd = undefined;
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
    this.stdinSock?.destroy();
    if (this.stdinFd !== undefined && !this.stdinSockOwnsFd) {
      try {
        fs.closeSync(this.stdinFd);
      } catch {
        // already closed
      }
    }
    this.stdinFd = undefined;
    await Promise.allSettled([this.stdoutSink.close(), this.stderrSink.close()]);
  }

  private startStdin(): void {
    const sock = new net.Socket({ fd: this.stdinFd!, readable: true, writable: false });
    this.stdinSockOwnsFd = true;
    this.stdinSock = sock;
    sock.on('error', (e) => this.log.warn({ err: e.message }, 'reading the stdin FIFO failed'));
    sock.on('end', () => void this.finishStdin()); // containerd closed the FIFO: EOF for the process
    sock.on('data', (chunk: Buffer) => {
      sock.pause();
      this.stdinChain = this.stdinChain
        .then(() => this.forwardStdin(chunk))
        .finally(() => {
          if (!this.stdinClosed && !sock.destroyed) sock.resume();
        });
    });
  }

  /** Non-blocking reads of whatever the FIFO still holds. */
  private *drainStdinFifo(): Generator<Buffer> {
    const buf = Buffer.alloc(READ_CHUNK);
    for (;;) {
      let n: number;
      try {
        n = fs.readSync(this.stdinFd!, buf, 0, buf.length, null);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code !== 'EAGAIN' && code !== 'EWOULDBLOCK')
          this.log.warn({ err: errorMessage(e) }, 'draining stdin');
        return;
      }
      if (n <= 0) return;
      yield Buffer.from(buf.subarray(0, n));
    }
  }

  private async forwardStdin(chunk: Uint8Array): Promise<void> {
    let data = chunk;
    while (data.length > 0 && this.agent) {
      try {
        const res = await this.agent.writeStdin({ containerId: this.containerId, execId: this.execId, data });
        const n = res.len > 0 ? Math.min(res.len, data.length) : data.length;
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
    try {
      for (;;) {
        let data: Uint8Array;
        try {
          data = (await read(READ_CHUNK)).data;
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
