// ttrpc server: serves registered services on unix sockets or any duplex stream (virtio-serial, vsock).
import fs from 'node:fs';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import {
  create,
  fromBinary,
  toBinary,
  type DescMessage,
  type DescMethodUnary,
  type DescService,
  type MessageInitShape,
  type MessageShape,
} from '@bufbuild/protobuf';
import { RequestSchema, ResponseSchema } from '../gen/ttrpc_pb.js';
import { encodeFrame, FrameReader, MAX_MESSAGE_SIZE, MessageType, OversizedFrameError } from './frame.js';
import { Code, TtrpcError } from './status.js';

export interface CallContext {
  service: string;
  method: string;
  metadata: Map<string, string[]>;
  /** Aborted when the call's deadline passes or its connection drops. */
  signal: AbortSignal;
}

type HandlerOf<M> = M extends DescMethodUnary<infer I, infer O>
  ? (req: MessageShape<I>, ctx: CallContext) => Promise<MessageInitShape<O>> | MessageInitShape<O>
  : never;

/** Handlers for some or all of a service's methods; a missing one answers Unimplemented. */
export type ServiceImpl<S extends DescService> = { [K in keyof S['method']]?: HandlerOf<S['method'][K]> };

interface Route {
  method: DescMethodUnary<DescMessage, DescMessage>;
  handler: (req: unknown, ctx: CallContext) => unknown;
}

export interface ServerOptions {
  maxMessageSize?: number;
  /** Called for protocol errors on one connection (the server itself carries on). */
  onConnectionError?: (err: Error) => void;
}

export class TtrpcServer {
  private readonly routes = new Map<string, Route>();
  private readonly listeners: net.Server[] = [];
  private readonly connections = new Set<ServerConnection>();
  private shuttingDown = false;

  constructor(private readonly opts: ServerOptions = {}) {}

  register<S extends DescService>(service: S, impl: ServiceImpl<S>): this {
    for (const m of service.methods) {
      const handler = (impl as Record<string, Route['handler'] | undefined>)[m.localName];
      if (!handler || m.methodKind !== 'unary') continue;
      this.routes.set(`${service.typeName}/${m.name}`, {
        method: m as DescMethodUnary<DescMessage, DescMessage>,
        handler: handler.bind(impl),
      });
    }
    return this;
  }

  /** Listens on a unix socket path (a stale socket file is replaced). */
  async listen(path: string): Promise<void> {
    fs.rmSync(path, { force: true });
    const srv = net.createServer((sock) => this.serve(sock));
    await new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen(path, () => {
        srv.off('error', reject);
        resolve();
      });
    });
    this.listeners.push(srv);
  }

  /** Serves ttrpc on one already-open duplex stream. */
  serve(stream: Duplex): ServerConnection {
    const conn = new ServerConnection(stream, this, this.opts);
    this.connections.add(conn);
    stream.once('close', () => this.connections.delete(conn));
    return conn;
  }

  /** Stops accepting, lets in-flight calls finish (up to graceMs), then closes every connection. */
  async shutdown(graceMs = 5000): Promise<void> {
    this.shuttingDown = true;
    await Promise.all(this.listeners.map((l) => new Promise<void>((r) => l.close(() => r()))));
    const deadline = Date.now() + graceMs;
    while ([...this.connections].some((c) => c.inFlight > 0) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 5));
    }
    this.close();
  }

  /** Closes everything at once. */
  close(): void {
    for (const l of this.listeners) l.close();
    for (const c of this.connections) c.close();
    this.connections.clear();
  }

  /** @internal */
  route(service: string, method: string): Route | undefined {
    return this.routes.get(`${service}/${method}`);
  }

  /** @internal */
  get draining(): boolean {
    return this.shuttingDown;
  }
}

export class ServerConnection {
  private readonly reader: FrameReader;
  private readonly aborts = new Map<number, AbortController>();
  inFlight = 0;

  constructor(
    private readonly stream: Duplex,
    private readonly server: TtrpcServer,
    private readonly opts: ServerOptions,
  ) {
    this.reader = new FrameReader(opts.maxMessageSize ?? MAX_MESSAGE_SIZE);
    stream.on('data', (chunk: Buffer) => this.onData(chunk));
    stream.on('error', (err) => this.opts.onConnectionError?.(err));
    stream.on('close', () => {
      for (const a of this.aborts.values()) a.abort(new TtrpcError(Code.Canceled, 'connection closed'));
      this.aborts.clear();
    });
  }

  close(): void {
    this.stream.destroy();
  }

  private onData(chunk: Buffer): void {
    let frames;
    try {
      frames = this.reader.push(chunk);
    } catch (e) {
      if (e instanceof OversizedFrameError) {
        // Tell the caller why before closing; the announced length cannot be trusted to skip.
        this.respond(e.streamId, new TtrpcError(Code.ResourceExhausted, e.message));
      }
      this.opts.onConnectionError?.(e as Error);
      this.stream.end();
      this.stream.destroy();
      return;
    }
    for (const f of frames) {
      if (f.type === MessageType.Request) void this.handle(f.streamId, f.payload);
    }
  }

  private async handle(streamId: number, payload: Uint8Array): Promise<void> {
    let req;
    try {
      req = fromBinary(RequestSchema, payload);
    } catch (e) {
      this.respond(streamId, new TtrpcError(Code.InvalidArgument, `malformed ttrpc request: ${(e as Error).message}`));
      return;
    }
    if (this.server.draining) {
      this.respond(streamId, new TtrpcError(Code.Unavailable, 'server is shutting down'));
      return;
    }
    const route = this.server.route(req.service, req.method);
    if (!route) {
      this.respond(streamId, new TtrpcError(Code.Unimplemented, `${req.service}/${req.method} is not implemented`));
      return;
    }
    const abort = new AbortController();
    this.aborts.set(streamId, abort);
    const timer =
      req.timeoutNano > 0n
        ? setTimeout(
            () => abort.abort(new TtrpcError(Code.DeadlineExceeded, 'deadline exceeded')),
            Number(req.timeoutNano / 1_000_000n),
          )
        : undefined;
    const metadata = new Map<string, string[]>();
    for (const kv of req.metadata) metadata.set(kv.key, [...(metadata.get(kv.key) ?? []), kv.value]);
    this.inFlight++;
    try {
      let input;
      try {
        input = fromBinary(route.method.input, req.payload);
      } catch (e) {
        throw new TtrpcError(Code.InvalidArgument, `${req.service}/${req.method}: malformed request: ${(e as Error).message}`);
      }
      const ctx: CallContext = { service: req.service, method: req.method, metadata, signal: abort.signal };
      const out = await Promise.race([
        route.handler(input, ctx),
        new Promise((_, reject) => abort.signal.addEventListener('abort', () => reject(abort.signal.reason), { once: true })),
      ]);
      const msg = create(route.method.output, out as MessageInitShape<DescMessage>);
      this.respond(streamId, undefined, toBinary(route.method.output, msg));
    } catch (e) {
      this.respond(streamId, e instanceof TtrpcError ? e : new TtrpcError(Code.Unknown, (e as Error)?.message ?? String(e)));
    } finally {
      clearTimeout(timer);
      this.aborts.delete(streamId);
      this.inFlight--;
    }
  }

  private respond(streamId: number, err?: TtrpcError, payload?: Uint8Array): void {
    if (this.stream.destroyed) return;
    const res = create(ResponseSchema, {
      status: err ? { code: err.code, message: err.message } : { code: Code.OK },
      payload: payload ?? new Uint8Array(),
    });
    this.stream.write(encodeFrame(streamId, MessageType.Response, toBinary(ResponseSchema, res)));
  }
}
