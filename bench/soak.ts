// Soak: N cycles of run / exec / kill / delete across P kata sandboxes in parallel, through a private containerd,
// while one long-lived sandbox takes E execs spread over the cycles. After every cycle: every leak class of
// test/helpers/host-snapshot.ts (processes, mounts, dirs, host cgroups, vsock CIDs, taps, qdiscs, netns) against
// the snapshot taken before the first cycle, and the fds of containerd and of the long-lived sandbox's shim and
// that shim's RSS. Not in CI (hours at 200 cycles under TCG).
// Usage: node bench/run.mjs soak [--cycles 200] [--parallel 4] [--execs 1000]
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { setupKata } from '../test/e2e/shim-fixtures.js';
import { REPO } from '../test/helpers/containerd.js';
import { diffLeftovers, snapshotHost } from '../test/helpers/host-snapshot.js';

const { values } = parseArgs({
  options: {
    cycles: { type: 'string', default: '200' },
    parallel: { type: 'string', default: '4' },
    execs: { type: 'string', default: '1000' },
  },
});
const CYCLES = Number(values.cycles);
const PARALLEL = Number(values.parallel);
const EXECS = Number(values.execs);

interface Cycle {
  cycle: number;
  seconds: number;
  failures: string[];
  leaks: string[];
  containerdFds: number;
  shimFds: number;
  shimRssMiB: number;
}

const k = await setupKata();
const ctr = k.ctrd.ctr;

function fdCount(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? 0) / 1024;
}

/** The shim serving sandbox `id`: containerd keeps its pid in the task's bundle. */
function shimPid(id: string): number {
  const bundle = path.join(k.ctrd.dir, 'state/io.containerd.runtime.v2.task', k.ctrd.namespace, id);
  return Number(fs.readFileSync(path.join(bundle, 'shim.pid'), 'utf8'));
}

/** One sandbox's life: run -d, exec, kill, wait for STOPPED, delete. Returns what went wrong. */
async function lifecycle(id: string): Promise<string[]> {
  const bad: string[] = [];
  const run = await k.run(['-d', k.image, id, 'sleep', '600']);
  if (run.code !== 0) return [`${id}: run: ${run.stderr.trim()}`];
  const exec = await ctr(['task', 'exec', '--exec-id', 'x', id, 'echo', 'soak']);
  if (exec.code !== 0 || exec.stdout.trim() !== 'soak')
    bad.push(`${id}: exec: ${exec.code} ${exec.stderr.trim()}`);
  await k.ctrd.removeContainer(id);
  if ((await ctr(['container', 'info', id])).code === 0) bad.push(`${id}: still there after kill and delete`);
  return bad;
}

const longId = `soak-long-${process.pid}`;
const results: Cycle[] = [];
let execsDone = 0;
let execFailures = 0;
try {
  const r = await k.run(['-d', k.image, longId, 'sleep', '360000']);
  if (r.code !== 0) throw new Error(`starting the long-lived sandbox: ${r.stderr}`);
  const shim = shimPid(longId);
  const before = snapshotHost();
  const start = { containerdFds: fdCount(k.ctrd.pid), shimFds: fdCount(shim), shimRssMiB: rssMiB(shim) };
  for (let c = 1; c <= CYCLES; c++) {
    const t0 = performance.now();
    const ids = Array.from({ length: PARALLEL }, (_, i) => `soak-${process.pid}-${c}-${i}`);
    const execsNow = Math.round((EXECS * c) / CYCLES) - execsDone;
    const longExecs = (async () => {
      const bad: string[] = [];
      for (let i = 0; i < execsNow; i++) {
        const e = await ctr(['task', 'exec', '--exec-id', `l${execsDone + i}`, longId, 'true']);
        if (e.code !== 0) {
          execFailures++;
          bad.push(`${longId}: exec ${execsDone + i}: ${e.code} ${e.stderr.trim()}`);
        }
      }
      return bad;
    })();
    const failures = (await Promise.all([...ids.map(lifecycle), longExecs])).flat();
    execsDone += execsNow;
    const seconds = (performance.now() - t0) / 1000;
    // Shims and QEMU exit a moment after Delete returns: give them that moment before counting leaks.
    let leaks: string[] = [];
    for (let i = 0; i < 50; i++) {
      leaks = diffLeftovers(before, snapshotHost(), ids);
      if (leaks.length === 0) break;
      await new Promise((res) => setTimeout(res, 200));
    }
    const row: Cycle = {
      cycle: c,
      seconds,
      failures,
      leaks,
      containerdFds: fdCount(k.ctrd.pid),
      shimFds: fdCount(shim),
      shimRssMiB: rssMiB(shim),
    };
    results.push(row);
    process.stderr.write(
      `cycle ${c}/${CYCLES}: ${seconds.toFixed(1)} s, ${failures.length} failures, ${leaks.length} leaks, ` +
        `containerd fds ${row.containerdFds}, shim fds ${row.shimFds}, shim RSS ${row.shimRssMiB.toFixed(1)} MiB\n`,
    );
    for (const f of [...failures, ...leaks]) process.stderr.write(`  ${f}\n`);
  }

  const secs = results.map((r) => r.seconds).sort((a, b) => a - b);
  const q = (p: number) => secs[Math.min(secs.length - 1, Math.floor(p * secs.length))] ?? 0;
  const last = results[results.length - 1];
  const summary = {
    cycles: CYCLES,
    parallel: PARALLEL,
    sandboxes: CYCLES * PARALLEL,
    longLivedExecs: execsDone,
    longLivedExecFailures: execFailures,
    cycleSecondsP50: q(0.5),
    cycleSecondsP90: q(0.9),
    cycleSecondsMax: secs[secs.length - 1] ?? 0,
    failures: results.reduce((n, r) => n + r.failures.length, 0),
    leaks: results.reduce((n, r) => n + r.leaks.length, 0),
    containerdFds: { start: start.containerdFds, end: last?.containerdFds },
    shimFds: { start: start.shimFds, end: last?.shimFds },
    shimRssMiB: { start: start.shimRssMiB, end: last?.shimRssMiB },
  };
  console.log('| measure | value |\n| --- | --- |');
  console.log(`| cycles × parallel sandboxes | ${CYCLES} × ${PARALLEL} = ${summary.sandboxes} |`);
  console.log(
    `| cycle time p50 / p90 / max | ${q(0.5).toFixed(1)} / ${q(0.9).toFixed(1)} / ${summary.cycleSecondsMax.toFixed(1)} s |`,
  );
  console.log(`| lifecycle failures | ${summary.failures} |`);
  console.log(`| leaks (all classes, all cycles) | ${summary.leaks} |`);
  console.log(`| long-lived sandbox execs (failed) | ${execsDone} (${execFailures}) |`);
  console.log(`| containerd fds start → end | ${start.containerdFds} → ${last?.containerdFds} |`);
  console.log(`| long-lived shim fds start → end | ${start.shimFds} → ${last?.shimFds} |`);
  console.log(
    `| long-lived shim RSS start → end | ${start.shimRssMiB.toFixed(1)} → ${last?.shimRssMiB.toFixed(1)} MiB |`,
  );
  const dir = path.join(REPO, 'bench/results');
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `soak-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  fs.writeFileSync(file, JSON.stringify({ summary, cycles: results }, null, 2));
  console.log(`\nwrote ${file}`);
} finally {
  await k.ctrd.removeContainer(longId);
  await k.close();
}
