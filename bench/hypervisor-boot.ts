// VM lifecycle timings with the QEMU driver under TCG: prepareVm, startVm (spawn → QMP "running"), guest init
// reached (busybox /init prints a marker after loading the virtio modules), pause+resume, stopVm, cleanup.
// Uses the hypervisor e2e test guest (Debian cloud kernel + busybox initrd) with a virtio-fs share.
// Run: node bench/run.mjs hypervisor-boot [--rounds N]   (prints a table, writes bench/results/hypervisor-boot-<ts>.json)
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { createHypervisor } from '../src/hypervisor/index.js';
import { ensureTestGuest } from '../test/e2e/hypervisor-guest.js';
import { testKataConfig } from '../test/unit/hypervisor-fixtures.js';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '5' } } });
const rounds = Number(values.rounds);
const log = pino({ level: 'silent' });
const guest = ensureTestGuest();

async function until(file: string, re: RegExp, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(existsSync(file) && re.test(readFileSync(file, 'utf8')))) {
    if (Date.now() > deadline) throw new Error(`no ${re} in ${file}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

type Row = Record<'prepare' | 'start' | 'guest_init' | 'pause_resume' | 'stop' | 'cleanup', number>;
const rows: Row[] = [];
for (let i = 0; i < rounds; i++) {
  const id = `hvbench-${process.pid}-${i}`;
  const shared = `/run/kata-containers/shared/sandboxes/${id}/shared`;
  mkdirSync(shared, { recursive: true });
  const runDir = `/run/vc/vm/${id}`;
  const cfg = testKataConfig({ kernel: guest.kernel, initrd: guest.initrd, kernel_params: 'test.mode=idle' });
  const hv = createHypervisor(cfg, log);
  try {
    let t = performance.now();
    const lap = () => {
      const now = performance.now();
      const d = now - t;
      t = now;
      return Math.round(d);
    };
    await hv.prepareVm({
      sandboxId: id,
      runDir,
      vcpus: 1,
      maxVcpus: 2,
      memoryMiB: 512,
      maxMemoryMiB: 1024,
      devices: [{ kind: 'virtio-fs', id: 'shared', tag: 'kataShared', sharedDir: shared }],
    });
    const prepare = lap();
    await hv.startVm(60_000);
    const start = lap();
    await until(path.join(runDir, 'console.log'), /T: BOOTED/);
    const guest_init = lap();
    await hv.pauseVm();
    await hv.resumeVm();
    const pause_resume = lap();
    await hv.stopVm();
    const stop = lap();
    await hv.cleanup();
    const cleanup = lap();
    rows.push({ prepare, start, guest_init, pause_resume, stop, cleanup });
  } finally {
    await hv.cleanup();
    rmSync(path.dirname(shared), { recursive: true, force: true });
  }
}

const cols = Object.keys(rows[0]!) as (keyof Row)[];
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
console.log(`QEMU ${'TCG'} VM lifecycle, ms (${rounds} rounds; guest_init is counted from startVm's return)`);
console.log(['round', ...cols].map((c) => c.padStart(13)).join(''));
rows.forEach((r, i) =>
  console.log([String(i), ...cols.map((c) => String(r[c]))].map((c) => c.padStart(13)).join('')),
);
console.log(
  ['median', ...cols.map((c) => String(median(rows.map((r) => r[c]))))].map((c) => c.padStart(13)).join(''),
);
mkdirSync('bench/results', { recursive: true });
const out = `bench/results/hypervisor-boot-${new Date().toISOString().replace(/[:.]/g, '-')}.json`;
writeFileSync(out, `${JSON.stringify({ accel: 'tcg', rounds: rows }, null, 2)}\n`);
console.log(`wrote ${out}`);
