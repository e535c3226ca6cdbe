// Interoperability with the reference implementation: containerd/ttrpc (Go, from Debian's
// golang-github-containerd-ttrpc-dev) as client of the TS server and as server for the TS client.
// The Go peer is test/go/ttrpc-peer; it is built once and cached under build/go/ (a temp dir when that is not writable).
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Health } from '../../src/protocols/gen/health_pb.js';
import { Code, TtrpcClient, TtrpcError, TtrpcServer, createClient } from '../../src/protocols/ttrpc/index.js';
import { buildTtrpcPeer, goVersion, runPeer, startPeerServer, stopPeer } from '../go/ttrpc-peer.js';

const haveGo = (await goVersion()) !== undefined;
if (!haveGo) console.warn('ttrpc-go-interop: skipped because `go` is not installed (CI installs golang-go)');

interface PeerResult {
  case: string;
  code: number;
  message?: string;
  fields?: Record<string, string>;
}

describe.skipIf(!haveGo)('ttrpc interop with containerd/ttrpc (Go)', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ttrpc-go-'));
  let peer = '';
  const children: ChildProcess[] = [];
  const clients: TtrpcClient[] = [];
  let tsServer: TtrpcServer | undefined;

  beforeAll(async () => {
    peer = (await buildTtrpcPeer())!;
  }, 300_000);

  afterAll(async () => {
    for (const c of clients) c.close();
    tsServer?.close();
    for (const c of children) await stopPeer(c);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  async function goServer(name: string): Promise<string> {
    const sock = path.join(dir, name);
    children.push(await startPeerServer(peer, sock));
    return sock;
  }

  it('Go client → TS server: statuses, metadata, deadlines, concurrency, oversized requests', async () => {
    // The same behaviours as the Go peer's own server (see test/go/ttrpc-peer/main.go).
    tsServer = new TtrpcServer().register(Health, {
      check: async (req, ctx) => {
        const s = req.service;
        if (s.startsWith('error:')) {
          const [, code, message] = s.split(':');
          throw new TtrpcError(Number(code), message ?? '');
        }
        if (s.startsWith('sleep:')) {
          await new Promise((resolve, reject) => {
            const t = setTimeout(resolve, Number(s.slice(6)));
            ctx.signal.addEventListener('abort', () => {
              clearTimeout(t);
              reject(ctx.signal.reason);
            });
          });
        }
        return { status: 1 };
      },
      version: (req, ctx) => {
        const s = req.service;
        if (s.startsWith('md:')) return { grpcVersion: (ctx.metadata.get(s.slice(3)) ?? []).join(',') };
        if (s === 'deadline') {
          return ctx.deadline === undefined
            ? { grpcVersion: 'none' }
            : { grpcVersion: 'set', agentVersion: String(Math.round(ctx.deadline - Date.now())) };
        }
        return { grpcVersion: 'ttrpc-ts', agentVersion: 'test' };
      },
    });
    const sock = path.join(dir, 'ts.sock');
    await tsServer.listen(sock);
    const out = await runPeer(peer, ['client', sock], 60_000);
    const results = new Map(
      out
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as PeerResult)
        .map((r) => [r.case, r]),
    );
    expect(results.get('check-ok')).toEqual({ case: 'check-ok', code: 0, fields: { '1': '1' } });
    expect(results.get('check-error')).toEqual({
      case: 'check-error',
      code: Code.NotFound,
      message: 'no such thing',
    });
    expect(results.get('metadata')).toMatchObject({ code: 0, fields: { '1': 'a,b' } });
    const dl = results.get('deadline-sent')!;
    expect(dl.fields?.['1']).toBe('set');
    expect(Number(dl.fields?.['2'])).toBeGreaterThan(0);
    expect(Number(dl.fields?.['2'])).toBeLessThanOrEqual(5000);
    expect(results.get('unknown-method')).toMatchObject({ code: Code.Unimplemented });
    expect(results.get('unknown-service')).toMatchObject({ code: Code.Unimplemented });
    // No local deadline on the Go side: only our server's enforcement of timeout_nano ends this call.
    expect(results.get('server-deadline')).toMatchObject({ code: Code.DeadlineExceeded });
    expect(results.get('client-deadline')).toMatchObject({ code: Code.DeadlineExceeded });
    expect(results.get('concurrent')?.fields).toEqual({ ok: '32' });
    expect(results.get('oversized-request')).toMatchObject({ code: Code.ResourceExhausted });
    expect(results.get('after-oversized')).toMatchObject({ code: 0, fields: { '1': '1' } });
  });

  it('TS client → Go server: statuses, metadata, deadlines, concurrency, oversized answers', async () => {
    const sock = await goServer('go.sock');
    const conn = await TtrpcClient.connect(sock);
    clients.push(conn);
    const health = createClient(Health, conn);

    expect((await health.check({ service: 'ok' })).status).toBe(1);
    await expect(health.check({ service: 'error:7:denied here' })).rejects.toMatchObject({
      code: Code.PermissionDenied,
      message: 'denied here',
    });
    const md = await health.version({ service: 'md:x-kata' }, { metadata: { 'x-kata': ['a', 'b'] } });
    expect(md.grpcVersion).toBe('a,b');
    const withDeadline = await health.version({ service: 'deadline' }, { timeoutMs: 5000 });
    expect(withDeadline.grpcVersion).toBe('set');
    expect(Number(withDeadline.agentVersion)).toBeGreaterThan(0);
    expect(Number(withDeadline.agentVersion)).toBeLessThanOrEqual(5000);
    expect((await health.version({ service: 'deadline' })).grpcVersion).toBe('none');
    await expect(health.check({ service: 'sleep:60000' }, { timeoutMs: 100 })).rejects.toMatchObject({
      code: Code.DeadlineExceeded,
    });
    await expect(conn.callRaw('grpc.Health', 'Nope', new Uint8Array(0))).rejects.toMatchObject({
      code: Code.Unimplemented,
      message: 'method Nope',
    });
    await expect(conn.callRaw('no.Such', 'Method', new Uint8Array(0))).rejects.toMatchObject({
      code: Code.Unimplemented,
    });
    const many = await Promise.all(Array.from({ length: 64 }, () => health.check({ service: 'sleep:20' })));
    expect(many.every((r) => r.status === 1)).toBe(true);
    // containerd/ttrpc sends a 5 MiB answer; we discard it and fail only that call.
    await expect(health.version({ service: `big:${5 << 20}` })).rejects.toMatchObject({
      code: Code.ResourceExhausted,
    });
    expect((await health.check({ service: 'still-ok' })).status).toBe(1);
    expect(conn.inFlight).toBe(0);
  });

  it('TS client: every pending call fails at once when the Go server dies', async () => {
    const sock = await goServer('go-dies.sock');
    const conn = await TtrpcClient.connect(sock);
    clients.push(conn);
    const health = createClient(Health, conn);
    const calls = Array.from({ length: 8 }, () =>
      health.check({ service: 'sleep:60000' }).catch((e: Error) => e),
    );
    await new Promise((r) => setTimeout(r, 50));
    const child = children.at(-1)!;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
    for (const e of await Promise.all(calls)) {
      expect(e).toBeInstanceOf(TtrpcError);
      expect(e).toMatchObject({ code: Code.Unavailable });
    }
    expect(conn.closed).toBe(true);
  });
});
