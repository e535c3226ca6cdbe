// Agent container RPC timings on this host (crun, busybox rootfs), the agent in-process behind a real ttrpc
// server on a unix socket, as in test/e2e/agent-host.test.ts: create/start/wait/remove of a short container,
// an exec round trip, and stdout throughput through ReadStdout (back-pressure included).
// Run: node bench/run.mjs agent-host [--rounds N] [--mib N]   (prints a table, writes bench/results/agent-host-<ts>.json)
import { mkdirSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { setLogLevel } from '../src/common/log.js';
import { busyboxSpec, startHostAgent } from '../test/e2e/agent-fixtures.js';

const { values } = parseArgs({
  options: { rounds: { type: 'string', default: '5' }, mib: { type: 'string', default: '64' } },
});
const rounds = Number(values.rounds);
const mib = Number(values.mib);
setLogLevel('silent');

const env = await startHostAgent();
const { agent } = env;
const ms = (t: number) => Math.round((performance.now() - t) * 10) / 10;

type Row = Record<'create' | 'start' | 'first_output' | 'wait' | 'remove' | 'exec_roundtrip', number> &
  Record<'stdout_mib_s_32k' | 'stdout_mib_s_1m', number>;
const rows: Row[] = [];

async function throughput(cid: string, len: number): Promise<number> {
  await agent.createContainer({
    containerId: cid,
    OCI: busyboxSpec(env, cid, ['dd', 'if=/dev/zero', 'bs=1M', `count=${mib}`, 'status=none']),
  });
  await agent.startContainer({ containerId: cid });
  const t = performance.now();
  let n = 0;
  for (;;) {
    const r = await agent.readStdout({ containerId: cid, execId: '', len });
    if (r.data.length === 0) break;
    n += r.data.length;
  }
  const secs = (performance.now() - t) / 1000;
  await agent.waitProcess({ containerId: cid, execId: '' });
  await agent.removeContainer({ containerId: cid });
  if (n !== mib << 20) throw new Error(`read ${n} bytes, expected ${mib << 20}`);
  return Math.round((mib / secs) * 10) / 10;
}

try {
  for (let i = 0; i < rounds; i++) {
    const cid = `bench${i}`;
    let t = performance.now();
    await agent.createContainer({
      containerId: cid,
      OCI: busyboxSpec(env, cid, ['sh', '-c', 'echo hi; sleep 1000']),
    });
    const create = ms(t);
    t = performance.now();
    await agent.startContainer({ containerId: cid });
    const start = ms(t);
    t = performance.now();
    await agent.readStdout({ containerId: cid, execId: '', len: 100 });
    const first_output = ms(t);
    t = performance.now();
    await agent.execProcess({
      containerId: cid,
      execId: 'e',
      process: { Args: ['true'], Env: ['PATH=/bin'], Cwd: '/', User: {} },
    });
    await agent.waitProcess({ containerId: cid, execId: 'e' });
    const exec_roundtrip = ms(t);
    t = performance.now();
    await agent.signalProcess({ containerId: cid, execId: '', signal: 9 });
    await agent.waitProcess({ containerId: cid, execId: '' });
    const wait = ms(t);
    t = performance.now();
    await agent.removeContainer({ containerId: cid });
    const remove = ms(t);
    rows.push({
      create,
      start,
      first_output,
      exec_roundtrip,
      wait,
      remove,
      stdout_mib_s_32k: await throughput(`tp32k${i}`, 32 << 10),
      stdout_mib_s_1m: await throughput(`tp1m${i}`, 1 << 20),
    });
  }
} finally {
  await env.close();
}

const cols = Object.keys(rows[0]!) as (keyof Row)[];
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const w = 17;
console.log(
  `agent container RPCs on the host (crun), ms; stdout MiB/s for ${mib} MiB with 32 KiB / 1 MiB reads (${rounds} rounds)`,
);
console.log(['round', ...cols].map((c) => c.padStart(w)).join(''));
rows.forEach((r, i) =>
  console.log([String(i), ...cols.map((c) => String(r[c]))].map((c) => c.padStart(w)).join('')),
);
const med = Object.fromEntries(cols.map((c) => [c, median(rows.map((r) => r[c]))]));
console.log(['median', ...cols.map((c) => String(med[c]))].map((c) => c.padStart(w)).join(''));
mkdirSync('bench/results', { recursive: true });
const file = `bench/results/agent-host-${new Date().toISOString().replace(/[:.]/g, '-')}.json`;
writeFileSync(file, JSON.stringify({ rounds, mib, rows, median: med }, null, 2));
console.log(`wrote ${file}`);
