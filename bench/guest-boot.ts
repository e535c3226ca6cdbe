// Boot-to-agent-ready of the guest image under TCG, over N boots: where the time goes from QEMU's start to the
// first answered RPC. Usage: node bench/run.mjs guest-boot [N=5] [--memory MiB] [--param k=v ...]
import fs from 'node:fs';
import path from 'node:path';
import { Health } from '../src/protocols/gen/health_pb.js';
import { createClient } from '../src/protocols/ttrpc/index.js';
import { type GuestImageFiles, ensureGuestImage } from '../test/helpers/guest-image.js';
import { bootVm } from '../test/helpers/vm.js';

interface Sample {
  /** Host: QEMU spawned → first Health.Check answered. */
  bootToReadyMs: number;
  /** Guest uptime when node started (kernel start → /init exec'd node; includes unpacking the initrd). */
  kernelToInitMs: number;
  /** node start → the agent's main() runs (node bootstrap, loading the bundle). */
  nodeLoadMs: number;
  /** main() → listening (mounts, modules, cgroups, channel), and its parts: */
  agentInitMs: number;
  /** main() → basic mounts done (includes loading koffi). */
  mountsMs: number;
  /** mounts → init done (channel modules, host name, lo, cgroups). */
  initMs: number;
  /** init → agent services created. */
  servicesMs: number;
  /** services → listening (virtio-serial port found and open). */
  channelMs: number;
  /** node start → listening: the agent's whole start-up. */
  agentStartMs: number;
  /** One Health.Check round trip once connected. */
  rpcMs: number;
  /** Whatever is not inside the guest kernel's uptime: QEMU start, firmware, loading kernel+initrd, connect. */
  outsideKernelMs: number;
}

interface Args {
  boots: number;
  memoryMiB: number;
  params: string[];
  qemuArgs: string[];
  imageDir?: string;
}

function parseArgs(argv: string[]): Args {
  let imageDir: string | undefined;
  const qemuArgs: string[] = [];
  let boots = 5;
  let memoryMiB = 512;
  const params: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--memory') memoryMiB = Number(argv[++i]);
    else if (a === '--param') params.push(argv[++i]!);
    else if (a === '--image') imageDir = argv[++i];
    else if (a === '--qemu') qemuArgs.push(...argv[++i]!.split(' '));
    else if (/^\d+$/.test(a)) boots = Number(a);
    else
      throw new Error(
        `guest-boot: unknown argument ${a} (usage: guest-boot [N] [--memory MiB] [--param k=v] [--image DIR] [--qemu 'ARGS'])`,
      );
  }
  if (!(boots > 0) || !(memoryMiB >= 128)) throw new Error('guest-boot: N must be > 0 and --memory >= 128');
  return { boots, memoryMiB, params, qemuArgs, imageDir };
}

async function oneBoot(image: GuestImageFiles, a: Args): Promise<Sample> {
  const t0 = performance.now();
  const vm = await bootVm({ image, memoryMiB: a.memoryMiB, kernelParams: a.params, extraArgs: a.qemuArgs });
  try {
    const client = await vm.connectAgent();
    const bootToReadyMs = performance.now() - t0;
    const health = createClient(Health, client);
    const r0 = performance.now();
    await health.check({});
    const rpcMs = performance.now() - r0;
    client.close();
    const m = await vm.waitForConsole(/"uptimes":(\{[^}]*\})[^\n]*"agent ready"/, 30_000);
    const up = JSON.parse(m[1]!) as {
      nodeStart: number;
      agentMain: number;
      mounted: number;
      initDone: number;
      services: number;
      listening: number;
    };
    const ms = (s: number) => Math.round(s * 1000);
    return {
      bootToReadyMs: Math.round(bootToReadyMs),
      kernelToInitMs: ms(up.nodeStart),
      nodeLoadMs: ms(up.agentMain - up.nodeStart),
      agentInitMs: ms(up.listening - up.agentMain),
      mountsMs: ms(up.mounted - up.agentMain),
      initMs: ms(up.initDone - up.mounted),
      servicesMs: ms(up.services - up.initDone),
      channelMs: ms(up.listening - up.services),
      agentStartMs: ms(up.listening - up.nodeStart),
      rpcMs: Math.round(rpcMs * 10) / 10,
      outsideKernelMs: Math.round(bootToReadyMs - up.listening * 1000),
    };
  } finally {
    await vm.stop();
  }
}

/** A built image directory other than build/guest (for comparing builds). */
function imageFromDir(dir: string): GuestImageFiles {
  const m = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as {
    kernel: { file: string };
    initrd: { file: string };
    kernelParams: string;
  };
  return {
    dir,
    kernel: path.join(dir, m.kernel.file),
    initrd: path.join(dir, m.initrd.file),
    kernelParams: m.kernelParams,
  };
}

function stats(xs: number[]): { min: number; median: number; max: number } {
  const s = [...xs].sort((a, b) => a - b);
  return { min: s[0]!, median: s[Math.floor(s.length / 2)]!, max: s[s.length - 1]! };
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const { boots, memoryMiB, params, qemuArgs, imageDir } = args;
  const image = imageDir ? imageFromDir(imageDir) : await ensureGuestImage();
  const manifest = JSON.parse(fs.readFileSync(path.join(image.dir, 'manifest.json'), 'utf8')) as {
    initrd: { size: number; compression: string; uncompressedSize: number };
  };
  const samples: Sample[] = [];
  for (let i = 0; i < boots; i++) {
    const s = await oneBoot(image, args);
    process.stderr.write(`boot ${i + 1}/${boots}: ready in ${s.bootToReadyMs} ms\n`);
    samples.push(s);
  }
  const keys = Object.keys(samples[0]!) as (keyof Sample)[];
  const table = Object.fromEntries(keys.map((k) => [k, stats(samples.map((s) => s[k]))]));
  const share = table.agentStartMs!.median / table.bootToReadyMs!.median;
  console.log(
    `guest boot under TCG, ${boots} boots, ${memoryMiB} MiB, initrd ${manifest.initrd.compression} ` +
      `${(manifest.initrd.size / 2 ** 20).toFixed(1)} MiB (${(manifest.initrd.uncompressedSize / 2 ** 20).toFixed(1)} MiB unpacked)`,
  );
  console.log(`${'phase'.padEnd(18)}${'min'.padStart(9)}${'median'.padStart(9)}${'max'.padStart(9)}`);
  for (const k of keys) {
    const t = table[k]!;
    console.log(
      `${k.padEnd(18)}${String(t.min).padStart(9)}${String(t.median).padStart(9)}${String(t.max).padStart(9)}`,
    );
  }
  console.log(`agent start is ${(share * 100).toFixed(1)}% of boot-to-ready (goal: <= 20%)`);
  const out = path.resolve(
    'bench/results',
    `guest-boot-${new Date().toISOString().replace(/[:.]/g, '-')}.json`,
  );
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(
    out,
    `${JSON.stringify({ bench: 'guest-boot', boots, memoryMiB, params, qemuArgs, initrd: manifest.initrd, table, agentStartShare: share, samples }, null, 2)}\n`,
  );
  console.log(`wrote ${out}`);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
