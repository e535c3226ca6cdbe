// Container start-up, runc vs kata-ts, through a private containerd: `ctr run --rm <busybox> <id> true`, N times
// each, in up to four modes side by side: runc, kata booting a VM, kata cloning a VM template ([factory]
// enable_template, the template made once with `kata-ctl factory init`), and kata taking a VM from a warm VM
// cache (vm_cache_number = 2 on the same template; the cache is full again before each run, its refill after a
// take runs in the background during the run, niced). For kata the time is split with the
// shim's `phase` log lines (shim start, daemon ready, VM launched, agent ready, sandbox created, container
// created/started, exit seen, sandbox stopped). Then idle sandboxes' memory: PSS of QEMU, shim and virtiofsd of a
// booted sandbox and of 1, 5, 10 idle clones of one template. Prints tables, writes bench/results/startup-*.json.
// Usage: node bench/run.mjs startup [--runs N] [--modes runc,boot,template,cache] [--clones 1,5,10] [--debug]
// (--debug: the shims log at debug level; containerd's log is kept in bench/results/startup-last.log either way)
import fs from 'node:fs';
import path from 'node:path';
import { type KataSetup, setupKata } from '../test/e2e/shim-fixtures.js';
import { KATA_RUNTIME, REPO } from '../test/helpers/containerd.js';
import { type SandboxMemory, hostUsedKiB, median, mib, sandboxMemory } from './memory.js';
import { type BenchCache, type BenchTemplate, benchCache, benchTemplate } from './template.js';

const args = process.argv.slice(2);
const opt = (name: string, def: number) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : def;
};
const RUNS = opt('runs', 5);
const list = (name: string, def: string) => {
  const i = args.indexOf(`--${name}`);
  return (i >= 0 ? String(args[i + 1]) : def).split(',').filter(Boolean);
};
type Mode = 'runc' | 'boot' | 'template' | 'cache';
type KataMode = Exclude<Mode, 'runc'>;
const KATA_MODES: KataMode[] = ['boot', 'template', 'cache'];
const MODES = list('modes', 'runc,boot,template,cache') as Mode[];
for (const m of MODES) {
  if (!['runc', ...KATA_MODES].includes(m))
    throw new Error(`--modes: unknown mode ${m} (runc, boot, template, cache)`);
}
/** Counts of idle clones at which memory is measured (cumulative: the same clones stay up). */
const CLONES = list('clones', '1,5,10')
  .map(Number)
  .sort((a, b) => a - b);

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

/** Starts `ids` as idle sandboxes (`sleep 600`), one after another; returns their start times (ms). */
async function startIdle(k: KataSetup, ids: string[], config?: string): Promise<number[]> {
  const times: number[] = [];
  for (const id of ids) {
    const cfg = config ? ['--runtime-config-path', config] : [];
    const r = await timed(k, ['run', '-d', '--runtime', KATA_RUNTIME, ...cfg, k.image, id, 'sleep', '600']);
    if (r.code !== 0) throw new Error(`ctr run -d ${id}: ${r.err}`);
    times.push(r.ms);
  }
  return times;
}

interface IdleMemory {
  what: string;
  sandboxes: number;
  /** medians over the sandboxes, KiB */
  perSandbox: SandboxMemory & { total: number };
  /** host used memory growth per sandbox, KiB */
  hostPerSandbox: number;
}

/** PSS per sandbox of `ids` (already running), medians; and the host's growth in used memory per sandbox. */
async function measureIdle(what: string, ids: string[], usedBefore: number): Promise<IdleMemory> {
  await new Promise((res) => setTimeout(res, 3000)); // let the guests settle
  const per = ids.map(sandboxMemory).filter((m) => m.qemu > 0);
  const pick = (f: (m: SandboxMemory) => number) => median(per.map(f));
  return {
    what,
    sandboxes: ids.length,
    perSandbox: {
      shim: pick((m) => m.shim),
      qemu: pick((m) => m.qemu),
      virtiofsd: pick((m) => m.virtiofsd),
      qemuRss: pick((m) => m.qemuRss),
      total: pick((m) => m.shim + m.qemu + m.virtiofsd),
    },
    hostPerSandbox: (hostUsedKiB() - usedBefore) / ids.length,
  };
}

async function removeAll(k: KataSetup, ids: string[]): Promise<void> {
  await Promise.all(ids.map((id) => k.ctrd.removeContainer(id)));
}

const stats = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const med = s.length ? (s[(s.length - 1) >> 1]! + s[s.length >> 1]!) / 2 : Number.NaN;
  return { median: med, min: s[0] ?? Number.NaN, max: s[s.length - 1] ?? Number.NaN, n: s.length };
};

async function main(): Promise<void> {
  const k = await setupKata({ level: args.includes('--debug') ? 'debug' : 'info' });
  const times: Record<Mode, number[]> = { runc: [], boot: [], template: [], cache: [] };
  const kata: Record<KataMode, KataRun[]> = { boot: [], template: [], cache: [] };
  const failures: string[] = [];
  const memory: IdleMemory[] = [];
  let tpl: BenchTemplate | undefined;
  let cache: BenchCache | undefined;
  try {
    // Warm-up: page cache, containerd's first snapshot, the accelerator probe cache.
    await k.ctrd.ctr(['run', '--rm', k.image, 'bench-warm-runc', 'true']);
    await k.ctrd.ctr(['run', '--rm', '--runtime', KATA_RUNTIME, k.image, 'bench-warm-kata', 'true']);
    if (MODES.includes('template') || MODES.includes('cache')) {
      tpl = await benchTemplate(k);
      process.stderr.write(`factory init: ${tpl.initMs.toFixed(0)} ms\n`);
    }
    if (MODES.includes('cache') && tpl) cache = benchCache(k, tpl, 2);
    const configOf = { template: tpl?.config, cache: cache?.config, boot: undefined, runc: undefined };
    const argv = (mode: Mode, id: string) => {
      if (mode === 'runc') return ['run', '--rm', k.image, id, 'true'];
      const conf = configOf[mode];
      return [
        'run',
        '--rm',
        '--runtime',
        KATA_RUNTIME,
        ...(conf ? ['--runtime-config-path', conf] : []),
      ].concat([k.image, id, 'true']);
    };
    for (let i = 0; i < RUNS; i++) {
      const line: string[] = [];
      for (const mode of MODES) {
        const id = `bench-${mode}-${i}`;
        if (mode === 'cache') await cache?.waitFull();
        const r = await timed(k, argv(mode, id));
        line.push(`${mode} ${r.ms.toFixed(0)} ms`);
        if (r.code !== 0) {
          failures.push(`${mode} run ${i}: ${r.err}`);
          continue;
        }
        times[mode].push(r.ms);
        if (mode !== 'runc')
          kata[mode].push({ totalMs: r.ms, phases: phasesOf(k.ctrd.readLog(), id, r.start) });
      }
      process.stderr.write(`run ${i + 1}/${RUNS}: ${line.join(', ')}\n`);
    }
    // Idle memory: one booted sandbox; then clones of the template, measured at each count of CLONES.
    if (MODES.includes('boot')) {
      const before = hostUsedKiB();
      await startIdle(k, ['bench-idle-boot']);
      memory.push(await measureIdle('booted', ['bench-idle-boot'], before));
      await removeAll(k, ['bench-idle-boot']);
    }
    if (tpl) {
      const before = hostUsedKiB();
      const ids: string[] = [];
      try {
        for (const n of CLONES) {
          const more = Array.from({ length: n - ids.length }, (_, j) => `bench-idle-clone-${ids.length + j}`);
          ids.push(...more);
          await startIdle(k, more, tpl.config);
          memory.push(await measureIdle('clones', [...ids], before));
          process.stderr.write(`${ids.length} idle clones measured\n`);
        }
      } finally {
        await removeAll(k, ids);
      }
    }
  } finally {
    await tpl?.destroy().catch((e: unknown) => failures.push(`factory destroy: ${String(e)}`));
    // containerd's log holds every shim line: kept beside the JSON, to look into a phase.
    fs.mkdirSync(path.join(REPO, 'bench/results'), { recursive: true });
    fs.writeFileSync(path.join(REPO, 'bench/results/startup-last.log'), k.ctrd.readLog());
    await k.close();
  }

  const rows: [string, ReturnType<typeof stats>][] = MODES.flatMap((mode) => {
    const label = mode === 'runc' ? 'runc' : `kata ${mode}`;
    const total: [string, ReturnType<typeof stats>] = [`${label}: ctr run --rm true`, stats(times[mode])];
    if (mode === 'runc') return [total];
    return [
      total,
      ...PHASES.map((p): [string, ReturnType<typeof stats>] => [
        `  ${label}: ${p}`,
        stats(kata[mode].map((r) => r.phases[p]).filter((v): v is number => v !== undefined)),
      ]),
    ];
  });
  const fmt = (n: number) => (Number.isNaN(n) ? '-' : n.toFixed(0));
  console.log(`\nstart-up, ${RUNS} runs each (ms; phases from ctr start)`);
  console.log(`${'what'.padEnd(44)} ${'median'.padStart(8)} ${'min'.padStart(8)} ${'max'.padStart(8)}`);
  for (const [name, s] of rows) {
    console.log(
      `${name.padEnd(44)} ${fmt(s.median).padStart(8)} ${fmt(s.min).padStart(8)} ${fmt(s.max).padStart(8)}`,
    );
  }
  const runcMed = stats(times.runc).median;
  for (const mode of KATA_MODES) {
    if (times[mode].length && times.runc.length) {
      console.log(`kata ${mode} / runc: ${(stats(times[mode]).median / runcMed).toFixed(1)}x`);
    }
  }
  // Agent-ready after QEMU starts: the guest's part, which templating replaces with a restore.
  for (const mode of KATA_MODES) {
    const d = kata[mode]
      .filter((r) => r.phases.agent_ready !== undefined && r.phases.vm_launched !== undefined)
      .map((r) => r.phases.agent_ready! - r.phases.vm_launched!);
    if (d.length) console.log(`kata ${mode}: vm_launched -> agent_ready median ${fmt(median(d))} ms`);
  }
  if (tpl)
    console.log(
      `factory init ${fmt(tpl.initMs)} ms; template RAM file ${mib(tpl.ramAllocated / 1024)} MiB allocated`,
    );
  if (memory.length) {
    console.log('\nidle sandboxes (sleep), per sandbox, MiB (PSS: shared pages split between their users)');
    console.log(
      `${'what'.padEnd(18)} ${'QEMU PSS'.padStart(9)} ${'QEMU RSS'.padStart(9)} ${'shim PSS'.padStart(9)} ${'virtiofsd'.padStart(9)} ${'sum PSS'.padStart(9)} ${'host used'.padStart(9)}`,
    );
    for (const m of memory) {
      const p = m.perSandbox;
      console.log(
        `${`${m.what} x${m.sandboxes}`.padEnd(18)} ${mib(p.qemu).padStart(9)} ${mib(p.qemuRss).padStart(9)} ${mib(p.shim).padStart(9)} ${mib(p.virtiofsd).padStart(9)} ${mib(p.total).padStart(9)} ${mib(m.hostPerSandbox).padStart(9)}`,
      );
    }
  }
  if (failures.length) console.log(`\nfailures:\n${failures.join('\n')}`);

  const outDir = path.join(REPO, 'bench/results');
  fs.mkdirSync(outDir, { recursive: true });
  const file = path.join(outDir, `startup-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  fs.writeFileSync(
    file,
    `${JSON.stringify({ runs: RUNS, modes: MODES, timesMs: times, kata, summary: Object.fromEntries(rows), factoryInitMs: tpl?.initMs, templateRamBytes: tpl?.ramAllocated, memoryKiB: memory, failures }, null, 2)}\n`,
  );
  console.log(`\nwrote ${path.relative(REPO, file)}`);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
