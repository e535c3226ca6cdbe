// QMP (QEMU Machine Protocol) client: newline-delimited JSON on a unix socket. Commands carry an "id" so
// each reply settles the promise of the command that asked; everything with an "event" key goes to listeners.
import { EventEmitter } from 'node:events';
import { type Socket, createConnection } from 'node:net';
import type { Logger } from '../../common/log.js';

export type JsonValue = string | number | boolean | null | JsonValue[] | { [k: string]: JsonValue };
export type JsonObject = { [k: string]: JsonValue };

export interface QmpEvent {
  event: string;
  data: JsonObject;
  timestamp?: { seconds: number; microseconds: number };
}

export interface QmpGreeting {
  version: { qemu: { major: number; minor: number; micro: number }; package: string };
  capabilities: string[];
}

/** A command QEMU answered with {"error": ...}. */
export class QmpError extends Error {
  constructor(
    readonly command: string,
    readonly errorClass: string,
    readonly desc: string,
  ) {
    super(`QMP ${command} failed: ${errorClass}: ${desc}`);
    this.name = 'QmpError';
  }
}

/** The connection ended or timed out before a reply arrived. */
export class QmpConnectionError extends Error {
  constructor(
    message: string,
    readonly command?: string,
  ) {
    super(message);
    this.name = 'QmpConnectionError';
  }
}

interface Pending {
  command: string;
  resolve: (v: JsonValue) => void;
  reject: (e: Error) => void;
  timer?: NodeJS.Timeout;
}

export interface QmpConnectOptions {
  /** How long to wait for the greeting and the capabilities handshake. */
  timeoutMs?: number;
  log?: Logger;
  /** Use this connected socket instead of dialling `path` (e.g. one wrapping an fd that can also pass fds). */
  socket?: Socket;
}

export interface QueryStatus {
  status: string;
  running: boolean;
  singlestep?: boolean;
}

export interface HotpluggableCpu {
  type: string;
  'vcpus-count': number;
  props: {
    'node-id'?: number;
    'socket-id'?: number;
    'core-id'?: number;
    'thread-id'?: number;
    'die-id'?: number;
  };
  'qom-path'?: string;
}

export interface MemoryDeviceInfo {
  type: string;
  data: {
    id?: string;
    size: number;
    hotplugged?: boolean;
    hotpluggable?: boolean;
    memdev?: string;
    slot?: number;
  };
}

export interface PciDevice {
  bus: number;
  slot: number;
  function: number;
  qdev_id: string;
  class_info: { class: number; desc?: string };
  pci_bridge?: { bus: { number: number }; devices?: PciDevice[] };
}

export interface PciBusInfo {
  bus: number;
  devices: PciDevice[];
}

const DEFAULT_COMMAND_TIMEOUT_MS = 30_000;

/**
 * Events: 'event' (QmpEvent) for every asynchronous event, plus one emit per event name ('SHUTDOWN',
 * 'STOP', 'RESUME', 'DEVICE_DELETED', ...); 'close' (Error | undefined) once the connection is gone.
 */
export class QmpClient extends EventEmitter {
  private buffer = '';
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private closed = false;
  greeting: QmpGreeting | undefined;

  private constructor(
    private readonly socket: Socket,
    readonly path: string,
    private readonly log?: Logger,
  ) {
    super();
  }

  /** Connects, reads the greeting and negotiates capabilities. Rejects if the socket cannot be reached. */
  static async connect(path: string, opts: QmpConnectOptions = {}): Promise<QmpClient> {
    const timeoutMs = opts.timeoutMs ?? 10_000;
    const socket = opts.socket ?? createConnection({ path });
    const client = new QmpClient(socket, path, opts.log);
    const greeting = new Promise<QmpGreeting>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new QmpConnectionError(`QMP ${path}: no greeting within ${timeoutMs} ms`));
        socket.destroy();
      }, timeoutMs);
      client.once('greeting', (g: QmpGreeting) => {
        clearTimeout(timer);
        resolve(g);
      });
      socket.once('error', (err) => {
        clearTimeout(timer);
        reject(new QmpConnectionError(`QMP ${path}: cannot connect: ${err.message}`));
      });
      socket.once('close', () => {
        clearTimeout(timer);
        reject(new QmpConnectionError(`QMP ${path}: connection closed before the greeting`));
      });
    });
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => client.onData(chunk));
    socket.on('error', (err) => client.onClose(err));
    socket.on('close', () => client.onClose());
    try {
      client.greeting = await greeting;
      await client.execute('qmp_capabilities', undefined, { timeoutMs });
    } catch (err) {
      client.close();
      throw err;
    }
    return client;
  }

  /** Bytes queued in the socket not yet handed to the kernel (a raw sendmsg must wait for 0). */
  get pendingWriteBytes(): number {
    return this.socket.writableLength;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Sends one command; resolves with its "return" value, rejects with QmpError or QmpConnectionError. */
  execute<T = JsonValue>(command: string, args?: object, opts: { timeoutMs?: number } = {}): Promise<T> {
    return this.executeWith<T>(command, args, opts);
  }

  /**
   * execute, with the caller writing the command line itself when `write` is given (getfd: the line must
   * travel in the sendmsg that carries the fd). `write` runs synchronously, after the reply is registered.
   */
  executeWith<T = JsonValue>(
    command: string,
    args?: object,
    opts: { timeoutMs?: number } = {},
    write?: (line: Buffer) => void,
  ): Promise<T> {
    if (this.closed) {
      return Promise.reject(new QmpConnectionError(`QMP ${command}: connection is closed`, command));
    }
    const id = `kata-${this.nextId++}`;
    const msg: Record<string, unknown> = { execute: command, id };
    if (args !== undefined) msg.arguments = args;
    const timeoutMs = opts.timeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
    return new Promise<T>((resolve, reject) => {
      const p: Pending = { command, resolve: resolve as (v: JsonValue) => void, reject };
      p.timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new QmpConnectionError(`QMP ${command}: no reply within ${timeoutMs} ms`, command));
      }, timeoutMs);
      this.pending.set(id, p);
      this.log?.debug({ qmp: command, args }, 'qmp execute');
      const line = `${JSON.stringify(msg)}\n`;
      if (!write) {
        this.socket.write(line);
        return;
      }
      try {
        write(Buffer.from(line));
      } catch (e) {
        clearTimeout(p.timer);
        this.pending.delete(id);
        reject(e);
      }
    });
  }

  /**
   * Resolves with the first event named `name` that matches `predicate`, arriving after this call.
   * Subscribe before triggering the action that produces it (e.g. before device_del).
   */
  waitForEvent(
    name: string,
    predicate: (e: QmpEvent) => boolean = () => true,
    timeoutMs = DEFAULT_COMMAND_TIMEOUT_MS,
  ): Promise<QmpEvent> {
    return new Promise<QmpEvent>((resolve, reject) => {
      const cleanup = () => {
        clearTimeout(timer);
        this.off(name, onEvent);
        this.off('close', onClose);
      };
      const onEvent = (e: QmpEvent) => {
        if (!predicate(e)) return;
        cleanup();
        resolve(e);
      };
      const onClose = () => {
        cleanup();
        reject(new QmpConnectionError(`QMP connection closed while waiting for event ${name}`));
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new QmpConnectionError(`no QMP event ${name} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.on(name, onEvent);
      this.on('close', onClose);
    });
  }

  close(): void {
    this.socket.destroy();
    this.onClose();
  }

  // --- typed helpers for the commands the driver uses -------------------------------------------------

  queryStatus(): Promise<QueryStatus> {
    return this.execute<QueryStatus>('query-status');
  }

  stop(): Promise<void> {
    return this.execute('stop').then(() => undefined);
  }

  cont(): Promise<void> {
    return this.execute('cont').then(() => undefined);
  }

  systemPowerdown(): Promise<void> {
    return this.execute('system_powerdown').then(() => undefined);
  }

  /** Asks QEMU to exit. QEMU answers and then drops the connection, so a lost connection counts as done. */
  async quit(timeoutMs = 5000): Promise<void> {
    try {
      await this.execute('quit', undefined, { timeoutMs });
    } catch (err) {
      if (!(err instanceof QmpConnectionError)) throw err;
    }
  }

  deviceAdd(args: { driver: string; id: string } & Record<string, JsonValue>): Promise<void> {
    return this.execute('device_add', args).then(() => undefined);
  }

  /** device_del, then waits for DEVICE_DELETED (the guest has to cooperate for PCI devices). */
  async deviceDel(id: string, timeoutMs = 10_000): Promise<void> {
    const deleted = this.waitForEvent('DEVICE_DELETED', (e) => e.data.device === id, timeoutMs);
    // Avoid an unhandled rejection if device_del itself fails and we never await `deleted`.
    deleted.catch(() => undefined);
    await this.execute('device_del', { id });
    await deleted;
  }

  objectAdd(args: { 'qom-type': string; id: string } & Record<string, JsonValue>): Promise<void> {
    return this.execute('object-add', args).then(() => undefined);
  }

  objectDel(id: string): Promise<void> {
    return this.execute('object-del', { id }).then(() => undefined);
  }

  blockdevAdd(args: Record<string, JsonValue>): Promise<void> {
    return this.execute('blockdev-add', args).then(() => undefined);
  }

  blockdevDel(nodeName: string): Promise<void> {
    return this.execute('blockdev-del', { 'node-name': nodeName }).then(() => undefined);
  }

  queryHotpluggableCpus(): Promise<HotpluggableCpu[]> {
    return this.execute<HotpluggableCpu[]>('query-hotpluggable-cpus');
  }

  queryMemoryDevices(): Promise<MemoryDeviceInfo[]> {
    return this.execute<MemoryDeviceInfo[]>('query-memory-devices');
  }

  queryPci(): Promise<PciBusInfo[]> {
    return this.execute<PciBusInfo[]>('query-pci');
  }

  // --- wire handling ----------------------------------------------------------------------------------

  private onData(chunk: string): void {
    this.buffer += chunk;
    let nl = this.buffer.indexOf('\n');
    while (nl >= 0) {
      const line = this.buffer.slice(0, nl).trim();
      this.buffer = this.buffer.slice(nl + 1);
      if (line !== '') this.onMessage(line);
      nl = this.buffer.indexOf('\n');
    }
  }

  private onMessage(line: string): void {
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(line) as Record<string, unknown>;
    } catch (err) {
      this.log?.warn({ line, err: String(err) }, 'QMP: ignoring a line that is not JSON');
      return;
    }
    if ('QMP' in msg) {
      this.emit('greeting', msg.QMP as QmpGreeting);
      return;
    }
    if (typeof msg.event === 'string') {
      const ev: QmpEvent = {
        event: msg.event,
        data: (msg.data as JsonObject | undefined) ?? {},
        timestamp: msg.timestamp as QmpEvent['timestamp'],
      };
      this.log?.debug({ qmpEvent: ev.event, data: ev.data }, 'qmp event');
      this.emit('event', ev);
      this.emit(ev.event, ev);
      return;
    }
    const id = typeof msg.id === 'string' ? msg.id : undefined;
    const p = id ? this.pending.get(id) : undefined;
    if (!p || !id) {
      this.log?.warn({ msg }, 'QMP: reply matches no pending command');
      return;
    }
    this.pending.delete(id);
    clearTimeout(p.timer);
    if ('error' in msg) {
      const e = (msg.error ?? {}) as { class?: string; desc?: string };
      p.reject(new QmpError(p.command, e.class ?? 'GenericError', e.desc ?? 'unknown error'));
    } else {
      p.resolve((msg.return as JsonValue) ?? null);
    }
  }

  private onClose(err?: Error): void {
    if (this.closed) return;
    this.closed = true;
    const why = err ? `: ${err.message}` : '';
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new QmpConnectionError(`QMP connection lost while waiting for ${p.command}${why}`, p.command));
      this.pending.delete(id);
    }
    this.emit('close', err);
  }
}
