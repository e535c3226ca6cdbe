// Density: idle sandboxes (`sleep`) started one after another through a private containerd until the host has
// --limit-gib used, --max sandboxes run, a start fails or takes longer than --start-timeout s, or --max-minutes
// pass. Mode `template` clones a VM template (made once with `kata-ctl factory init`), `boot` boots each VM.
// Reports sandboxes started, host memory per sandbox (growth of used memory as bench/memory.ts defines it, PSS of QEMU + shim +
// virtiofsd), and the time per start as the host fills. Prints a table, writes bench/results/density-*.json.
// Usage: node bench/run.mjs density [--mode template|boot] [--max 100] [--limit-gib 20] [--max-minutes 25]
import fs from 'node:fs';
import path from 'node:path';
import { setupKata } from '../test/e2e/shim-fixtures.js';
import { KATA_RUNTIME, REPO } from '../test/helpers/containerd.js';
import { hostUsedKiB, median, mib, sandboxMemory } from './memory.js';
import { type BenchTemplate, benchTemplate } from './template.js';

const args = process.argv.slice(2);
const opt = (name: string, def: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? String(args[i + 1]) : def;
};
const MODE = opt('mode', 'template');
if (MODE !== 'template' && MODE !== 'boot') throw new Error(`--mode: ${MODE} is not template or boot`);
const MAX = Number(opt('max', '100'));
const LIMIT_KIB = Number(opt('limit-gib', '20')) * 1024 * 1024;
const MAX_MS = Number(opt('max-minutes', '25')) * 60_000;
const START_TIMEOUT_MS = Number(opt('start-timeout', '180')) * 1000;

interface Start {
  n: number;
  ms: number;
  /** host used KiB after this start */
  usedKiB: number;
}

async function main(): Promise<void> {
  const k = await setupKata();
  const ids: string[] = [];
  const starts: Start[] = [];
  let stopReason = `reached --max ${MAX}`;
  let tpl: BenchTemplate | undefined;
  let pss: number[] = [];
  let running = 0;
  let baseline = 0;
  const t0 = Date.now();
  try {
    await k.ctrd.ctr(['run', '--rm', '--runtime', KATA_RUNTIME, k.image, 'bench-warm-kata', 'true']);
    if (MODE === 'template') tpl = await benchTemplate(k);
    const cfg = tpl ? ['--runtime-config-path', tpl.config] : [];
    baseline = hostUsedKiB();
    while (ids.length < MAX) {
      if (hostUsedKiB() >= LIMIT_KIB) {
        stopReason = `host used reached ${mib(LIMIT_KIB)} MiB`;
        break;
      }
      if (Date.now() - t0 > MAX_MS) {
        stopReason = '--max-minutes passed';
        break;
      }
      const id = `bench-density-${ids.length}`;
      const s = performance.now();
      const r = await k.ctrd.ctr(
        ['run', '-d', '--runtime', KATA_RUNTIME, ...cfg, k.image, id, 'sleep', '86400'],
        {
          timeoutMs: START_TIMEOUT_MS,
        },
      );
      const ms = performance.now() - s;
      ids.push(id); // removed at the end even when its start failed
      if (r.code !== 0) {
        stopReason = `start ${ids.length} failed after ${ms.toFixed(0)} ms: ${r.stderr.trim().slice(0, 300)}`;
        break;
      }
      starts.push({ n: ids.length, ms, usedKiB: hostUsedKiB() });
      process.stderr.write(
        `${ids.length}: ${ms.toFixed(0)} ms, host used ${mib(hostUsedKiB())} MiB (+${mib(hostUsedKiB() - baseline)})\n`,
      );
    }
    await new Promise((res) => setTimeout(res, 5000)); // let the last guests settle
    pss = ids.map(sandboxMemory).map((m) => m.qemu + m.shim + m.virtiofsd);
    const ls = await k.ctrd.ctr(['task', 'ls']);
    running = ls.stdout.split('\n').filter((l) => /\bRUNNING\b/.test(l)).length;
  } finally {
    const usedFull = hostUsedKiB();
    const r0 = performance.now();
    for (let i = 0; i < ids.length; i += 8) {
      await Promise.all(ids.slice(i, i + 8).map((id) => k.ctrd.removeContainer(id)));
    }
    process.stderr.write(`removed ${ids.length} sandboxes in ${(performance.now() - r0).toFixed(0)} ms\n`);
    await tpl?.destroy().catch((e: unknown) => process.stderr.write(`factory destroy: ${String(e)}\n`));
    await k.close();
    process.stderr.write(`host used: full ${mib(usedFull)} MiB, after ${mib(hostUsedKiB())} MiB\n`);
  }

  const n = starts.length;
  const last = starts[n - 1];
  const grow = last ? (last.usedKiB - baseline) / n : Number.NaN;
  const tenth = (a: number, b: number) => median(starts.slice(a, b).map((s) => s.ms));
  const rows: [string, string][] = [
    ['mode', MODE],
    ['sandboxes started (running at the end)', `${n} (${running})`],
    ['stopped because', stopReason],
    ['host used growth per sandbox (MiB)', mib(grow)],
    ['PSS per sandbox, QEMU+shim+virtiofsd (MiB, median)', mib(median(pss))],
    ['start time, first 10 (ms, median)', tenth(0, 10).toFixed(0)],
    ['start time, last 10 (ms, median)', tenth(Math.max(0, n - 10), n).toFixed(0)],
    ['time to start all (s)', last ? (starts.reduce((a, s) => a + s.ms, 0) / 1000).toFixed(1) : '-'],
  ];
  if (tpl) rows.push(['factory init (ms)', tpl.initMs.toFixed(0)]);
  console.log('\ndensity: idle sandboxes (sleep)');
  for (const [a, b] of rows) console.log(`${a.padEnd(52)} ${b}`);

  const outDir = path.join(REPO, 'bench/results');
  fs.mkdirSync(outDir, { recursive: true });
  const file = path.join(outDir, `density-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  fs.writeFileSync(
    file,
    `${JSON.stringify({ mode: MODE, baselineUsedKiB: baseline, starts, pssKiB: pss, running, stopReason, rows }, null, 2)}\n`,
  );
  console.log(`\nwrote ${path.relative(REPO, file)}`);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
