// Fuzzes every decoder on the far side of a trust boundary (test/fuzz/targets.ts) with many cases.
// Run: node bench/run.mjs fuzz [--runs 100000] [--seed N]   (prints a table, writes bench/results/fuzz-<ts>.json)
import { mkdirSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { ALL_TARGETS, closeAgentServer, fuzz } from '../test/fuzz/targets.js';

const { values } = parseArgs({
  options: { runs: { type: 'string', default: '100000' }, seed: { type: 'string' } },
});
const runs = Number(values.runs);
const seed = values.seed === undefined ? Date.now() % 2 ** 31 : Number(values.seed);
const rows: { target: string; cases: number; seconds: number; result: string }[] = [];
let failed = false;
for (const t of ALL_TARGETS) {
  const start = performance.now();
  let result = 'ok';
  try {
    await fuzz(t, runs, seed);
  } catch (e) {
    failed = true;
    result = (e as Error).message.split('\n').slice(0, 6).join(' | ');
  }
  rows.push({
    target: t.name,
    cases: runs,
    seconds: Number(((performance.now() - start) / 1000).toFixed(1)),
    result,
  });
}
await closeAgentServer();
console.table(rows);
console.log(`seed ${seed}`);
mkdirSync('bench/results', { recursive: true });
const file = `bench/results/fuzz-${new Date().toISOString().replace(/[:.]/g, '-')}.json`;
writeFileSync(file, JSON.stringify({ runs, seed, rows }, null, 2));
console.log(`wrote ${file}`);
process.exit(failed ? 1 : 0);
