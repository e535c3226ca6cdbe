// Kubernetes pods through containerd's CRI plugin, runc vs kata-ts side by side in one run (a private containerd
// with CRI; this bench plays kubelet): RunPodSandbox + CreateContainer + StartContainer of a one-container pod,
// the time from RunPodSandbox to the container's first CRI log line, a 3-container pod (containers started one
// after another, as kubelet does), and N pods created in parallel; with those N running, each pod's host RSS
// (kata: shim + QEMU + virtiofsd; runc: shim + the pod's processes) and, for kata, the guest's MemAvailable.
// Usage: node bench/run.mjs pod [--runs 3] [--parallel 5]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { baseOverrides, configText, guestImage } from '../test/e2e/shim-fixtures.js';
import { REPO, buildShim } from '../test/helpers/containerd.js';
import {
  type CriContainerd,
  type RuntimeHandler,
  startCriContainerd,
} from '../test/helpers/cri/containerd-cri.js';
import { type TestPod, runTestPod } from '../test/helpers/cri/pod.js';

const { values } = parseArgs({
  options: { runs: { type: 'string', default: '3' }, parallel: { type: 'string', default: '5' } },
});
const RUNS = Number(values.runs);
const PARALLEL = Number(values.parallel);
const HANDLERS: RuntimeHandler[] = ['runc', 'kata'];
const SLEEP = 'while :; do sleep 1; done';

interface Row {
  handler: RuntimeHandler;
  /** Median seconds over the runs. */
  onePod: number;
  firstLogLine: number;
  threeContainers: number;
  parallelAllRunning: number;
  /** Per pod, median over the parallel pods (MiB). */
  rssMiB: number;
  qemuMiB?: number;
  shimMiB: number;
  virtiofsdMiB?: number;
  guestAvailableMiB?: number;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? Number.NaN;
};
const secs = (t0: number) => (performance.now() - t0) / 1000;

function rssMiB(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return Number(m?.[1] ?? 0) / 1024;
  } catch {
    return 0; // exited
  }
}

function cmdlines(): { pid: number; cmd: string; ppid: number }[] {
  const out = [];
  for (const d of fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const cmd = fs.readFileSync(`/proc/${d}/cmdline`, 'utf8').replace(/\0/g, ' ');
      const ppid = Number(/PPid:\s+(\d+)/.exec(fs.readFileSync(`/proc/${d}/status`, 'utf8'))?.[1] ?? 0);
      out.push({ pid: Number(d), cmd, ppid });
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

/** The host processes of one pod: its shim (the bundle's shim.pid) and what hangs off it. */
function podMemory(env: CriContainerd, pod: TestPod, handler: RuntimeHandler) {
  const procs = cmdlines();
  const pidFile = path.join(env.ctrd.dir, 'state/io.containerd.runtime.v2.task/k8s.io', pod.id, 'shim.pid');
  // The kata shim writes shim.pid into the bundle; runc's shim is named by its -id on its command line.
  const shim = fs.existsSync(pidFile)
    ? Number(fs.readFileSync(pidFile, 'utf8'))
    : (procs.find((p) => /containerd-shim/.test(p.cmd) && p.cmd.includes(`-id ${pod.id}`))?.pid ?? 0);
  if (!shim) throw new Error(`no shim found for pod ${pod.id} (${handler})`);
  const shimMiB = rssMiB(shim);
  if (handler === 'kata') {
    const qemu = procs.filter((p) => p.cmd.includes(`-name sandbox-${pod.id}`));
    const vfsd = procs.filter((p) => /virtiofsd/.test(p.cmd) && p.cmd.includes(pod.id));
    const qemuMiB = qemu.reduce((n, p) => n + rssMiB(p.pid), 0);
    const virtiofsdMiB = vfsd.reduce((n, p) => n + rssMiB(p.pid), 0);
    return { shimMiB, qemuMiB, virtiofsdMiB, rssMiB: shimMiB + qemuMiB + virtiofsdMiB };
  }
  // runc: the shim's descendants are the pod's pause and container processes.
  const kids = new Set([shim]);
  let grew = true;
  while (grew) {
    grew = false;
    for (const p of procs) {
      if (kids.has(p.ppid) && !kids.has(p.pid)) {
        kids.add(p.pid);
        grew = true;
      }
    }
  }
  return { shimMiB, rssMiB: [...kids].reduce((n, p) => n + rssMiB(p), 0) };
}

async function waitForLogLine(file: string, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (fs.existsSync(file) && fs.statSync(file).size > 0) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`no log line in ${file} after ${timeoutMs} ms`);
}

async function bench(env: CriContainerd, handler: RuntimeHandler): Promise<Row> {
  const tag = `${handler}-${process.pid}`;
  const one: number[] = [];
  const firstLog: number[] = [];
  const three: number[] = [];
  for (let r = 0; r < RUNS; r++) {
    let t0 = performance.now();
    const pod = await runTestPod(env, handler, `bpod1-${tag}-${r}`);
    const c = await pod.start('main', `echo first; ${SLEEP}`);
    one.push(secs(t0));
    await waitForLogLine(c.log);
    firstLog.push(secs(t0));
    await pod.remove();

    t0 = performance.now();
    const pod3 = await runTestPod(env, handler, `bpod3-${tag}-${r}`);
    for (const n of ['a', 'b', 'c']) await pod3.start(n, SLEEP);
    three.push(secs(t0));
    await pod3.remove();
  }

  const t0 = performance.now();
  const pods = await Promise.all(
    Array.from({ length: PARALLEL }, async (_, i) => {
      const pod = await runTestPod(env, handler, `bpodp-${tag}-${i}`);
      const c = await pod.start('main', SLEEP);
      return { pod, cid: c.id };
    }),
  );
  const parallelAllRunning = secs(t0);
  await new Promise((r) => setTimeout(r, 3000)); // let the guests settle before measuring memory
  const mem = pods.map((p) => podMemory(env, p.pod, handler));
  let guestAvailableMiB: number | undefined;
  if (handler === 'kata') {
    const avail = await Promise.all(
      pods.map(async (p) => {
        const r = await env.cri.execSync(p.cid, ['grep', 'MemAvailable', '/proc/meminfo'], 30);
        return Number(/(\d+) kB/.exec(r.stdout.toString())?.[1] ?? 0) / 1024;
      }),
    );
    guestAvailableMiB = median(avail);
  }
  const left = (await Promise.all(pods.map((p) => p.pod.remove()))).flat();
  if (left.length) throw new Error(`${handler}: the parallel pods left ${left.join(', ')}`);
  const med = (k: 'rssMiB' | 'shimMiB' | 'qemuMiB' | 'virtiofsdMiB') => {
    const xs = mem.map((m) => (m as Record<string, number | undefined>)[k]).filter((x) => x !== undefined);
    return xs.length ? median(xs as number[]) : undefined;
  };
  return {
    handler,
    onePod: median(one),
    firstLogLine: median(firstLog),
    threeContainers: median(three),
    parallelAllRunning,
    rssMiB: med('rssMiB') ?? 0,
    shimMiB: med('shimMiB') ?? 0,
    qemuMiB: med('qemuMiB'),
    virtiofsdMiB: med('virtiofsdMiB'),
    guestAvailableMiB,
  };
}

buildShim();
const confDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kata-ts-bench-pod-'));
const kataConfigPath = path.join(confDir, 'configuration.toml');
fs.writeFileSync(kataConfigPath, configText(baseOverrides(await guestImage())));
const env = await startCriContainerd({ kataConfigPath });
const rows: Row[] = [];
try {
  for (const h of HANDLERS) rows.push(await bench(env, h));
} finally {
  await env.stop();
  fs.rmSync(confDir, { recursive: true, force: true });
}

const f = (x: number | undefined, d = 2) => (x === undefined ? '-' : x.toFixed(d));
const [runc, kata] = rows;
console.log(
  `\npods through containerd's CRI plugin (median of ${RUNS} runs; ${PARALLEL} pods in parallel; ${os.cpus().length} CPUs)`,
);
console.log('| measure | runc | kata | kata/runc |');
console.log('| --- | --- | --- | --- |');
const line = (label: string, k: keyof Row, d = 2) => {
  const a = runc?.[k] as number | undefined;
  const b = kata?.[k] as number | undefined;
  console.log(`| ${label} | ${f(a, d)} | ${f(b, d)} | ${a && b ? `${(b / a).toFixed(1)}×` : '-'} |`);
};
line('RunPodSandbox + Create + Start, 1 container (s)', 'onePod');
line('RunPodSandbox to first log line (s)', 'firstLogLine');
line('pod of 3 containers, all started (s)', 'threeContainers');
line(`${PARALLEL} pods in parallel, all running (s)`, 'parallelAllRunning');
line('host RSS per pod (MiB)', 'rssMiB', 1);
line('  of which the shim (MiB)', 'shimMiB', 1);
line('  of which QEMU (MiB)', 'qemuMiB', 1);
line('  of which virtiofsd (MiB)', 'virtiofsdMiB', 1);
line('guest MemAvailable per pod (MiB)', 'guestAvailableMiB', 0);
const dir = path.join(REPO, 'bench/results');
fs.mkdirSync(dir, { recursive: true });
const file = path.join(dir, `pod-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
fs.writeFileSync(file, JSON.stringify({ runs: RUNS, parallel: PARALLEL, rows }, null, 2));
console.log(`\nwrote ${file}`);
