// ttrpc unary-call benchmark over unix sockets: TS↔TS against Go↔Go (containerd/ttrpc), plus the mixed pairs
// for reference. Every client and server is its own process, as in production, and the whole set runs twice:
// spread over the CPUs as the scheduler likes, and all pinned to CPU 0 (taskset). On VMs the spread case is
// dominated by cross-CPU wake-up latency (tens of µs, noisy); the pinned case shows the stacks' own cost.
// Run: npm run bench:ttrpc -- [--calls N] [--rounds N]   (prints a table, writes bench/results/ttrpc-<ts>.json)
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Health } from '../src/protocols/gen/health_pb.js';
import { TtrpcClient, TtrpcServer, createClient } from '../src/protocols/ttrpc/index.js';
import { buildTtrpcPeer, goVersion, runPeer } from '../test/go/ttrpc-peer.js';

interface Sample {
  calls: number;
  concurrency: number;
  seconds: number;
  calls_per_s: number;
  p50_us: number;
  p99_us: number;
}

type Side = 'ts' | 'go';
type Placement = 'spread' | 'cpu0';

/** TS server mode (a child process): `ttrpc.mjs serve <socket>`; stops when stdin closes. */
async function serveMode(socket: string): Promise<void> {
  const server = new TtrpcServer().register(Health, {
    check: () => ({ status: 1 }),
    version: () => ({ grpcVersion: 'ttrpc-ts', agentVersion: 'bench' }),
  });
  await server.listen(socket);
  process.stdout.write('ready\n');
  const stop = () => {
    server.close();
    process.exit(0);
  };
  process.stdin.on('end', stop).resume();
  process.on('SIGTERM', stop);
}

/** TS client mode (a child process): `ttrpc.mjs client <socket> <calls> <concurrency>`; prints a Sample. */
async function clientMode(socket: string, calls: number, concurrency: number): Promise<void> {
  const conn = await TtrpcClient.connect(socket);
  try {
    const health = createClient(Health, conn);
    const req = { service: 'bench' };
    for (let i = 0; i < calls / 10 + 100; i++) await health.check(req); // warm-up (JIT, socket buffers)
    const lat = new Float64Array(calls);
    let next = 0;
    const worker = async () => {
      for (let i = next++; i < calls; i = next++) {
        const t0 = performance.now();
        await health.check(req);
        lat[i] = performance.now() - t0;
      }
    };
    const start = performance.now();
    await Promise.all(Array.from({ length: concurrency }, worker));
    const seconds = (performance.now() - start) / 1000;
    lat.sort();
    const us = (q: number) => lat[Math.floor(q * (calls - 1))]! * 1000;
    const s: Sample = {
      calls,
      concurrency,
      seconds,
      calls_per_s: calls / seconds,
      p50_us: us(0.5),
      p99_us: us(0.99),
    };
    process.stdout.write(`${JSON.stringify(s)}\n`);
  } finally {
    conn.close();
  }
}

function pinned(placement: Placement, cmd: string[]): string[] {
  return placement === 'cpu0' ? ['taskset', '-c', '0', ...cmd] : cmd;
}

function startServer(cmd: string[], what: string): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd[0]!, cmd.slice(1), { stdio: ['pipe', 'pipe', 'inherit'] });
    child.stdout!.on('data', (d: Buffer) => {
      if (d.toString().includes('ready')) resolve(child);
    });
    child.once('error', (e) => reject(new Error(`starting the ${what}: ${e.message}`)));
    child.once('exit', (code, sig) => reject(new Error(`the ${what} exited early (${code ?? sig})`)));
  });
}

async function stopServer(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.stdin!.end();
  child.kill('SIGTERM');
  await exited;
}

async function runClient(cmd: string[]): Promise<Sample> {
  const out = await runPeer(cmd[0]!, cmd.slice(1));
  return JSON.parse(out) as Sample;
}

function median(samples: Sample[]): Sample {
  const sorted = [...samples].sort((a, b) => a.calls_per_s - b.calls_per_s);
  return sorted[Math.floor(sorted.length / 2)]!;
}

async function main(): Promise<void> {
  const [mode, socket, callsArg, concArg] = process.argv.slice(2);
  if (mode === 'serve') return serveMode(socket!);
  if (mode === 'client') return clientMode(socket!, Number(callsArg), Number(concArg));
  const { values } = parseArgs({
    options: { calls: { type: 'string', default: '50000' }, rounds: { type: 'string', default: '3' } },
  });
  const calls = Number(values.calls);
  const rounds = Number(values.rounds);
  if (!(calls > 0 && rounds > 0))
    throw new Error(`--calls and --rounds must be positive (got ${values.calls}, ${values.rounds})`);

  const goBin = await buildTtrpcPeer();
  if (!goBin) throw new Error('go is not installed: the benchmark compares against containerd/ttrpc in Go');
  let haveTaskset = true;
  try {
    execFileSync('taskset', ['-c', '0', 'true']);
  } catch {
    haveTaskset = false;
  }
  const placements: Placement[] = haveTaskset ? ['spread', 'cpu0'] : ['spread'];
  const self = process.argv[1]!;
  const node = process.execPath;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ttrpc-bench-'));
  const servers: ChildProcess[] = [];
  const results = new Map<string, Sample[]>();
  try {
    for (const placement of placements) {
      const sockets: Record<Side, string> = {
        ts: path.join(dir, `ts-${placement}.sock`),
        go: path.join(dir, `go-${placement}.sock`),
      };
      servers.push(
        await startServer(pinned(placement, [node, self, 'serve', sockets.ts]), 'TS ttrpc server'),
      );
      servers.push(await startServer(pinned(placement, [goBin, 'server', sockets.go]), 'Go ttrpc server'));
      const client = (side: Side, server: Side, conc: number) =>
        pinned(
          placement,
          side === 'ts'
            ? [node, self, 'client', sockets[server], String(calls), String(conc)]
            : [goBin, 'bench', sockets[server], String(calls), String(conc)],
        );
      // Rounds are interleaved so that noise from other load on the host hits every pair alike.
      for (let r = 0; r < rounds; r++) {
        for (const concurrency of [1, 16]) {
          for (const [c, srv] of [
            ['ts', 'ts'],
            ['go', 'go'],
            ['ts', 'go'],
            ['go', 'ts'],
          ] as [Side, Side][]) {
            const key = `${placement}|${c}|${srv}|${concurrency}`;
            results.set(key, [...(results.get(key) ?? []), await runClient(client(c, srv, concurrency))]);
          }
        }
      }
    }
  } finally {
    for (const s of servers) await stopServer(s);
    fs.rmSync(dir, { recursive: true, force: true });
  }

  const rows = [...results].map(([key, samples]) => {
    const [placement, client, server, conc] = key.split('|') as [Placement, Side, Side, string];
    return { placement, client, server, concurrency: Number(conc), median: median(samples), rounds: samples };
  });
  const get = (p: Placement, c: Side, s: Side, n: number) =>
    rows.find((r) => r.placement === p && r.client === c && r.server === s && r.concurrency === n)!;
  const ratios: Record<string, number> = {};
  for (const p of placements) {
    for (const n of [1, 16]) {
      ratios[`${p}_c${n}`] =
        get(p, 'ts', 'ts', n).median.calls_per_s / get(p, 'go', 'go', n).median.calls_per_s;
    }
  }

  console.log(
    `ttrpc unary calls (grpc.Health/Check) over unix sockets: ${calls} calls per run, median of ${rounds} rounds`,
  );
  console.log('placement  client → server  conc   calls/s    p50 µs    p99 µs');
  for (const r of rows.sort(
    (a, b) => a.placement.localeCompare(b.placement) || a.concurrency - b.concurrency,
  )) {
    const m = r.median;
    console.log(
      `${r.placement.padEnd(10)} ${`${r.client} → ${r.server}`.padEnd(15)} ${String(r.concurrency).padStart(5)} ${m.calls_per_s.toFixed(0).padStart(9)} ${m.p50_us.toFixed(1).padStart(9)} ${m.p99_us.toFixed(1).padStart(9)}`,
    );
  }
  for (const p of placements) {
    console.log(
      `TS/Go calls/s (ts→ts ÷ go→go), ${p}: sequential ${ratios[`${p}_c1`]!.toFixed(2)}×, 16-way ${ratios[`${p}_c16`]!.toFixed(2)}×`,
    );
  }

  const resultsDir = path.resolve('bench/results');
  fs.mkdirSync(resultsDir, { recursive: true });
  const file = path.join(resultsDir, `ttrpc-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  const report = {
    bench: 'ttrpc',
    date: new Date().toISOString(),
    node: process.version,
    go: await goVersion(),
    host: { cpus: os.cpus().length, model: os.cpus()[0]?.model, loadavg: os.loadavg() },
    calls,
    rounds,
    ratios,
    results: rows,
  };
  fs.writeFileSync(file, `${JSON.stringify(report, null, 2)}\n`);
  console.log(`wrote ${path.relative(process.cwd(), file)}`);
}

main().catch((e: unknown) => {
  console.error(`bench ttrpc: ${(e as Error).stack ?? e}`);
  process.exit(1);
});
