// Behaviour of the TS ttrpc client and server together and against hand-made bytes: concurrency, deadlines,
// dropped connections, graceful shutdown and bad input.
import { execFileSync } from 'node:child_process';
import { getEventListeners } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Duplex } from 'node:stream';
import { create, toBinary } from '@bufbuild/protobuf';
import fc from 'fast-check';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { AgentService } from '../../src/protocols/gen/agent_pb.js';
import { CheckRequestSchema, Health, HealthCheckResponseSchema } from '../../src/protocols/gen/health_pb.js';
import { encodeRequestFrame, encodeRequestPrefix } from '../../src/protocols/ttrpc/envelope.js';
import { decodeResponse } from '../../src/protocols/ttrpc/envelope.js';
import {
  type CallContext,
  Code,
  EncodedMessage,
  type Frame,
  FrameReader,
  MessageType,
  TtrpcClient,
  TtrpcError,
  TtrpcServer,
  createClient,
  encodeBytesMessage,
  encodeFrame,
} from '../../src/protocols/ttrpc/index.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ttrpc-calls-'));
let n = 0;
const sockPath = () => path.join(dir, `s${n++}.sock`);
const servers: TtrpcServer[] = [];
const clients: TtrpcClient[] = [];
const sockets: net.Socket[] = [];

afterEach(() => {
  for (const c of clients.splice(0)) c.close();
  for (const s of sockets.splice(0)) s.destroy();
  for (const s of servers.splice(0)) s.close();
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * A Health server whose Check behaves by CheckRequest.service:
 * "wait" never answers (until aborted), "slow:<ms>" answers after ms, "echo-md:<key>" counts metadata values.
 */
async function startServer(opts: ConstructorParameters<typeof TtrpcServer>[0] = {}) {
  const seen: CallContext[] = [];
  const server = new TtrpcServer(opts).register(Health, {
    check: async (req, ctx) => {
      seen.push(ctx);
      if (req.service === 'wait') {
        await new Promise((_, reject) =>
          ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason)),
        );
      }
      if (req.service.startsWith('slow:')) await sleep(Number(req.service.slice(5)));
      if (req.service.startsWith('echo-md:'))
        return { status: ctx.metadata.get(req.service.slice(8))?.length ?? 0 };
      if (req.service === 'enoent') throw Object.assign(new Error('no such file'), { code: 'ENOENT' });
      if (req.service === 'throw-string') throw 'plain string';
      return { status: 1 };
    },
    version: (req) => ({ agentVersion: 'x'.repeat(Number(req.service) || 0) }),
  });
  servers.push(server);
  const p = sockPath();
  await server.listen(p);
  return { server, path: p, seen };
}

async function connect(p: string, opts: Parameters<typeof TtrpcClient.connect>[1] = {}) {
  const c = await TtrpcClient.connect(p, opts);
  clients.push(c);
  return { conn: c, health: createClient(Health, c) };
}

/** A raw socket speaking frames by hand. */
async function rawConnect(p: string) {
  const sock = net.createConnection(p);
  sockets.push(sock);
  await new Promise((r) => sock.once('connect', r));
  const reader = new FrameReader();
  const frames: Frame[] = [];
  const waiters: (() => void)[] = [];
  sock.on('data', (d: Buffer) => {
    frames.push(...reader.push(d));
    for (const w of waiters.splice(0)) w();
  });
  const next = async (timeoutMs = 2000): Promise<Frame> => {
    const deadline = Date.now() + timeoutMs;
    while (frames.length === 0) {
      if (Date.now() > deadline) throw new Error('no frame arrived');
      await new Promise<void>((r) => {
        waiters.push(r);
        setTimeout(r, 20);
      });
    }
    return frames.shift()!;
  };
  return { sock, next, frames };
}

function checkRequest(streamId: number, service: string, timeoutNano = 0): Buffer {
  const payload = toBinary(CheckRequestSchema, create(CheckRequestSchema, { service }));
  return encodeRequestFrame(streamId, encodeRequestPrefix('grpc.Health', 'Check'), payload, timeoutNano);
}

describe('ttrpc calls', () => {
  it('keeps many calls in flight on one connection and matches each answer to its call', async () => {
    const { path: p } = await startServer();
    const { health } = await connect(p);
    const delays = Array.from({ length: 200 }, (_, i) => (i * 7) % 23);
    const results = await Promise.all(
      delays.map((d, i) =>
        health.check(
          { service: i % 2 ? `slow:${d}` : 'echo-md:k' },
          { metadata: { k: Array(i % 5).fill('v') } },
        ),
      ),
    );
    results.forEach((r, i) => expect(r.status).toBe(i % 2 ? 1 : i % 5));
  });

  it('carries metadata, deadlines and maps thrown errors to status codes', async () => {
    const { path: p, seen } = await startServer();
    const { health } = await connect(p);
    await health.check({ service: 'x' }, { timeoutMs: 60_000, metadata: { a: 'b' } });
    expect(seen[0]!.metadata.get('a')).toEqual(['b']);
    expect(seen[0]!.deadline).toBeGreaterThan(Date.now() + 50_000);
    await health.check({ service: 'x' });
    expect(seen[1]!.deadline).toBeUndefined();
    await expect(health.check({ service: 'enoent' })).rejects.toMatchObject({
      code: Code.NotFound,
      message: 'no such file',
    });
    await expect(health.check({ service: 'throw-string' })).rejects.toMatchObject({
      code: Code.Unknown,
      message: 'plain string',
    });
  });

  it('fails a call at its deadline on the client, and the server aborts the handler at timeout_nano', async () => {
    const { path: p, seen } = await startServer();
    const { health, conn } = await connect(p);
    const err = await health.check({ service: 'wait' }, { timeoutMs: 50 }).catch((e: TtrpcError) => e);
    expect(err).toBeInstanceOf(TtrpcError);
    expect(err).toMatchObject({ code: Code.DeadlineExceeded });
    expect((err as Error).message).toMatch(/grpc.Health\/Check: no answer from .* within 50 ms/);
    // The server saw the same deadline and aborted the handler's signal.
    for (let i = 0; i < 100 && !seen[0]?.signal.aborted; i++) await sleep(10);
    expect(seen[0]!.signal.reason).toMatchObject({ code: Code.DeadlineExceeded });
    expect((await health.check({ service: 'x' })).status).toBe(1);
    expect(conn.inFlight).toBe(0);
  });

  it('answers DeadlineExceeded itself when timeout_nano passes (a client without a local timer)', async () => {
    const { path: p } = await startServer();
    const raw = await rawConnect(p);
    raw.sock.write(checkRequest(1, 'wait', 30e6));
    const f = await raw.next();
    expect(f.streamId).toBe(1);
    expect(decodeResponse(f.payload).code).toBe(Code.DeadlineExceeded);
  });

  it('cancels with an AbortSignal and leaves no listener behind on a reused signal', async () => {
    const { path: p } = await startServer();
    const { health } = await connect(p);
    const keep = new AbortController();
    for (let i = 0; i < 20; i++) await health.check({ service: 'x' }, { signal: keep.signal });
    expect(getEventListeners(keep.signal, 'abort')).toHaveLength(0);
    const ac = new AbortController();
    const pending = health.check({ service: 'wait' }, { signal: ac.signal });
    ac.abort();
    await expect(pending).rejects.toMatchObject({ code: Code.Canceled });
    await expect(health.check({ service: 'x' }, { signal: ac.signal })).rejects.toMatchObject({
      code: Code.Canceled,
    });
  });

  it('fails every pending call at once when the connection drops, and later calls at once too', async () => {
    const { path: p, server } = await startServer();
    const { health, conn } = await connect(p);
    let closedWith: Error | undefined;
    conn.onClose((e) => {
      closedWith = e;
    });
    const calls = Array.from({ length: 10 }, () => health.check({ service: 'wait' }).catch((e: Error) => e));
    await sleep(20);
    server.close();
    const errs = await Promise.all(calls);
    for (const e of errs) {
      expect(e).toMatchObject({ code: Code.Unavailable });
      expect((e as Error).message).toMatch(/^grpc.Health\/Check: connection to .*s\d+\.sock closed/);
    }
    expect(conn.closed).toBe(true);
    expect(closedWith).toBeDefined();
    await expect(health.check({ service: 'x' })).rejects.toMatchObject({ code: Code.Unavailable });
  });

  it('shuts down gracefully: in-flight calls finish, new calls are refused, then connections close', async () => {
    const { path: p, server } = await startServer();
    const { health, conn } = await connect(p);
    const inflight = health.check({ service: 'slow:150' });
    await sleep(20);
    const done = server.shutdown(5000);
    await expect(health.check({ service: 'x' })).rejects.toMatchObject({ code: Code.Unavailable });
    expect((await inflight).status).toBe(1);
    await done;
    for (let i = 0; i < 50 && !conn.closed; i++) await sleep(10);
    expect(conn.closed).toBe(true);
    expect(fs.existsSync(p)).toBe(false);
    await expect(TtrpcClient.connect(p)).rejects.toMatchObject({ code: Code.Unavailable });
  });

  it('ends a shutdown after the grace period, aborting calls that never finish', async () => {
    const { path: p, server, seen } = await startServer();
    const { health } = await connect(p);
    const stuck = health.check({ service: 'wait' }).catch((e: Error) => e);
    await sleep(20);
    await server.shutdown(100);
    expect(await stuck).toMatchObject({ code: Code.Unavailable });
    expect(seen[0]!.signal.aborted).toBe(true);
  });

  it('works over any duplex: fs streams on FIFOs (as a virtio-serial port is opened)', async () => {
    const up = path.join(dir, `up${n++}`);
    const down = path.join(dir, `down${n++}`);
    execFileSync('mkfifo', [up, down]);
    // r+ opens a FIFO without waiting for the other end.
    const files = [
      fs.createReadStream(up, { flags: 'r+' }),
      fs.createWriteStream(down, { flags: 'r+' }),
      fs.createReadStream(down, { flags: 'r+' }),
      fs.createWriteStream(up, { flags: 'r+' }),
    ] as const;
    const serverSide = Duplex.from({ readable: files[0], writable: files[1] });
    const clientSide = Duplex.from({ readable: files[2], writable: files[3] });
    const server = new TtrpcServer().register(Health, { check: (r) => ({ status: r.service.length }) });
    servers.push(server);
    server.serve(serverSide);
    const conn = new TtrpcClient(clientSide, { peer: 'fifo' });
    clients.push(conn);
    const health = createClient(Health, conn);
    const got = await Promise.all(['a', 'bb', 'ccc'].map((service) => health.check({ service })));
    expect(got.map((r) => r.status)).toEqual([1, 2, 3]);
    conn.close();
    server.close();
    // A read blocked on a FIFO holds its fd (and a libuv thread) until data comes: feed each one a byte.
    for (const fifo of [up, down]) {
      const fd = fs.openSync(fifo, 'r+');
      fs.writeSync(fd, 'x');
      fs.closeSync(fd);
    }
    // (Destroying the duplex destroys these with an AbortError; only their closing matters here.)
    await Promise.all(
      files.map((f: NodeJS.EventEmitter & { closed: boolean }) =>
        f.closed ? undefined : new Promise((r) => f.once('close', r)),
      ),
    );
  });
});

describe('ttrpc bad input', () => {
  it('sends an empty status for OK, as containerd/ttrpc does', async () => {
    const { path: p } = await startServer();
    const raw = await rawConnect(p);
    raw.sock.write(checkRequest(1, 'x'));
    const f = await raw.next();
    expect(f.type).toBe(MessageType.Response);
    const body = Buffer.from(f.payload);
    expect([...body.subarray(0, 2)]).toEqual([0x0a, 0x00]);
    expect(body.subarray(2)).toEqual(
      Buffer.concat([
        Buffer.from([0x12, 2]),
        toBinary(HealthCheckResponseSchema, create(HealthCheckResponseSchema, { status: 1 })),
      ]),
    );
  });

  it('discards an oversized request, answers ResourceExhausted on its stream and keeps the connection', async () => {
    const errors: Error[] = [];
    const { path: p } = await startServer({ onConnectionError: (e) => errors.push(e) });
    const raw = await rawConnect(p);
    const big = Buffer.alloc((4 << 20) + 1, 0x41);
    raw.sock.write(encodeFrame(5, MessageType.Request, big));
    raw.sock.write(checkRequest(7, 'x'));
    const first = await raw.next(5000);
    expect(first.streamId).toBe(5);
    expect(decodeResponse(first.payload)).toMatchObject({ code: Code.ResourceExhausted });
    expect(decodeResponse(first.payload).message).toMatch(
      /4194305 bytes, over the maximum message size of 4194304/,
    );
    const second = await raw.next();
    expect(second.streamId).toBe(7);
    expect(decodeResponse(second.payload).code).toBe(Code.OK);
    expect(errors).toHaveLength(1);
  });

  it('answers malformed envelopes, malformed payloads, even stream ids and unknown methods with statuses', async () => {
    const { path: p } = await startServer();
    const raw = await rawConnect(p);
    raw.sock.write(encodeFrame(1, MessageType.Request, Buffer.from([0x0a, 0x05, 0x61]))); // truncated string
    raw.sock.write(
      encodeRequestFrame(3, encodeRequestPrefix('grpc.Health', 'Check'), Buffer.from([0x0a, 0x09]), 0), // bad payload
    );
    raw.sock.write(checkRequest(4, 'x')); // even stream id
    raw.sock.write(encodeRequestFrame(9, encodeRequestPrefix('grpc.Health', 'Nope'), new Uint8Array(0), 0));
    raw.sock.write(encodeRequestFrame(11, encodeRequestPrefix('no.Such', 'Thing'), new Uint8Array(0), 0));
    raw.sock.write(encodeFrame(13, 7 as MessageType, Buffer.from('future message type'))); // ignored
    raw.sock.write(encodeFrame(15, MessageType.Response, Buffer.alloc(0))); // ignored too
    raw.sock.write(checkRequest(17, 'x'));
    const got = new Map<number, ReturnType<typeof decodeResponse>>();
    for (let i = 0; i < 6; i++) {
      const f = await raw.next();
      got.set(f.streamId, decodeResponse(f.payload));
    }
    expect(got.get(1)).toMatchObject({ code: Code.InvalidArgument });
    expect(got.get(1)!.message).toMatch(/^unmarshal request error: malformed ttrpc.Request/);
    expect(got.get(3)).toMatchObject({ code: Code.InvalidArgument });
    expect(got.get(3)!.message).toMatch(/grpc.Health\/Check: malformed request/);
    expect(got.get(4)).toMatchObject({
      code: Code.InvalidArgument,
      message: 'StreamID must be odd for client initiated streams',
    });
    expect(got.get(9)).toMatchObject({ code: Code.Unimplemented });
    expect(got.get(11)).toMatchObject({ code: Code.Unimplemented });
    expect(got.get(17)).toMatchObject({ code: Code.OK });
    expect(got.has(13) || got.has(15)).toBe(false);
  });

  it('survives random garbage on one connection while another carries on', async () => {
    const { path: p } = await startServer();
    const { health } = await connect(p);
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.uint8Array({ minLength: 1, maxLength: 200 }), { minLength: 1, maxLength: 10 }),
        async (chunks) => {
          const raw = await rawConnect(p);
          for (const c of chunks) raw.sock.write(c);
          expect((await health.check({ service: 'x' })).status).toBe(1);
          raw.sock.destroy();
        },
      ),
      { numRuns: 50 },
    );
  });

  it('refuses to send an oversized request and turns an oversized answer into ResourceExhausted', async () => {
    const { path: p } = await startServer({ maxMessageSize: 8 << 20 });
    const { health } = await connect(p);
    await expect(health.check({ service: 'y'.repeat(5 << 20) })).rejects.toMatchObject({
      code: Code.ResourceExhausted,
    });
    const err = await health.version({ service: String(5 << 20) }).catch((e: Error) => e);
    expect(err).toMatchObject({ code: Code.ResourceExhausted });
    expect((err as Error).message).toMatch(
      /response from .* is \d+ bytes, over the maximum message size of 4194304/,
    );
    expect((await health.check({ service: 'x' })).status).toBe(1);
    // The server side limit: a handler's answer over the server's own limit becomes ResourceExhausted.
    const small = await startServer({ maxMessageSize: 1000 });
    const { health: h2 } = await connect(small.path);
    await expect(h2.version({ service: '2000' })).rejects.toMatchObject({ code: Code.ResourceExhausted });
  });

  it('fails the call whose answer is malformed, not the connection', async () => {
    const p = sockPath();
    const fake = net.createServer((s) => {
      const reader = new FrameReader();
      s.on('data', (d: Buffer) => {
        for (const f of reader.push(d)) {
          if (f.streamId === 1)
            s.write(encodeFrame(f.streamId, MessageType.Response, Buffer.from([0x0a, 0x7f])));
          else if (f.streamId === 3) s.write(encodeFrame(f.streamId, MessageType.Data, Buffer.alloc(0)));
          else s.write(encodeFrame(f.streamId, MessageType.Response, Buffer.from([0x0a, 0x00])));
        }
      });
    });
    await new Promise<void>((r) => fake.listen(p, r));
    try {
      const { health } = await connect(p);
      await expect(health.check({})).rejects.toMatchObject({ code: Code.Internal });
      await expect(health.check({})).rejects.toThrow(/sent message type 3, not a response/);
      expect((await health.check({})).status).toBe(0);
    } finally {
      for (const c of clients.splice(0)) c.close();
      await new Promise((r) => fake.close(r));
    }
  });
});

describe('pre-encoded responses (EncodedMessage)', () => {
  it('reach the client as the message the parts encode, large and empty, in order with other calls', async () => {
    const chunks = [Buffer.alloc(70_000, 1), Buffer.alloc(3, 2), Buffer.alloc(1 << 20, 3)];
    const server = new TtrpcServer().register(AgentService, {
      readStdout: (req) => new EncodedMessage(encodeBytesMessage(1, req.len === 0 ? [] : chunks)),
    });
    servers.push(server);
    const p = sockPath();
    await server.listen(p);
    const agent = createClient(AgentService, (await connect(p)).conn);
    const [big, empty, again] = await Promise.all([
      agent.readStdout({ containerId: 'c', execId: '', len: 1 }),
      agent.readStdout({ containerId: 'c', execId: '', len: 0 }),
      agent.readStdout({ containerId: 'c', execId: '', len: 1 }),
    ]);
    expect(Buffer.from(big.data).equals(Buffer.concat(chunks))).toBe(true);
    expect(empty.data.length).toBe(0);
    expect(again.data.length).toBe(big.data.length);
  });

  it('over the size limit fail with ResourceExhausted instead of being sent', async () => {
    const server = new TtrpcServer({ maxMessageSize: 1000 }).register(AgentService, {
      readStdout: () => new EncodedMessage(encodeBytesMessage(1, [Buffer.alloc(2000)])),
    });
    servers.push(server);
    const p = sockPath();
    await server.listen(p);
    const agent = createClient(AgentService, (await connect(p)).conn);
    await expect(agent.readStdout({ containerId: 'c', execId: '', len: 1 })).rejects.toMatchObject({
      code: Code.ResourceExhausted,
    });
  });
});
