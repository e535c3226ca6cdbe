// stdout/stdin throughput of a container's process, runc vs kata-ts, through a private containerd: a detached
// `sleep` container per runtime, then `ctr task exec` of `dd if=/dev/zero bs=1M count=N` counted on the host
// (stdout), and N MiB written into `ctr task exec … wc -c` (stdin, checked by the count the guest prints).
// Usage: node bench/run.mjs stdio [--mib N] [--runs N] [--vcpus N]   (prints a table, writes
// bench/results/stdio-*.json). --vcpus adds a kata column whose VMs have N vCPUs (default_vcpus): under TCG one
// vCPU runs the container's writer, the agent and QEMU's device emulation, and is the limit.
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { setupKata } from '../test/e2e/shim-fixtures.js';
import { KATA_RUNTIME, REPO } from '../test/helpers/containerd.js';

const { values } = parseArgs({
  options: {
    mib: { type: 'string', default: '200' },
    runs: { type: 'string', default: '3' },
    vcpus: { type: 'string' },
  },
});
const VCPUS = values.vcpus ? Number(values.vcpus) : undefined;
const MIB = Number(values.mib);
const RUNS = Number(values.runs);
const BYTES = MIB << 20;

type Runtime = string; // runc, kata, kata-<N>vcpu
interface Sample {
  runtime: Runtime;
  direction: 'stdout' | 'stdin' | 'in-container pipe';
  mibPerS: number;
}

const k = await setupKata();
const samples: Sample[] = [];
const failures: string[] = [];

async function measure(runtime: Runtime, cid: string, run: number): Promise<void> {
  const t0 = performance.now();
  const out = await new Promise<{ n: number; code: number | null; err: string }>((resolve) => {
    const c = k.ctrd.ctrSpawn([
      'task',
      'exec',
      '--exec-id',
      `out${run}`,
      cid,
      'dd',
      'if=/dev/zero',
      'bs=1M',
      `count=${MIB}`,
    ]);
    let n = 0;
    let err = '';
    c.stdout?.on('data', (d: Buffer) => {
      n += d.length;
    });
    c.stderr?.on('data', (d: Buffer) => {
      err += d.toString();
    });
    c.stdin?.end();
    c.once('close', (code) => resolve({ n, code, err }));
  });
  const outS = (performance.now() - t0) / 1000;
  if (out.code !== 0 || out.n !== BYTES)
    failures.push(`${runtime} stdout: ${out.n} bytes, exit ${out.code} ${out.err}`);
  else samples.push({ runtime, direction: 'stdout', mibPerS: MIB / outS });

  const t1 = performance.now();
  const r = await k.ctrd.ctr(['task', 'exec', '--exec-id', `in${run}`, cid, 'wc', '-c'], {
    input: Buffer.alloc(BYTES),
  });
  const inS = (performance.now() - t1) / 1000;
  if (r.code !== 0 || Number(r.stdout.trim()) !== BYTES)
    failures.push(`${runtime} stdin: wc -c said ${r.stdout.trim()}, exit ${r.code} ${r.stderr}`);
  else samples.push({ runtime, direction: 'stdin', mibPerS: MIB / inS });

  // The ceiling inside the container: the same bytes through a pipe that never leaves it (dd | cat), so the
  // stdio rows can be read against what the guest's CPU manages on its own. Includes one exec's overhead.
  const t2 = performance.now();
  const p = await k.ctrd.ctr([
    'task',
    'exec',
    '--exec-id',
    `pipe${run}`,
    cid,
    'sh',
    '-c',
    `dd if=/dev/zero bs=1M count=${MIB} 2>/dev/null | cat >/dev/null`,
  ]);
  const pipeS = (performance.now() - t2) / 1000;
  if (p.code !== 0) failures.push(`${runtime} in-container pipe: exit ${p.code} ${p.stderr}`);
  else samples.push({ runtime, direction: 'in-container pipe', mibPerS: MIB / pipeS });
}

const RUNTIMES: Runtime[] = ['runc', 'kata', ...(VCPUS ? [`kata-${VCPUS}vcpu`] : [])];
const vcpuConfig = VCPUS
  ? k.writeConfig('stdio-vcpus.toml', { 'hypervisor.qemu': { default_vcpus: VCPUS } })
  : '';
try {
  for (const runtime of RUNTIMES) {
    const cid = `bench-stdio-${runtime}-${process.pid}`;
    const rt =
      runtime === 'runc'
        ? []
        : ['--runtime', KATA_RUNTIME, ...(runtime === 'kata' ? [] : ['--runtime-config-path', vcpuConfig])];
    const r = await k.ctrd.ctr(['run', '-d', ...rt, k.image, cid, 'sleep', '3600']);
    if (r.code !== 0) throw new Error(`ctr run -d ${cid}: ${r.stderr}`);
    try {
      for (let i = 0; i < RUNS; i++) {
        await measure(runtime, cid, i);
        process.stderr.write(`${runtime} run ${i + 1}/${RUNS} done\n`);
      }
    } finally {
      await k.ctrd.removeContainer(cid);
    }
  }
} finally {
  await k.close();
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? (s[(s.length - 1) >> 1]! + s[s.length >> 1]!) / 2 : Number.NaN;
};
const table: Record<string, Record<string, string>> = {};
for (const dir of ['stdout', 'stdin', 'in-container pipe'] as const) {
  const row: Record<string, string> = {};
  for (const rt of RUNTIMES) {
    const xs = samples.filter((s) => s.runtime === rt && s.direction === dir).map((s) => s.mibPerS);
    row[`${rt} MiB/s`] = xs.length ? median(xs).toFixed(1) : 'failed';
  }
  table[`${dir} ${MIB} MiB (median of ${RUNS})`] = row;
}
console.table(table);
for (const f of failures) console.error(`FAILED: ${f}`);
const dir = path.join(REPO, 'bench/results');
fs.mkdirSync(dir, { recursive: true });
const file = path.join(dir, `stdio-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
fs.writeFileSync(file, JSON.stringify({ mib: MIB, runs: RUNS, samples, failures, table }, null, 2));
console.log(`wrote ${path.relative(REPO, file)}`);
if (failures.length) process.exitCode = 1;
