// The KVM probe's cost to the first sandbox after a host boot (accel = "auto"): `ctr run --rm true` with the
// probe cache removed (the sandbox waits at most ACCEL_WAIT_MS, then boots under TCG while the probe goes on),
// then again with the verdict cached, and the whole probe as `kata-ctl check` runs it. Prints a table, writes
// bench/results/accel-probe-*.json. The probe cache (/run/kata-ts/accel.json) is the host's: this removes it
// and leaves the fresh verdict in it.
// Usage: node bench/run.mjs accel-probe
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { DEFAULT_ACCEL_CACHE } from '../src/hypervisor/accel.js';
import { setupKata } from '../test/e2e/shim-fixtures.js';
import { REPO } from '../test/helpers/containerd.js';

const run = promisify(execFile);
const k = await setupKata();
const rows: [string, number, string][] = [];
try {
  const conf = k.writeConfig('auto.toml', { 'hypervisor.qemu': { accel: 'auto' } });
  const ctrRun = async (what: string, id: string) => {
    const t0 = performance.now();
    const r = await k.run(['--rm', '--runtime-config-path', conf, k.image, id, 'true'], {
      timeoutMs: 300_000,
    });
    const ms = performance.now() - t0;
    if (r.code !== 0) throw new Error(`${what}: ${r.stderr}`);
    const line = k.ctrd
      .readLog()
      .split('\n')
      .find((l) => l.includes(id) && l.includes('"msg":"accelerator"'));
    const j = line ? (JSON.parse(line.slice(line.indexOf('{'))) as { accel?: string; reason?: string }) : {};
    rows.push([what, ms, `${j.accel}: ${j.reason}`]);
  };
  fs.rmSync(DEFAULT_ACCEL_CACHE, { force: true });
  await ctrRun('first sandbox, probe not cached', 'bench-accel-1');
  // Let the background probe finish and cache its verdict (it gives up after 8 s).
  for (let i = 0; i < 100 && !fs.existsSync(DEFAULT_ACCEL_CACHE); i++)
    await new Promise((r) => setTimeout(r, 100));
  await ctrRun('next sandbox, verdict cached', 'bench-accel-2');
  fs.rmSync(DEFAULT_ACCEL_CACHE, { force: true });
  const t0 = performance.now();
  await run(process.execPath, [path.join(REPO, 'dist/kata-ctl.mjs'), 'check', '--config', conf], {
    timeout: 120_000,
  }).catch(() => undefined); // check exits non-zero on hosts that lack something; only its time counts here
  rows.push(['kata-ctl check (the whole probe)', performance.now() - t0, '']);
} finally {
  await k.close();
}
console.log('\naccel = "auto", first sandbox after the probe cache is gone');
for (const [what, ms, why] of rows)
  console.log(`${what.padEnd(36)} ${ms.toFixed(0).padStart(7)} ms  ${why.split('\n')[0]}`);
const file = path.join(
  REPO,
  'bench/results',
  `accel-probe-${new Date().toISOString().replace(/[:.]/g, '-')}.json`,
);
fs.mkdirSync(path.dirname(file), { recursive: true });
fs.writeFileSync(file, `${JSON.stringify(rows, null, 2)}\n`);
console.log(`\nwrote ${path.relative(REPO, file)}`);
