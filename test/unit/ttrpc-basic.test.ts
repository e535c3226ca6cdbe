import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Health, HealthCheckResponse_ServingStatus } from '../../src/protocols/gen/health_pb.js';
import { Code, TtrpcClient, TtrpcError, TtrpcServer, createClient } from '../../src/protocols/ttrpc/index.js';

describe('ttrpc unary calls', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ttrpc-'));
  const sock = path.join(dir, 's.sock');
  let server: TtrpcServer | undefined;
  afterEach(() => server?.close());

  it('round-trips a call, carries metadata and maps errors to status codes', async () => {
    server = new TtrpcServer().register(Health, {
      check: (req, ctx) => {
        if (req.service === 'bad') throw new TtrpcError(Code.NotFound, 'no such service');
        return { status: HealthCheckResponse_ServingStatus.SERVING + (ctx.metadata.get('x')?.length ?? 0) };
      },
    });
    await server.listen(sock);
    const conn = await TtrpcClient.connect(sock);
    const health = createClient(Health, conn);
    expect((await health.check({ service: 'a' })).status).toBe(1);
    expect((await health.check({ service: 'a' }, { metadata: { x: ['1', '2'] } })).status).toBe(3);
    await expect(health.check({ service: 'bad' })).rejects.toMatchObject({ code: Code.NotFound });
    await expect(health.version({ service: '' })).rejects.toMatchObject({ code: Code.Unimplemented });
    conn.close();
  });
});

describe('client defaults', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ttrpc-defaults-'));
  const sock = path.join(dir, 's.sock');
  let server: TtrpcServer | undefined;
  afterEach(() => server?.close());

  it('gives every call a deadline except the unbounded ones', async () => {
    let release!: () => void;
    const hold = new Promise<void>((r) => {
      release = r;
    });
    server = new TtrpcServer().register(Health, {
      check: async () => {
        await hold;
        return { status: 1 };
      },
      version: async () => {
        await hold;
        return { agentVersion: 'v', grpcVersion: 'g' };
      },
    });
    await server.listen(sock);
    const conn = await TtrpcClient.connect(sock);
    const health = createClient(Health, conn, { timeoutMs: 50, unbounded: ['version'] });
    const started = Date.now();
    await expect(health.check({ service: 'a' })).rejects.toMatchObject({ code: Code.DeadlineExceeded });
    expect(Date.now() - started).toBeLessThan(2000);
    const version = health.version({});
    const outcome = await Promise.race([
      version.then(() => 'answered'),
      new Promise((r) => setTimeout(r, 300, 'waiting')),
    ]);
    expect(outcome).toBe('waiting');
    release();
    await expect(version).resolves.toMatchObject({ agentVersion: 'v' });
    // A call's own deadline wins over the default.
    await expect(health.check({ service: 'a' }, { timeoutMs: 5000 })).resolves.toMatchObject({ status: 1 });
    conn.close();
  });
});
