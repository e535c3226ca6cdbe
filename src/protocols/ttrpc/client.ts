// ttrpc client: many unary calls in flight on one connection, odd stream ids, per-call deadlines.
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
import { decodeResponse, encodeRequestFrame, encodeRequestPrefix } from './envelope.js';
import { type Frame, FrameReader, HEADER_LENGTH, MAX_MESSAGE_SIZE, MessageType } from './frame.js';
import { Code, TtrpcError } from './status.js';
import { FrameWriter } from './writer.js';

export interface CallOptions {
  /** Deadline for this call in ms (0 or unset: none); sent to the server as timeout_nano as well. */
  timeoutMs?: number;
  metadata?: Record<string, string | string[]>;
  signal?: AbortSignal;
}

export interface ClientOptions {
  maxMessageSize?: number;
  /** Used in error messages so a failure says which peer it was talking to. */
  peer?: string;
}

/** setTimeout's ceiling; longer deadlines are only sent to the server. */
const MAX_TIMER_MS = 2 ** 31 - 1;

const log = logger('ttrpc-client');

// The service/method fields of a Request never change per method: encode them once.
const prefixes = new Map<string, Map<string, Buffer>>();
function requestPrefix(service: string, method: string): Buffer {
  let byMethod = prefixes.get(service);
  if (!byMethod) {
    if (prefixes.size >= 1024) prefixes.clear(); // callers making up names must not grow this forever
    byMethod = new Map();
    prefixes.set(service, byMethod);
  }
  let p = byMethod.get(method);
  if (!p) {
    p = encodeRequestPrefix(service, method);
    if (byMethod.size < 1024) byMethod.set(method, p);
  }
  return p;
}

function flattenMetadata(md: Record<string, string | string[]>): [string, string][] {
  const out: [string, string][] = [];
  for (const key of Object.keys(md)) {
    const v = md[key]!;
    if (typeof v === 'string') out.push([key, v]);
    else for (const one of v) out.push([key, one]);
  }
  return out;
}

class PendingCall {
  timer: NodeJS.Timeout | undefined;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;

  constructor(
    readonly service: string,
    readonly method: string,
    readonly resolve: (payload: Uint8Array) => void,
    readonly reject: (err: Error) => void,
  ) {}

  get what(): string {
    return `${this.service}/${this.method}`;
  }

  /** Stops the deadline timer and the abort listener (a long-lived signal must not collect listeners). */
  settle(): void {
    if (this.timer) clearTimeout(this.timer);
    if (this.onAbort) this.signal!.removeEventListener('abort', this.onAbort);
  }
}

export class TtrpcClient {
  private nextStreamId = 1;
  private readonly pending = new Map<number, PendingCall>();
  private readonly reader: FrameReader;
  private readonly writer: FrameWriter;
  private readonly maxMessageSize: number;
  private closedError: Error | undefined;
  private readonly closeListeners: ((err: Error) => void)[] = [];
  readonly peer: string;

  constructor(
    private readonly stream: Duplex,
    opts: ClientOptions = {},
  ) {
    this.maxMessageSize = opts.maxMessageSize ?? MAX_MESSAGE_SIZE;
    this.reader = new FrameReader(this.maxMessageSize);
    this.writer = new FrameWriter(stream);
    this.peer = opts.peer ?? 'ttrpc server';
    stream.on('data', (chunk: Buffer) => this.onData(chunk));
    stream.on('error', (err) =>
      this.fail(new TtrpcError(Code.Unavailable, `connection to ${this.peer} failed: ${err.message}`)),
    );
    stream.on('close', () =>
      this.fail(new TtrpcError(Code.Unavailable, `connection to ${this.peer} closed`)),
    );
    stream.on('end', () =>
      this.fail(new TtrpcError(Code.Unavailable, `connection to ${this.peer} closed by the server`)),
    );
  }

  /** Connects to a ttrpc server on a unix socket. */
  static connect(path: string, opts: ClientOptions & { timeoutMs?: number } = {}): Promise<TtrpcClient> {
    return new Promise((resolve, reject) => {
      const sock = net.createConnection(path);
      const timer = opts.timeoutMs
        ? setTimeout(() => {
            sock.destroy();
            reject(
              new TtrpcError(
                Code.DeadlineExceeded,
                `connecting to ${path}: timed out after ${opts.timeoutMs} ms`,
              ),
            );
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

  /** Calls listener once when the connection is gone (at once if it already is). */
  onClose(listener: (err: Error) => void): void {
    if (this.closedError) listener(this.closedError);
    else this.closeListeners.push(listener);
  }

  /** Calls in flight. */
  get inFlight(): number {
    return this.pending.size;
  }

  /** One unary call with an already-encoded payload; resolves with the response payload. */
  callRaw(service: string, method: string, payload: Uint8Array, opts: CallOptions = {}): Promise<Uint8Array> {
    if (this.closedError) {
      return Promise.reject(
        new TtrpcError(Code.Unavailable, `${service}/${method}: ${this.closedError.message}`),
      );
    }
    const { timeoutMs, signal, metadata } = opts;
    if (signal?.aborted)
      return Promise.reject(new TtrpcError(Code.Canceled, `${service}/${method}: canceled`));
    const streamId = this.nextStreamId;
    this.nextStreamId = (this.nextStreamId + 2) >>> 0 || 1; // client stream ids are odd; wrap to 1
    const timeout = timeoutMs !== undefined && timeoutMs > 0 ? timeoutMs : 0;
    const frame = encodeRequestFrame(
      streamId,
      requestPrefix(service, method),
      payload,
      Math.round(timeout * 1e6),
      metadata ? flattenMetadata(metadata) : undefined,
    );
    if (frame.length - HEADER_LENGTH > this.maxMessageSize) {
      return Promise.reject(
        new TtrpcError(
          Code.ResourceExhausted,
          `${service}/${method}: request is ${frame.length - HEADER_LENGTH} bytes, over the maximum message size of ${this.maxMessageSize}`,
        ),
      );
    }
    return new Promise<Uint8Array>((resolve, reject) => {
      const p = new PendingCall(service, method, resolve, reject);
      if (timeout && timeout <= MAX_TIMER_MS)
        p.timer = setTimeout(this.onTimeout, timeout, streamId, timeout);
      if (signal) {
        p.signal = signal;
        p.onAbort = () => {
          if (this.pending.get(streamId) !== p) return;
          this.pending.delete(streamId);
          p.settle();
          reject(new TtrpcError(Code.Canceled, `${p.what}: canceled`));
        };
        signal.addEventListener('abort', p.onAbort, { once: true });
      }
      this.pending.set(streamId, p);
      this.writer.write(frame);
    });
  }

  /** One unary call of a generated method descriptor. */
  async call<I extends DescMessage, O extends DescMessage>(
    method: DescMethodUnary<I, O>,
    req: MessageInitShape<I>,
    opts?: CallOptions,
  ): Promise<MessageShape<O>> {
    let payload: Uint8Array;
    try {
      const msg = isMessage(req, method.input) ? req : create(method.input, req);
      payload = toBinary(method.input, msg);
    } catch (e) {
      throw new TtrpcError(
        Code.InvalidArgument,
        `${method.parent.typeName}/${method.name}: cannot encode the request: ${(e as Error).message}`,
      );
    }
    const res = await this.callRaw(method.parent.typeName, method.name, payload, opts);
    try {
      return fromBinary(method.output, res);
    } catch (e) {
      throw new TtrpcError(
        Code.Internal,
        `${method.parent.typeName}/${method.name}: bad response from ${this.peer}: ${(e as Error).message}`,
      );
    }
  }

  /** Closes the connection; calls in flight fail with Unavailable. */
  close(): void {
    this.fail(new TtrpcError(Code.Unavailable, `connection to ${this.peer} closed by the client`));
  }

  private readonly onTimeout = (streamId: number, timeoutMs: number): void => {
    const p = this.pending.get(streamId);
    if (!p) return;
    this.pending.delete(streamId);
    p.settle();
    p.reject(
      new TtrpcError(Code.DeadlineExceeded, `${p.what}: no answer from ${this.peer} within ${timeoutMs} ms`),
    );
  };

  private onData(chunk: Buffer): void {
    for (const f of this.reader.push(chunk)) this.onFrame(f);
  }

  private onFrame(f: Frame): void {
    const p = this.pending.get(f.streamId);
    if (!p) {
      // Late answers to calls that timed out or were canceled land here; so would a confused server.
      log.debug(
        { peer: this.peer, stream_id: f.streamId, type: f.type },
        'ttrpc message for no pending call',
      );
      return;
    }
    this.pending.delete(f.streamId);
    p.settle();
    if (f.oversized !== undefined) {
      p.reject(
        new TtrpcError(
          Code.ResourceExhausted,
          `${p.what}: response from ${this.peer} is ${f.oversized} bytes, over the maximum message size of ${this.maxMessageSize}`,
        ),
      );
      return;
    }
    if (f.type !== MessageType.Response) {
      p.reject(
        new TtrpcError(Code.Internal, `${p.what}: ${this.peer} sent message type ${f.type}, not a response`),
      );
      return;
    }
    let res: ReturnType<typeof decodeResponse>;
    try {
      res = decodeResponse(f.payload);
    } catch (e) {
      p.reject(new TtrpcError(Code.Internal, `${p.what}: from ${this.peer}: ${(e as Error).message}`));
      return;
    }
    if (res.code !== Code.OK) p.reject(new TtrpcError(res.code, res.message));
    else p.resolve(res.payload);
  }

  private fail(err: Error): void {
    if (this.closedError) return;
    this.closedError = err;
    this.stream.destroy();
    for (const p of this.pending.values()) {
      p.settle();
      p.reject(new TtrpcError(Code.Unavailable, `${p.what}: ${err.message}`));
    }
    this.pending.clear();
    for (const l of this.closeListeners.splice(0)) {
      try {
        l(err);
      } catch (e) {
        log.error({ peer: this.peer, err: (e as Error).message }, 'ttrpc onClose listener threw');
      }
    }
  }
}

type UnaryOf<M> = M extends DescMethodUnary<infer I, infer O>
  ? (req: MessageInitShape<I>, opts?: CallOptions) => Promise<MessageShape<O>>
  : never;

/** A typed client for a generated service: `client.createContainer({...})`. */
export type Client<S extends DescService> = { [K in keyof S['method']]: UnaryOf<S['method'][K]> };

export interface ClientDefaults {
  /** Deadline for every call that sets none itself. */
  timeoutMs?: number;
  /** Methods (local names) that wait by design (long polls, stream reads) and get no default deadline. */
  unbounded?: readonly string[];
}

export function createClient<S extends DescService>(
  service: S,
  conn: TtrpcClient,
  defaults: ClientDefaults = {},
): Client<S> {
  const out: Record<string, unknown> = {};
  const unbounded = new Set(defaults.unbounded ?? []);
  for (const m of service.methods) {
    if (m.methodKind !== 'unary') continue;
    const timeoutMs = unbounded.has(m.localName) ? undefined : defaults.timeoutMs;
    out[m.localName] = (req: MessageInitShape<DescMessage>, opts?: CallOptions) =>
      conn.call(
        m as DescMethodUnary<DescMessage, DescMessage>,
        req,
        timeoutMs && opts?.timeoutMs === undefined ? { ...opts, timeoutMs } : opts,
      );
  }
  return out as Client<S>;
}
