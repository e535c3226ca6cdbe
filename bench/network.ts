// Pod network throughput and latency, runc vs kata-ts, in one run through a private containerd: per runtime a
// pod netns with eth0 (veth) whose peer end is in a peer netns (10.237.x.0/24, nothing routes elsewhere); a
// detached busybox container in the pod netns (`ctr run --with-ns network:…`). Measured from the peer netns
// (a Node helper under `ip netns exec`): TCP container→peer (busybox `dd | nc`, bytes counted at the peer), TCP
// peer→container (the peer sends into `nc -l -e wc -c`), and HTTP round trips peer→container (busybox httpd).
// kata runs twice: internetworking_model tcfilter (the default) and macvtap.
// Usage: node bench/run.mjs network [--mib N] [--requests N] [--runtimes runc,kata,kata-mvt]  (prints a table, writes bench/results/network-*.json)
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { setupKata } from '../test/e2e/shim-fixtures.js';
import { KATA_RUNTIME, REPO } from '../test/helpers/containerd.js';

const { values } = parseArgs({
  options: {
    mib: { type: 'string', default: '32' },
    requests: { type: 'string', default: '50' },
    runtimes: { type: 'string', default: 'runc,kata,kata-mvt' },
  },
});
const MIB = Number(values.mib);
const REQUESTS = Number(values.requests);
const BYTES = MIB << 20;
// kata-mvt: kata-ts with internetworking_model = macvtap (kata: the default, tcfilter).
type Runtime = 'runc' | 'kata' | 'kata-mvt';

/** The peer's side: `recv PORT BYTES` prints seconds from first to last byte; `send HOST PORT BYTES` prints
 * seconds to send; `http HOST PORT N` prints every round trip in ms. Retries connecting for 60 s. */
const PEER = `
const net = require('net'), http = require('http');
const [cmd, a, b, c] = process.argv.slice(1);
const retry = (fn) => { const t0 = Date.now(); const go = () => fn().catch((e) => Date.now() - t0 < 60000 ? setTimeout(go, 200) : (console.error(String(e)), process.exit(1))); go(); };
if (cmd === 'recv') {
  const want = Number(b); let n = 0, t0 = 0;
  const srv = net.createServer((s) => s.on('data', (d) => { if (!t0) t0 = performance.now(); n += d.length;
    if (n >= want) { console.log(JSON.stringify({ s: (performance.now() - t0) / 1000, bytes: n })); s.destroy(); srv.close(); } }));
  srv.listen(Number(a), () => console.error('listening'));
} else if (cmd === 'send') {
  const buf = Buffer.alloc(1 << 20);
  retry(() => new Promise((res, rej) => { const s = net.connect(Number(b), a); s.once('error', rej); s.once('connect', () => {
    const t0 = performance.now(); let left = Number(c);
    const pump = () => { while (left > 0) { left -= buf.length; if (!s.write(buf)) return s.once('drain', pump); } s.end(); };
    s.on('close', () => { console.log(JSON.stringify({ s: (performance.now() - t0) / 1000 })); res(); }); pump(); }); }));
} else if (cmd === 'http') {
  const get = () => new Promise((res, rej) => http.get({ host: a, port: Number(b), path: '/', agent: false }, (r) => { r.resume(); r.on('end', res); }).on('error', rej));
  retry(async () => { await get(); const ms = []; for (let i = 0; i < Number(c); i++) { const t = performance.now(); await get(); ms.push(performance.now() - t); } console.log(JSON.stringify({ ms })); });
}`;

function peer(ns: string, args: string[]): { child: ChildProcess; result: Promise<Record<string, unknown>> } {
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', PEER, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout?.on('data', (d: Buffer) => {
    out += d;
  });
  child.stderr?.on('data', (d: Buffer) => {
    err += d;
  });
  const result = new Promise<Record<string, unknown>>((resolve, reject) =>
    child.once('close', (code) =>
      code === 0
        ? resolve(JSON.parse(out) as Record<string, unknown>)
        : reject(new Error(`peer ${args[0]}: ${err}`)),
    ),
  );
  return { child, result };
}

const ip = (args: string[]) => execFileSync('ip', args, { stdio: 'pipe', timeout: 10_000 });
const made: string[] = [];
function netnsPair(tag: string, n: number) {
  const pod = `ktb-${tag}-${process.pid}`;
  const peerNs = `ktb-${tag}p-${process.pid}`;
  for (const ns of [pod, peerNs]) {
    ip(['netns', 'add', ns]);
    made.push(ns);
  }
  ip(['-n', pod, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'veth0', 'netns', peerNs]);
  ip(['-n', pod, 'addr', 'add', `10.237.${n}.2/24`, 'dev', 'eth0']);
  ip(['-n', peerNs, 'addr', 'add', `10.237.${n}.1/24`, 'dev', 'veth0']);
  for (const [ns, dev] of [
    [pod, 'eth0'],
    [pod, 'lo'],
    [peerNs, 'veth0'],
  ] as const)
    ip(['-n', ns, 'link', 'set', dev, 'up']);
  return { pod, peerNs, podIp: `10.237.${n}.2`, peerIp: `10.237.${n}.1` };
}

const k = await setupKata();
const rows: {
  runtime: Runtime;
  toPeerMiBs: number;
  fromPeerMiBs: number;
  rttP50Ms: number;
  rttAvgMs: number;
}[] = [];
try {
  const macvtapConf = k.writeConfig('macvtap.toml', { runtime: { internetworking_model: 'macvtap' } });
  for (const [i, runtime] of (values.runtimes.split(',') as Runtime[]).entries()) {
    if (!['runc', 'kata', 'kata-mvt'].includes(runtime)) throw new Error(`--runtimes: unknown ${runtime}`);
    const net = netnsPair(runtime, 10 + i);
    const cid = `bench-net-${runtime}-${process.pid}`;
    const rt =
      runtime === 'runc'
        ? []
        : [
            '--runtime',
            KATA_RUNTIME,
            ...(runtime === 'kata-mvt' ? ['--runtime-config-path', macvtapConf] : []),
          ];
    const r = await k.ctrd.ctr(
      [
        'run',
        '-d',
        ...rt,
        '--with-ns',
        `network:/var/run/netns/${net.pod}`,
        k.image,
        cid,
        'sh',
        '-c',
        'mkdir -p /w && echo ok > /w/index.html && exec httpd -f -p 8080 -h /w',
      ],
      { timeoutMs: 240_000 },
    );
    if (r.code !== 0) throw new Error(`ctr run ${cid}: ${r.stderr}`);
    try {
      // container → peer
      const recv = peer(net.peerNs, ['recv', '5001', String(BYTES)]);
      await new Promise((res) => recv.child.stderr?.once('data', res));
      const tx = await k.ctrd.ctr(
        [
          'task',
          'exec',
          '--exec-id',
          'tx',
          cid,
          'sh',
          '-c',
          `dd if=/dev/zero bs=1M count=${MIB} 2>/dev/null | nc ${net.peerIp} 5001`,
        ],
        { timeoutMs: 600_000 },
      );
      const toPeer = (await recv.result) as { s: number };
      if (tx.code !== 0 && tx.code !== 1) throw new Error(`tx exec: ${tx.stderr}`);
      // peer → container
      const rx = k.ctrd.ctr(
        ['task', 'exec', '--exec-id', 'rx', cid, 'sh', '-c', "nc -l -p 5002 -e sh -c 'wc -c >&2'"],
        {
          timeoutMs: 600_000,
        },
      );
      const send = (await peer(net.peerNs, ['send', net.podIp, '5002', String(BYTES)]).result) as {
        s: number;
      };
      const got = await rx;
      // The count comes on stderr: under -e, wc's stdout is the socket. (`nc -l | wc -c` lost data: nc, its
      // stdin at EOF, could end the connection early.)
      if (Number(got.stderr.trim()) !== BYTES)
        throw new Error(`${runtime} rx: ${got.stderr.trim()} bytes of ${BYTES}: ${got.stdout}`);
      // HTTP round trips peer → container
      const { ms } = (await peer(net.peerNs, ['http', net.podIp, '8080', String(REQUESTS)]).result) as {
        ms: number[];
      };
      const sorted = [...ms].sort((a, b) => a - b);
      rows.push({
        runtime,
        toPeerMiBs: MIB / toPeer.s,
        fromPeerMiBs: MIB / send.s,
        rttP50Ms: sorted[Math.floor(sorted.length / 2)]!,
        rttAvgMs: ms.reduce((a, b) => a + b, 0) / ms.length,
      });
    } finally {
      await k.ctrd.ctr(['task', 'kill', '-s', 'SIGKILL', cid]);
      for (let t = 0; t < 120; t++) {
        if ((await k.ctrd.ctr(['task', 'delete', cid])).code === 0) break;
        await new Promise((res) => setTimeout(res, 500));
      }
      await k.ctrd.ctr(['container', 'delete', cid]);
    }
  }
} finally {
  await k.close();
  for (const ns of made) ip(['netns', 'del', ns]);
}

const f = (x: number) => x.toFixed(1);
console.log(`\npod network, ${MIB} MiB per TCP transfer, ${REQUESTS} HTTP requests (TCG guest, plain tap)\n`);
console.log('runtime  container→peer MiB/s  peer→container MiB/s  HTTP RTT p50 ms  avg ms');
for (const r of rows)
  console.log(
    `${r.runtime.padEnd(8)} ${f(r.toPeerMiBs).padStart(20)} ${f(r.fromPeerMiBs).padStart(21)} ${f(r.rttP50Ms).padStart(16)} ${f(r.rttAvgMs).padStart(7)}`,
  );
const runc = rows.find((r) => r.runtime === 'runc');
for (const kata of rows.filter((r) => r.runtime !== 'runc'))
  if (runc)
    console.log(
      `${kata.runtime}/runc: container→peer ${f((kata.toPeerMiBs / runc.toPeerMiBs) * 100)}%, peer→container ${f((kata.fromPeerMiBs / runc.fromPeerMiBs) * 100)}%, RTT p50 ${f(kata.rttP50Ms / runc.rttP50Ms)}×`,
    );
const out = path.join(
  REPO,
  'bench/results',
  `network-${new Date().toISOString().replace(/[:.]/g, '-')}.json`,
);
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.writeFileSync(out, JSON.stringify({ mib: MIB, requests: REQUESTS, rows }, null, 2));
console.log(`\nwrote ${out}`);
