// Where the shim's log lines go. stdout belongs to containerd in every mode (the address after `start`, the
// DeleteResponse after `delete`), so logs are pointed at another fd before anything logs. The daemon's fd is
// containerd's log FIFO: if containerd stops draining it, a blocking write would stop every Task RPC and stdio
// pump, so there lines queue up to a bound and are then dropped, counted, and the count logged later.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import pino, { type DestinationStream } from 'pino';
import { setLogDestination, setLogLevel } from '../common/log.js';

const QUEUE_LIMIT = 4 << 20;

/** Log lines to a FIFO or socket without ever blocking: a bounded queue, then drops (counted). */
export class BoundedLogSink implements DestinationStream {
  private readonly sock: net.Socket;
  private broken = false;
  /** Lines dropped since the last report. */
  dropped = 0;
  /** Lines dropped in all. */
  droppedTotal = 0;

  constructor(
    fd: number,
    private readonly limit = QUEUE_LIMIT,
  ) {
    this.sock = new net.Socket({ fd, readable: false, writable: true });
    this.sock.unref(); // logging never keeps the shim alive
    // A reader that went away (containerd restarting) must not crash the shim; nothing is left to log to.
    this.sock.on('error', () => {
      this.broken = true;
    });
  }

  write(line: string): void {
    if (this.broken) return;
    if (this.sock.writableLength > this.limit) {
      this.dropped++;
      this.droppedTotal++;
      return;
    }
    if (this.dropped > 0) {
      const report = {
        level: 40,
        time: new Date().toISOString(),
        pid: process.pid,
        source: 'kata-ts',
        component: 'log',
        dropped: this.dropped,
        msg: 'log lines dropped: the log reader was too slow',
      };
      this.dropped = 0;
      this.sock.write(`${JSON.stringify(report)}\n`);
    }
    this.sock.write(line);
  }

  /** Bytes waiting for the reader. */
  get queued(): number {
    return this.sock.writableLength;
  }

  /** Resolves once the queue is empty or after `timeoutMs` (before the shim exits). */
  flush(timeoutMs: number): Promise<void> {
    if (this.broken || this.sock.writableLength === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(done, timeoutMs);
      timer.unref();
      const sock = this.sock;
      function done() {
        clearTimeout(timer);
        sock.off('drain', done);
        resolve();
      }
      sock.on('drain', done);
    });
  }
}

let sink: BoundedLogSink | undefined;

/**
 * Sends every logger to `fd`; undefined silences logging. `nonBlocking` (the daemon) queues lines for a FIFO or
 * socket instead of writing them synchronously; short-lived modes write synchronously so nothing is lost at exit.
 */
export function redirectLogs(fd: number | undefined, opts: { nonBlocking?: boolean } = {}): void {
  if (fd === undefined) {
    setLogLevel('silent');
    return;
  }
  if (opts.nonBlocking) {
    let st: fs.Stats | undefined;
    try {
      st = fs.fstatSync(fd);
    } catch {
      st = undefined;
    }
    if (st && (st.isFIFO() || st.isSocket())) {
      sink = new BoundedLogSink(fd);
      setLogDestination(sink);
      return;
    }
  }
  // A file or terminal: writes do not wait on a reader.
  const dest = pino.destination({ fd, sync: true });
  dest.on('error', () => {});
  setLogDestination(dest);
}

/** Waits (bounded) until queued log lines reached the reader; call before exiting. */
export async function flushLogs(timeoutMs = 1000): Promise<void> {
  await sink?.flush(timeoutMs);
}

/**
 * Opens the shim log FIFO containerd created in the bundle (`log`, read by containerd and copied to its own
 * log) for writing. Returns undefined when nobody reads it: a blocking open would hang forever.
 */
export function openShimLog(bundle: string): number | undefined {
  const file = path.join(bundle, 'log');
  try {
    // Non-blocking first: ENXIO means no reader. The fd handed on is blocking for `start`'s synchronous writes;
    // the daemon, which inherits it as stderr, writes to it through a non-blocking queue (redirectLogs).
    const probe = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
    fs.closeSync(probe);
    return fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_APPEND);
  } catch {
    return undefined;
  }
}
