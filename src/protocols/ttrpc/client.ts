// ttrpc client: many unary calls in flight on one connection, odd stream ids, per-call deadlines.
import net from 'node:net';
import type { Duplex } from 'node:stream';
import {
  create,
  fromBinary,
  toBinary,
  type DescMethodUnary,
  type DescMessage,
  type DescService,
  type MessageInitShape,
  type MessageShape,
} from '@bufbuild/protobuf';
import { RequestSchema, ResponseSchema } from '../gen/ttrpc_pb.js';
import { encodeFrame, FrameReader, MAX_MESSAGE_SIZE, MessageType } from './frame.js';
import { Code, TtrpcError } from './status.js';

export interface CallOptions {
  /** Deadline for this call; sent to the server as timeout_nano as well. */
  timeoutMs?: number;
  metadata?: Record<string, string | string[]>;
  signal?: AbortSignal;
}

interface Pending {
  resolve: (payload: Uint8Array) => void;
  reject: (err: Error) => void;
  timer?: NodeJS.Timeout;
  what: string;
}

export interface ClientOptions {
  maxMessageSize?: number;
  /** Used in error messages so a failure says which peer it was talking to. */
  peer?: string;
}

export class TtrpcClient {
  private nextStreamId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly reader: FrameReader;
  private closedError: Error | undefined;
  private readonly closeListeners: ((err: Error) => void)[] = [];
  readonly peer: string;

  constructor(
    private readonly stream: Duplex,
    opts: ClientOptions = {},
  ) {
    this.reader = new FrameReader(opts.maxMessageSize ?? MAX_MESSAGE_SIZE);
    this.peer = opts.peer ?? 'ttrpc server';
    stream.on('data', (chunk: Buffer) => this.onData(chunk));
    stream.on('error', (err) => this.fail(new TtrpcError(Code.Unavailable, `connection to ${this.peer} failed: ${err.message}`)));
    stream.on('close', () => this.fail(new TtrpcError(Code.Unavailable, `connection to ${this.peer} closed`)));
    stream.on('end', () => this.fail(new TtrpcError(Code.Unavailable, `connection to ${this.peer} closed by the server`)));
  }

  /** Connects to a ttrpc server on a unix socket. */
  static connect(path: string, opts: ClientOptions & { timeoutMs?: number } = {}): Promise<TtrpcClient> {
    return new Promise((resolve, reject) => {
      const sock = net.createConnection(path);
      const timer = opts.timeoutMs
        ? setTimeout(() => {
            sock.destroy();
            reject(new TtrpcError(Code.DeadlineExceeded, `connecting to ${path}: timed out after ${opts.timeoutMs} ms`));
          }, opts.timeoutMs)
        : undefined;
      sock.once('connect', () => {
        clearTimeout(timer);
        sock.removeAllListeners('error');
        resolve(new TtrpcClient(sock, { peer: path, ...opts }));
      });
      sock.once('error', (err) => {
        clearTimeout(timer);
        reject(new TtrpcError(Code.Unavailable, `connecting to ${path}: ${err.message}`));
      });
    });
  }

  get closed(): boolean {
    return this.closedError !== undefined;
  }

  onClose(listener: (err: Error) => void): void {
    if (this.closedError) listener(this.closedError);
    else this.closeListeners.push(listener);
  }

  /** One unary call with an already-encoded payload. */
  callRaw(service: string, method: string, payload: Uint8Array, opts: CallOptions = {}): Promise<Uint8Array> {
    const what = `${service}/${method}`;
    if (this.closedError) return Promise.reject(new TtrpcError(Code.Unavailable, `${what}: ${this.closedError.message}`));
    if (opts.signal?.aborted) return Promise.reject(new TtrpcError(Code.Canceled, `${what}: canceled`));
    const streamId = this.nextStreamId;
    this.nextStreamId = (this.nextStreamId + 2) >>> 0 || 1;
    const metadata = Object.entries(opts.metadata ?? {}).flatMap(([key, v]) =>
      (Array.isArray(v) ? v : [v]).map((value) => ({ key, value })),
    );
    const req = create(RequestSchema, {
      service,
      method,
      payload,
      timeoutNano: opts.timeoutMs ? BigInt(Math.round(opts.timeoutMs * 1e6)) : 0n,
      metadata,
    });
    return new Promise<Uint8Array>((resolve, reject) => {
      const p: Pending = { resolve, reject, what };
      if (opts.timeoutMs) {
        p.timer = setTimeout(() => {
          this.pending.delete(streamId);
          reject(new TtrpcError(Code.DeadlineExceeded, `${what}: no answer from ${this.peer} within ${opts.timeoutMs} ms`));
        }, opts.timeoutMs);
      }
      if (opts.signal) {
        opts.signal.addEventListener(
          'abort',
          () => {
            if (this.pending.delete(streamId)) {
              clearTimeout(p.timer);
              reject(new TtrpcError(Code.Canceled, `${what}: canceled`));
            }
          },
          { once: true },
        );
      }
      this.pending.set(streamId, p);
      this.stream.write(encodeFrame(streamId, MessageType.Request, toBinary(RequestSchema, req)));
    });
  }

  /** One unary call of a generated method descriptor. */
  async call<I extends DescMessage, O extends DescMessage>(
    method: DescMethodUnary<I, O>,
    req: MessageInitShape<I>,
    opts: CallOptions = {},
  ): Promise<MessageShape<O>> {
    const payload = toBinary(method.input, create(method.input, req));
    const res = await this.callRaw(method.parent.typeName, method.name, payload, opts);
    try {
      return fromBinary(method.output, res);
    } catch (e) {
      throw new TtrpcError(Code.Internal, `${method.parent.typeName}/${method.name}: bad response: ${(e as Error).message}`);
    }
  }

  close(): void {
    this.stream.destroy();
    this.fail(new TtrpcError(Code.Unavailable, `connection to ${this.peer} closed by the client`));
  }

  private onData(chunk: Buffer): void {
    let frames;
    try {
      frames = this.reader.push(chunk);
    } catch (e) {
      this.stream.destroy();
      this.fail(new TtrpcError(Code.Internal, `from ${this.peer}: ${(e as Error).message}`));
      return;
    }
    for (const f of frames) {
      if (f.type !== MessageType.Response) continue;
      const p = this.pending.get(f.streamId);
      if (!p) continue; // timed out or canceled already
      this.pending.delete(f.streamId);
      clearTimeout(p.timer);
      let res;
      try {
        res = fromBinary(ResponseSchema, f.payload);
      } catch (e) {
        p.reject(new TtrpcError(Code.Internal, `${p.what}: malformed response: ${(e as Error).message}`));
        continue;
      }
      if (res.status && res.status.code !== Code.OK) p.reject(new TtrpcError(res.status.code, res.status.message));
      else p.resolve(res.payload);
    }
  }

  private fail(err: Error): void {
    if (this.closedError) return;
    this.closedError = err;
    for (const [, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new TtrpcError(Code.Unavailable, `${p.what}: ${err.message}`));
    }
    this.pending.clear();
    for (const l of this.closeListeners.splice(0)) l(err);
  }
}

type UnaryOf<M> = M extends DescMethodUnary<infer I, infer O>
  ? (req: MessageInitShape<I>, opts?: CallOptions) => Promise<MessageShape<O>>
  : never;

/** A typed client for a generated service: `client.createContainer({...})`. */
export type Client<S extends DescService> = { [K in keyof S['method']]: UnaryOf<S['method'][K]> };

export function createClient<S extends DescService>(service: S, conn: TtrpcClient): Client<S> {
  const out: Record<string, unknown> = {};
  for (const m of service.methods) {
    if (m.methodKind !== 'unary') continue;
    out[m.localName] = (req: MessageInitShape<DescMessage>, opts?: CallOptions) =>
      conn.call(m as DescMethodUnary<DescMessage, DescMessage>, req, opts);
  }
  return out as Client<S>;
}
