import fs from 'node:fs';
import type net from 'node:net';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import type { Logger } from '../common/log.js';
import { streamFromFd } from '../common/node-internals.js';
// The agent's end of the virtio-serial port `agent.channel.0`: finds /dev/vportNpM by name, turns it into a
// Duplex stream per host connection, and starts over when the host goes away (shim restart, reconnect).
import { sleep } from '../common/poll.js';
import { dupFd } from './native.js';

// ---- finding the port ----

/** The /dev node of the virtio-serial port with this name, or undefined when it is not there (yet). */
export function findVirtioPort(
  name: string,
  sysClass = '/sys/class/virtio-ports',
  devDir = '/dev',
): string | undefined {
  let ports: string[];
  try {
    ports = fs.readdirSync(sysClass);
  } catch {
    return undefined; // virtio_console not loaded (yet)
  }
  for (const port of ports) {
    try {
      if (fs.readFileSync(path.join(sysClass, port, 'name'), 'utf8').trim() === name)
        return path.join(devDir, port);
    } catch {
      // the name arrives from the host a little after the port appears
    }
  }
  return undefined;
}

/** Waits for the named port (the driver probes asynchronously and the host sends the name later). */
export async function waitForVirtioPort(name: string, timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (let delay = 1; ; delay = Math.min(delay * 2, 50)) {
    const dev = findVirtioPort(name);
    if (dev && fs.existsSync(dev)) return dev;
    if (Date.now() > deadline) {
      throw new Error(
        `virtio-serial port ${name}: not found in /sys/class/virtio-ports within ${timeoutMs} ms`,
      );
    }
    await sleep(delay);
  }
}

// ---- the channel ----

export interface PortChannelOptions {
  /** Port name given by the host (`agent.channel.0`). */
  name: string;
  /** Called with a fresh stream for each host connection. */
  onConnection: (stream: Duplex) => void;
  log: Logger;
  /** How long to wait for the port to appear at start. */
  findTimeoutMs?: number;
}

/**
 * Serves one virtio-serial port for the agent's life. The port's fd stays open the whole time (closing it
 * would make the kernel drop what the host already sent); each host connection gets its own dup'ed fd wrapped
 * in a stream, so that each starts with no leftover bytes in a frame parser. While no host is connected the
 * port reads as end-of-file at once, so new sessions are tried with a short back-off.
 */
export class VirtioPortChannel {
  private portFd = -1;
  private device = '';
  private session: net.Socket | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private backoffMs = 0;
  private sessions = 0;

  constructor(private readonly opts: PortChannelOptions) {}

  /** Finds and opens the port; resolves once the first session is being served. Returns the device path. */
  async start(): Promise<string> {
    this.device = await waitForVirtioPort(this.opts.name, this.opts.findTimeoutMs ?? 30_000);
    this.openPort();
    this.newSession();
    return this.device;
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.session?.destroy();
    this.session = undefined;
    if (this.portFd >= 0) fs.closeSync(this.portFd);
    this.portFd = -1;
  }

  get connections(): number {
    return this.sessions;
  }

  private openPort(): void {
    try {
      this.portFd = fs.openSync(this.device, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
    } catch (e) {
      throw new Error(
        `opening virtio-serial port ${this.opts.name} (${this.device}): ${(e as Error).message}`,
      );
    }
  }

  private newSession(): void {
    if (this.stopped) return;
    let sock: net.Socket;
    try {
      const fd = dupFd(this.portFd);
      sock = streamFromFd(fd, this.device);
    } catch (e) {
      this.opts.log.error(
        { err: e, device: this.device },
        'virtio-serial: cannot start a session; reopening the port',
      );
      this.reopenLater();
      return;
    }
    const started = Date.now();
    let gotData = false;
    this.session = sock;
    sock.once('data', () => {
      gotData = true;
      this.backoffMs = 0;
      this.sessions++;
      this.opts.log.debug({ device: this.device, session: this.sessions }, 'virtio-serial: host connected');
    });
    sock.on('error', (err) => {
      this.opts.log.warn({ err, device: this.device }, 'virtio-serial: session error');
    });
    sock.once('close', (hadError) => {
      if (this.session === sock) this.session = undefined;
      if (this.stopped) return;
      if (gotData)
        this.opts.log.info(
          { device: this.device, session: this.sessions },
          'virtio-serial: host disconnected',
        );
      if (hadError) {
        this.reopenLater();
        return;
      }
      // EOF without data within moments means no host is connected: poll with a back-off (10 ms .. 100 ms).
      const quick = !gotData && Date.now() - started < 50;
      this.backoffMs = quick ? Math.min(Math.max(this.backoffMs * 2, 10), 100) : 0;
      this.timer = setTimeout(() => this.newSession(), this.backoffMs);
    });
    // Hand it over only now so that our 'data' listener sees the first chunk too.
    this.opts.onConnection(sock);
  }

  /** After an error on the port itself: close it, find it again (it may have been re-plugged) and reopen. */
  private reopenLater(): void {
    if (this.portFd >= 0) {
      try {
        fs.closeSync(this.portFd);
      } catch {
        // already gone with the device
      }
    }
    this.portFd = -1;
    this.timer = setTimeout(() => {
      void this.start().catch((e: Error) => {
        this.opts.log.error({ err: e }, 'virtio-serial: reopening the port failed; retrying');
        this.reopenLater();
      });
    }, 200);
  }
}
