// Container start-up, runc vs kata-ts, through a private containerd: `ctr run --rm <busybox> <id> true`, N times
// each. For kata the time is split with the shim's `phase` log lines (shim start, daemon ready, VM launched,
// agent ready, sandbox created, container created/started, exit seen, sandbox stopped), and the RSS of the
// shim, QEMU and virtiofsd of one running sandbox is sampled. Prints a table, writes bench/results/startup-*.json.
// Usage: node bench/run.mjs startup [--runs N] [--rss-samples N]
import fs from 'node:fs';
import path from 'node:path';
import { type KataSetup, setupKata } from '../test/e2e/shim-fixtures.js';
import { KATA_RUNTIME, REPO } from '../test/helpers/containerd.js';

const args = process.argv.slice(2);
const opt = (name: string, def: number) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : def;
};
const RUNS = opt('runs', 5);
const RSS_SAMPLES = opt('rss-samples', 2);

const PHASES = [
  'shim_start',
  'daemon_ready',
  'vm_launched',
  'agent_ready',
  'sandbox_created',
  'container_created',
  'container_started',
  'exit_seen',
  'sandbox_stopped',
] as const;

interface KataRun {
  totalMs: number;
  /** ms from spawning ctr to each phase. */
  phases: Partial<Record<(typeof PHASES)[number], number>>;
}

async function timed(
  k: KataSetup,
  argv: string[],
): Promise<{ ms: number; start: number; code: number | null; err: string }> {
  const start = Date.now();
  const t0 = performance.now();
  const r = await k.ctrd.ctr(argv);
  return { ms: performance.now() - t0, start, code: r.code, err: r.stderr };
}

/** The shim's phase lines for one sandbox, from containerd's log (containerd copies the shim log there). */
function phasesOf(log: string, id: string, start: number): KataRun['phases'] {
  const out: KataRun['phases'] = {};
  for (const line of log.split('\n')) {
    if (!line.startsWith('{') || !line.includes(id)) continue;
    try {
      const j = JSON.parse(line) as { phase?: string; t?: number; sandbox_id?: string };
      if (j.sandbox_id === id && j.phase && typeof j.t === 'number' && !(j.phase in out)) {
        (out as Record<string, number>)[j.phase] = j.t - start;
      }
    } catch {
      // a containerd line that happens to start with "{"
    }
  }
  return out;
}

function rssKiB(pid: number, field = 'VmRSS'): number {
  try {
    const m = new RegExp(`${field}:\\s+(\\d+)`).exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

function pidsMatching(re: RegExp, needle: string): number[] {
  const out: number[] = [];
  for (const p of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      const c = fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').replace(/\0/g, ' ');
      if (re.test(c) && c.includes(needle)) out.push(Number(p));
    } catch {
      // gone
    }
  }
  return out;
}

interface RssSample {
  shim: number;
  shimAnon: number;
  qemu: number;
  virtiofsd: number;
}

async function sampleRss(k: KataSetup, id: string): Promise<RssSample> {
  const r = await k.ctrd.ctr(['run', '-d', '--runtime', KATA_RUNTIME, k.image, id, 'sleep', '600']);
  if (r.code !== 0) throw new Error(`ctr run -d ${id}: ${r.stderr}`);
  try {
    await new Promise((res) => setTimeout(res, 2000)); // let the guest settle
    const sum = (pids: number[], field?: string) => pids.reduce((a, p) => a + rssKiB(p, field), 0);
    const shims = pidsMatching(/containerd-shim-kata-v2/, `-id ${id}`);
    return {
      shim: sum(shims),
      // The rest of the shim's RSS is node's own binary pages, shared by every shim on the host.
      shimAnon: sum(shims, 'RssAnon'),
      qemu: sum(pidsMatching(/qemu-system/, id)),
      virtiofsd: sum(pidsMatching(/virtiofsd/, id)),
    };
  } finally {
    await k.ctrd.removeContainer(id);
  }
}

const stats = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const med = s.length ? (s[(s.length - 1) >> 1]! + s[s.length >> 1]!) / 2 : Number.NaN;
  return { median: med, min: s[0] ?? Number.NaN, max: s[s.length - 1] ?? Number.NaN, n: s.length };
};

async function main(): Promise<void> {
  const k = await setupKata();
  const runc: number[] = [];
  const kata: KataRun[] = [];
  const failures: string[] = [];
  let rss: RssSample[] = [];
  try {
    // Warm-up: page cache, containerd's first snapshot, the accelerator probe cache.
    await k.ctrd.ctr(['run', '--rm', k.image, 'bench-warm-runc', 'true']);
    await k.ctrd.ctr(['run', '--rm', '--runtime', KATA_RUNTIME, k.image, 'bench-warm-kata', 'true']);
    for (let i = 0; i < RUNS; i++) {
      const r = await timed(k, ['run', '--rm', k.image, `bench-runc-${i}`, 'true']);
      if (r.code === 0) runc.push(r.ms);
      else failures.push(`runc run ${i}: ${r.err}`);
      const id = `bench-kata-${i}`;
      const kr = await timed(k, ['run', '--rm', '--runtime', KATA_RUNTIME, k.image, id, 'true']);
      if (kr.code === 0) kata.push({ totalMs: kr.ms, phases: phasesOf(k.ctrd.readLog(), id, kr.start) });
      else failures.push(`kata run ${i}: ${kr.err}`);
      process.stderr.write(`run ${i + 1}/${RUNS}: runc ${r.ms.toFixed(0)} ms, kata ${kr.ms.toFixed(0)} ms\n`);
    }
    for (let i = 0; i < RSS_SAMPLES; i++) rss.push(await sampleRss(k, `bench-rss-${i}`));
  } finally {
    await k.close();
  }
  rss = rss.filter((s) => s.qemu > 0);

  const rows: [string, ReturnType<typeof stats>][] = [
    ['runc: ctr run --rm true', stats(runc)],
    ['kata: ctr run --rm true', stats(kata.map((r) => r.totalMs))],
    ...PHASES.map((p): [string, ReturnType<typeof stats>] => [
      `kata: ${p} (from ctr start)`,
      stats(kata.map((r) => r.phases[p]).filter((v): v is number => v !== undefined)),
    ]),
  ];
  const fmt = (n: number) => (Number.isNaN(n) ? '-' : n.toFixed(0));
  console.log(`\nstart-up, ${RUNS} runs each (ms)`);
  console.log(`${'what'.padEnd(44)} ${'median'.padStart(8)} ${'min'.padStart(8)} ${'max'.padStart(8)}`);
  for (const [name, s] of rows) {
    console.log(
      `${name.padEnd(44)} ${fmt(s.median).padStart(8)} ${fmt(s.min).padStart(8)} ${fmt(s.max).padStart(8)}`,
    );
  }
  const rssStats = {
    shim: stats(rss.map((r) => r.shim)),
    shimAnon: stats(rss.map((r) => r.shimAnon)),
    qemu: stats(rss.map((r) => r.qemu)),
    virtiofsd: stats(rss.map((r) => r.virtiofsd)),
  };
  console.log(
    `\nRSS per sandbox (MiB, median of ${rss.length}): shim ${(rssStats.shim.median / 1024).toFixed(1)} (private anonymous ${(rssStats.shimAnon.median / 1024).toFixed(1)}), QEMU ${(rssStats.qemu.median / 1024).toFixed(1)}, virtiofsd ${(rssStats.virtiofsd.median / 1024).toFixed(1)}`,
  );
  // Host-side overhead as the goal defines it: the whole kata run minus the guest's boot to agent-ready.
  const overhead = stats(
    kata
      .filter((r) => r.phases.agent_ready !== undefined && r.phases.vm_launched !== undefined)
      .map((r) => r.totalMs - (r.phases.agent_ready! - r.phases.vm_launched!)),
  );
  console.log(
    `host-side overhead (kata total - guest boot-to-agent-ready), median: ${fmt(overhead.median)} ms vs runc whole run ${fmt(stats(runc).median)} ms`,
  );
  if (failures.length) console.log(`\nfailures:\n${failures.join('\n')}`);

  const outDir = path.join(REPO, 'bench/results');
  fs.mkdirSync(outDir, { recursive: true });
  const file = path.join(outDir, `startup-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  fs.writeFileSync(
    file,
    `${JSON.stringify({ runs: RUNS, runcMs: runc, kata, rssKiB: rss, summary: Object.fromEntries(rows), rssSummaryKiB: rssStats, hostOverheadMs: overhead, failures }, null, 2)}\n`,
  );
  console.log(`\nwrote ${path.relative(REPO, file)}`);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
