// ttrpc server: serves registered services on unix sockets or any duplex stream (virtio-serial, vsock).
// Protocol behaviour follows containerd/ttrpc: requests must use odd stream ids, an oversized message is
// discarded and answered with ResourceExhausted (the connection stays up), unknown message types are ignored.
import fs from 'node:fs';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import {
  type DescMessage,
  type DescMethodUnary,
  type DescService,
  type MessageInitShape,
  type MessageShape,
  create,
  fromBinary,
  isMessage,
  toBinary,
} from '@bufbuild/protobuf';
import { logger } from '../../common/log.js';
import {
  EncodedMessage,
  type WireRequest,
  decodeRequest,
  encodeOkResponseHead,
  encodeResponseFrame,
  responseOverhead,
} from './envelope.js';
import { type Frame, FrameReader, MAX_MESSAGE_SIZE, MessageType, OversizedFrameError } from './frame.js';
import { Code, TtrpcError, statusOf } from './status.js';
import { FrameWriter } from './writer.js';

export interface CallContext {
  service: string;
  method: string;
  metadata: Map<string, string[]>;
  /** Aborted when the call's deadline passes, its connection drops or the server is closed. */
  signal: AbortSignal;
  /** When the caller's deadline (timeout_nano) passes, in Date.now() milliseconds; unset without one. */
  deadline?: number;
}

type HandlerOf<M> = M extends DescMethodUnary<infer I, infer O>
  ? (
      req: MessageShape<I>,
      ctx: CallContext,
    ) => Promise<MessageInitShape<O> | EncodedMessage> | MessageInitShape<O> | EncodedMessage
  : never;

/** Handlers for some or all of a service's methods; a missing one answers Unimplemented. */
export type ServiceImpl<S extends DescService> = { [K in keyof S['method']]?: HandlerOf<S['method'][K]> };

interface Route {
  name: string;
  input: DescMessage;
  output: DescMessage;
  handler: (req: unknown, ctx: CallContext) => unknown;
}

export interface ServerOptions {
  maxMessageSize?: number;
  /** Called for protocol errors on one connection (the server itself carries on). */
  onConnectionError?: (err: Error) => void;
}

/** setTimeout's ceiling; longer deadlines are not enforced (they are 24+ days away). */
const MAX_TIMER_MS = 2 ** 31 - 1;

const log = logger('ttrpc-server');

export class TtrpcServer {
  private readonly services = new Map<string, Map<string, Route>>();
  private readonly listeners: net.Server[] = [];
  private readonly connections = new Set<ServerConnection>();
  private shuttingDown = false;
  private drained: (() => void) | undefined;

  constructor(private readonly opts: ServerOptions = {}) {}

  register<S extends DescService>(service: S, impl: ServiceImpl<S>): this {
    const methods = this.services.get(service.typeName) ?? new Map<string, Route>();
    for (const m of service.methods) {
      const handler = (impl as Record<string, Route['handler'] | undefined>)[m.localName];
      if (!handler || m.methodKind !== 'unary') continue;
      methods.set(m.name, {
        name: `${service.typeName}/${m.name}`,
        input: m.input,
        output: m.output,
        handler: handler.bind(impl),
      });
    }
    this.services.set(service.typeName, methods);
    return this;
  }

  /** Listens on a unix socket path (a stale socket file is replaced). */
  async listen(path: string): Promise<void> {
    if (this.shuttingDown)
      throw new Error(`ttrpc server: cannot listen on ${path}: the server is shutting down`);
    fs.rmSync(path, { force: true });
    const srv = net.createServer((sock) => this.serve(sock));
    await new Promise<void>((resolve, reject) => {
      srv.once('error', (e) => reject(new Error(`ttrpc server: listening on ${path}: ${e.message}`)));
      srv.listen(path, () => {
        srv.removeAllListeners('error');
        srv.on('error', (e) => log.error({ path, err: e.message }, 'ttrpc listener failed'));
        resolve();
      });
    });
    this.listeners.push(srv);
  }

  /** Serves ttrpc on one already-open duplex stream. */
  serve(stream: Duplex): ServerConnection {
    const conn = new ServerConnection(stream, this, this.opts);
    if (this.shuttingDown) {
      conn.close();
      return conn;
    }
    this.connections.add(conn);
    stream.once('close', () => this.forget(conn));
    return conn;
  }

  /**
   * Graceful stop: stops accepting connections, answers new calls with Unavailable, closes each connection
   * once its calls in flight are answered, and after graceMs closes whatever is left.
   */
  async shutdown(graceMs = 5000): Promise<void> {
    this.shuttingDown = true;
    // close() stops accepting at once; its callback would wait for every connection, so it is not awaited.
    for (const l of this.listeners.splice(0)) l.close();
    const allClosed = new Promise<void>((r) => {
      this.drained = r;
    });
    for (const c of [...this.connections]) if (c.inFlight === 0) c.close(true);
    if (this.connections.size === 0) this.drained?.();
    let timer: NodeJS.Timeout | undefined;
    const graceOver = new Promise((r) => {
      timer = setTimeout(r, graceMs);
    });
    await Promise.race([allClosed, graceOver]);
    clearTimeout(timer);
    this.close();
  }

  /** Closes everything at once; calls in flight are aborted and get no answer. */
  close(): void {
    this.shuttingDown = true;
    for (const l of this.listeners.splice(0)) l.close();
    for (const c of this.connections) c.close();
    this.connections.clear();
    this.drained?.();
  }

  /** @internal */
  route(service: string, method: string): Route | TtrpcError {
    const methods = this.services.get(service);
    if (!methods) return new TtrpcError(Code.Unimplemented, `service ${service} is not served here`);
    return (
      methods.get(method) ??
      new TtrpcError(Code.Unimplemented, `method ${service}/${method} is not implemented`)
    );
  }

  /** @internal */
  get draining(): boolean {
    return this.shuttingDown;
  }

  /** @internal A connection's last call in flight was answered. */
  idle(conn: ServerConnection): void {
    if (this.shuttingDown) conn.close(true);
  }

  private forget(conn: ServerConnection): void {
    this.connections.delete(conn);
    if (this.connections.size === 0) this.drained?.();
  }
}

/** One call being served; it is the handler's CallContext (the AbortSignal is made only if asked for). */
class InboundCall implements CallContext {
  readonly metadata = new Map<string, string[]>();
  deadline: number | undefined;
  timer: NodeJS.Timeout | undefined;
  done = false;
  private controller: AbortController | undefined;
  private abortReason: Error | undefined;

  constructor(
    readonly streamId: number,
    readonly service: string,
    readonly method: string,
  ) {}

  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.abortReason) this.controller.abort(this.abortReason);
    }
    return this.controller.signal;
  }

  abort(reason: Error): void {
    if (this.abortReason) return;
    this.abortReason = reason;
    this.controller?.abort(reason);
  }
}

export class ServerConnection {
  private readonly reader: FrameReader;
  private readonly writer: FrameWriter;
  private readonly maxMessageSize: number;
  private readonly calls = new Set<InboundCall>();
  private closing = false;
  private peerEnded = false;
  private throttled = false;

  constructor(
    private readonly stream: Duplex,
    private readonly server: TtrpcServer,
    private readonly opts: ServerOptions,
  ) {
    this.maxMessageSize = opts.maxMessageSize ?? MAX_MESSAGE_SIZE;
    this.reader = new FrameReader(this.maxMessageSize);
    this.writer = new FrameWriter(stream);
    stream.on('data', (chunk: Buffer) => this.onData(chunk));
    stream.on('error', (err) => this.connectionError(err));
    // The peer will send nothing more: answer what is in flight, then close our side too.
    stream.on('end', () => {
      this.peerEnded = true;
      if (this.calls.size === 0) this.close(true);
    });
    stream.on('close', () => this.abortAll(new TtrpcError(Code.Canceled, 'the connection closed')));
  }

  /** Calls being served on this connection. */
  get inFlight(): number {
    return this.calls.size;
  }

  /** Closes the connection: gracefully sends what is queued first; otherwise at once. */
  close(graceful = false): void {
    if (graceful) {
      if (this.closing || this.stream.destroyed) return;
      this.closing = true;
      this.writer.flush();
      this.stream.end();
      // A peer that never reads could hold the socket open forever.
      setTimeout(() => this.stream.destroy(), 1000).unref();
      return;
    }
    if (!this.stream.destroyed) this.stream.destroy();
    this.abortAll(new TtrpcError(Code.Canceled, 'the server closed the connection'));
  }

  private abortAll(reason: TtrpcError): void {
    for (const c of this.calls) this.finish(c, reason);
  }

  private connectionError(err: Error): void {
    log.debug({ err: err.message }, 'ttrpc connection error');
    this.opts.onConnectionError?.(err);
  }

  private onData(chunk: Buffer): void {
    for (const f of this.reader.push(chunk)) this.onFrame(f);
  }

  private onFrame(f: Frame): void {
    if (f.oversized !== undefined) {
      const err = new OversizedFrameError(f.streamId, f.oversized, this.maxMessageSize);
      this.connectionError(err);
      this.respond(f.streamId, Code.ResourceExhausted, err.message);
      return;
    }
    // Other types (stream data, from newer protocol versions) are ignored, as upstream does.
    if (f.type !== MessageType.Request) return;
    let req: WireRequest;
    try {
      req = decodeRequest(f.payload);
    } catch (e) {
      this.respond(f.streamId, Code.InvalidArgument, `unmarshal request error: ${(e as Error).message}`);
      return;
    }
    if (f.streamId % 2 !== 1) {
      this.respond(f.streamId, Code.InvalidArgument, 'StreamID must be odd for client initiated streams');
      return;
    }
    if (this.server.draining) {
      this.respond(f.streamId, Code.Unavailable, `${req.service}/${req.method}: the server is shutting down`);
      return;
    }
    const route = this.server.route(req.service, req.method);
    if (route instanceof TtrpcError) {
      this.respond(f.streamId, route.code, route.message);
      return;
    }
    this.dispatch(f.streamId, req, route);
  }

  private dispatch(streamId: number, req: WireRequest, route: Route): void {
    const call = new InboundCall(streamId, req.service, req.method);
    for (const [k, v] of req.metadata) {
      const list = call.metadata.get(k);
      if (list) list.push(v);
      else call.metadata.set(k, [v]);
    }
    if (req.timeoutNano !== 0) {
      const ms = req.timeoutNano / 1e6;
      call.deadline = Date.now() + ms;
      if (ms <= 0) {
        this.respond(streamId, Code.DeadlineExceeded, `${route.name}: the deadline had passed on arrival`);
        return;
      }
      if (ms <= MAX_TIMER_MS) call.timer = setTimeout(this.onDeadline, ms, call, route);
    }
    this.calls.add(call);
    let input: unknown;
    try {
      input = fromBinary(route.input, req.payload);
    } catch (e) {
      this.fail(
        call,
        new TtrpcError(Code.InvalidArgument, `${route.name}: malformed request: ${(e as Error).message}`),
      );
      return;
    }
    let out: unknown;
    try {
      out = route.handler(input, call);
    } catch (e) {
      this.fail(call, e);
      return;
    }
    if (typeof (out as PromiseLike<unknown> | undefined)?.then === 'function') {
      (out as PromiseLike<unknown>).then(
        (v) => this.succeed(call, route, v),
        (e) => this.fail(call, e),
      );
    } else {
      this.succeed(call, route, out);
    }
  }

  private readonly onDeadline = (call: InboundCall, route: Route): void => {
    this.fail(call, new TtrpcError(Code.DeadlineExceeded, `${route.name}: deadline exceeded`));
  };

  private succeed(call: InboundCall, route: Route, out: unknown): void {
    if (call.done) return;
    let payload: Uint8Array | EncodedMessage;
    if (out instanceof EncodedMessage) {
      payload = out;
    } else {
      try {
        const msg = isMessage(out, route.output)
          ? out
          : create(route.output, out as MessageInitShape<DescMessage>);
        payload = toBinary(route.output, msg);
      } catch (e) {
        this.fail(
          call,
          new TtrpcError(Code.Internal, `${route.name}: cannot encode the response: ${(e as Error).message}`),
        );
        return;
      }
    }
    if (payload.length + responseOverhead(payload.length) > this.maxMessageSize) {
      this.fail(
        call,
        new TtrpcError(
          Code.ResourceExhausted,
          `${route.name}: response is ${payload.length} bytes, over the maximum message size of ${this.maxMessageSize}`,
        ),
      );
      return;
    }
    // Answer before finishing: finishing the last call of a draining connection closes it.
    if (payload instanceof EncodedMessage) this.respondParts(call.streamId, payload);
    else this.respond(call.streamId, Code.OK, '', payload);
    this.finish(call);
  }

  private fail(call: InboundCall, e: unknown): void {
    if (call.done) return;
    const { code, message } = statusOf(e);
    this.respond(call.streamId, code, message);
    this.finish(call, e instanceof Error ? e : new TtrpcError(code, message));
  }

  /** Ends the bookkeeping of a call; with a reason, its handler's signal is aborted too. */
  private finish(call: InboundCall, reason?: Error): void {
    if (call.done) return;
    call.done = true;
    if (call.timer) clearTimeout(call.timer);
    if (reason) call.abort(reason);
    this.calls.delete(call);
    if (this.calls.size === 0) {
      if (this.peerEnded) this.close(true);
      else this.server.idle(this);
    }
  }

  private respond(
    streamId: number,
    code: Code,
    message: string,
    payload: Uint8Array = new Uint8Array(0),
  ): void {
    if (this.stream.destroyed || this.stream.writableEnded) return;
    this.writer.write(encodeResponseFrame(streamId, code, message, payload));
    this.throttleIfNeeded();
  }

  /** An OK answer whose payload the handler encoded, written part by part (no copy). */
  private respondParts(streamId: number, msg: EncodedMessage): void {
    if (this.stream.destroyed || this.stream.writableEnded) return;
    this.writer.writeParts([encodeOkResponseHead(streamId, msg.length), ...msg.parts]);
    this.throttleIfNeeded();
  }

  private throttleIfNeeded(): void {
    // A client that sends without reading would make us queue answers without bound: stop reading its
    // requests until it catches up, as the blocking write in containerd/ttrpc does.
    if (this.stream.writableNeedDrain && !this.throttled) {
      this.throttled = true;
      this.stream.pause();
      this.stream.once('drain', () => {
        this.throttled = false;
        this.stream.resume();
      });
    }
  }
}
