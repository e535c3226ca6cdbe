// The shim binary's process protocol, without a VM: `start` prints the address of a daemon it spawned (and the
// same address for a container of the same pod), the daemon serves Task on it and exits on Shutdown, `delete`
// prints a DeleteResponse. The bundle is built into .cache so the test runs the current source.
import { type SpawnSyncReturns, spawnSync } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fromBinary } from '@bufbuild/protobuf';
import { build } from 'esbuild';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  DeleteResponseSchema,
  Task,
} from '../../src/protocols/gen/github.com/containerd/containerd/runtime/v2/task/shim_pb.js';
import { Code, TtrpcClient, createClient } from '../../src/protocols/ttrpc/index.js';
import { socketAddress } from '../../src/shim/address.js';
import { REPO } from '../helpers/containerd.js';

let dir: string;
let shim: string;
let logFd: number;
const ns = 'shim-unit';

function run(args: string[], cwd: string): SpawnSyncReturns<Buffer> {
  return spawnSync(process.execPath, [shim, ...args], {
    cwd,
    env: { ...process.env, TTRPC_ADDRESS: '' },
    timeout: 30_000,
  });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

beforeAll(async () => {
  const cache = path.join(REPO, '.cache');
  fs.mkdirSync(cache, { recursive: true });
  dir = fs.mkdtempSync(path.join(cache, 'shim-bin-'));
  shim = path.join(dir, 'containerd-shim-kata-v2.mjs');
  await build({
    entryPoints: [path.join(REPO, 'src/shim/main.ts')],
    outfile: shim,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    external: ['koffi'],
    banner: {
      js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);",
    },
    logLevel: 'warning',
  });
});

afterAll(() => {
  if (logFd) fs.closeSync(logFd);
  fs.rmSync(dir, { recursive: true, force: true });
});

function bundle(id: string, annotations: Record<string, string> = {}): string {
  const b = path.join(dir, 'bundles', id);
  fs.mkdirSync(b, { recursive: true });
  fs.writeFileSync(path.join(b, 'config.json'), JSON.stringify({ ociVersion: '1.0.2', annotations }));
  return b;
}

describe('containerd-shim-kata-v2 process protocol', () => {
  it('start spawns a daemon serving Task; a pod container gets the same address; Shutdown ends it', async () => {
    const address = path.join(os.tmpdir(), `fake-containerd-${process.pid}.sock`);
    const b = bundle('sbx');
    execFileSync('mkfifo', [path.join(b, 'log')]);
    logFd = fs.openSync(path.join(b, 'log'), fs.constants.O_RDWR | fs.constants.O_NONBLOCK); // as containerd does
    const common = ['-namespace', ns, '-address', address, '-publish-binary', '/usr/bin/containerd'];
    const r = run([...common, '-id', 'sbx', 'start'], b);
    expect(r.stderr.toString()).toBe('');
    expect(r.status).toBe(0);
    const out = r.stdout.toString();
    expect(out).toBe(socketAddress(address, ns, 'sbx'));
    expect(out).toMatch(/^unix:\/\/\/run\/containerd\/s\/[0-9a-f]{64}$/);
    expect(fs.readFileSync(path.join(b, 'address'), 'utf8')).toBe(out);
    const daemonPid = Number(fs.readFileSync(path.join(b, 'shim.pid'), 'utf8'));
    expect(alive(daemonPid)).toBe(true);

    const sockPath = out.slice('unix://'.length);
    const conn = await TtrpcClient.connect(sockPath, { timeoutMs: 10_000 });
    const task = createClient(Task, conn);
    const c = await task.connect({ id: 'sbx' }, { timeoutMs: 10_000 });
    expect(c.shimPid).toBe(daemonPid);
    await expect(task.state({ id: 'sbx' })).rejects.toMatchObject({ code: Code.NotFound });

    // A container of the pod: same shim, no new daemon.
    const b2 = bundle('ctr2', {
      'io.kubernetes.cri.sandbox-id': 'sbx',
      'io.kubernetes.cri.container-type': 'container',
    });
    const r2 = run([...common, '-id', 'ctr2', 'start'], b2);
    expect(r2.status).toBe(0);
    expect(r2.stdout.toString()).toBe(out);
    expect(fs.existsSync(path.join(b2, 'shim.pid'))).toBe(false);

    await task.shutdown({ id: 'sbx' });
    conn.close();
    const deadline = Date.now() + 10_000;
    while (alive(daemonPid) && Date.now() < deadline) await new Promise((res) => setTimeout(res, 20));
    expect(alive(daemonPid)).toBe(false);
    expect(fs.existsSync(sockPath)).toBe(false);

    // The daemon logged into the FIFO (JSON lines), never to stdout.
    const buf = Buffer.alloc(1 << 20);
    const n = fs.readSync(logFd, buf);
    const lines = buf.subarray(0, n).toString().trim().split('\n');
    expect(lines.every((l) => l.startsWith('{'))).toBe(true);
    expect(lines.some((l) => l.includes('"phase":"daemon_ready"'))).toBe(true);
    expect(lines.some((l) => l.includes('"phase":"shim_start"'))).toBe(true);
  });

  it('delete prints a DeleteResponse for a sandbox that left nothing', () => {
    const b = bundle('gone');
    const r = run(['-namespace', ns, '-address', '/x.sock', '-id', 'gone', '-bundle', b, 'delete'], b);
    expect(r.status).toBe(0);
    const res = fromBinary(DeleteResponseSchema, r.stdout);
    expect(res.exitStatus).toBe(137);
    expect(Number(res.exitedAt?.seconds)).toBeGreaterThan(0);
  });

  it('start fails with a message when a pod container has no sandbox shim', () => {
    const b = bundle('orphan', {
      'io.kubernetes.cri.sandbox-id': 'missing-sb',
      'io.kubernetes.cri.container-type': 'container',
    });
    const r = run(['-namespace', ns, '-address', '/x.sock', '-id', 'orphan', 'start'], b);
    expect(r.status).toBe(1);
    expect(r.stdout.toString()).toMatch(/shim of sandbox missing-sb is not running/);
  });

  it('rejects bad flags', () => {
    const r = run(['-namespace', ns, '-bogus', 'start'], dir);
    expect(r.status).toBe(2);
    expect(r.stderr.toString()).toMatch(/flag provided but not defined: -bogus/);
  });
});
