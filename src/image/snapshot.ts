// A V8 startup snapshot of the agent: node evaluates every module of the bundle (protobuf descriptors, pino, ...)
// on the build host, and the guest's node starts from that heap. Under TCG this cuts the agent's load from ~2.3 s
// to ~0.7 s (bench/guest-boot.ts). The snapshot must be made by the very node binary the guest runs.
import fs from 'node:fs';
import path from 'node:path';
import { run } from './steps.js';

/**
 * CPUID features behind V8's (11.3) CpuFeatures on x64, as /proc/cpuinfo names them (lahf_lm = SAHF,
 * abm = LZCNT, xsave = OS support for AVX; avx_vnni cannot be turned off by a flag, and QEMU 7.2's TCG lacks it,
 * so a build host that has it makes a snapshot no TCG guest loads). A snapshot only loads on a CPU
 * whose features V8 sees as equal to the build host's (node exits with status 14 otherwise, e.g. under
 * QEMU's default qemu64 model), so /init compares these and falls back to the bundle on a mismatch.
 */
export const V8_CPU_FLAGS = [
  'pni',
  'ssse3',
  'sse4_1',
  'sse4_2',
  'lahf_lm',
  'popcnt',
  'abm',
  'bmi1',
  'bmi2',
  'fma',
  'avx',
  'avx2',
  'xsave',
  'f16c',
  'avx_vnni',
];

export interface CpuFeatures {
  has: string[];
  lacks: string[];
}

/** Which of V8_CPU_FLAGS this (build) host has. */
export function hostCpuFeatures(cpuinfo = fs.readFileSync('/proc/cpuinfo', 'utf8')): CpuFeatures {
  const flags = new Set(/^flags\s*:(.*)$/m.exec(cpuinfo)?.[1]?.trim().split(/\s+/) ?? []);
  return { has: V8_CPU_FLAGS.filter((f) => flags.has(f)), lacks: V8_CPU_FLAGS.filter((f) => !flags.has(f)) };
}

/**
 * Why no snapshot made on this host could load in a guest, or undefined. V8 also counts CET shadow-stack
 * support (CPUID leaf 7, ECX bit 7), which Linux 6.1 does not show in /proc/cpuinfo, so the guest's /init
 * cannot compare it; no TCG guest has it. A host that has it (or whose CPUID cannot be read) gets no snapshot.
 */
export function hostSnapshotBlocker(cpuidDev = '/dev/cpu/0/cpuid'): string | undefined {
  if (process.arch !== 'x64') return undefined;
  let fd: number;
  try {
    fd = fs.openSync(cpuidDev, 'r');
  } catch (e) {
    return `cannot read CPUID from ${cpuidDev} (${(e as NodeJS.ErrnoException).code}; modprobe cpuid)`;
  }
  try {
    const regs = Buffer.alloc(16);
    fs.readSync(fd, regs, 0, 16, 7n); // the file offset is the leaf (subleaf in the high 32 bits)
    if ((regs.readUInt32LE(8) >> 7) & 1)
      return 'the build host has CET shadow stacks, which no TCG guest has';
    return undefined;
  } catch (e) {
    return `reading CPUID leaf 7 from ${cpuidDev}: ${(e as Error).message}`;
  } finally {
    fs.closeSync(fd);
  }
}

/** Where the agent is in the guest; the snapshot resolves koffi from there at run time. */
export const GUEST_SNAPSHOT_PATH = '/usr/lib/kata-agent/kata-agent.blob';

/**
 * Wraps the CommonJS form of the bundle as a snapshot entry script. Node's snapshot builder only has `require`
 * for built-in modules, so koffi (a native addon, which cannot be in a snapshot anyway) is a proxy that loads the
 * real module on first use, at run time in the guest.
 */
export function snapshotEntry(cjsBundle: string, guestAgentFile: string): string {
  return `'use strict';
var __kataFile = ${JSON.stringify(guestAgentFile)};
var __kataImportMetaUrl = 'file://' + __kataFile;
var __kataRequire = (function (builtinRequire) {
  var koffi;
  var lazyKoffi = new Proxy({}, {
    get: function (_, key) {
      if (key === '__esModule' || key === 'then') return undefined;
      if (!koffi) koffi = builtinRequire('module').createRequire(__kataFile)('koffi');
      return koffi[key];
    },
    ownKeys: function () { return []; },
  });
  return function (id) { return id === 'koffi' ? lazyKoffi : builtinRequire(id); };
})(require);
(function (module, exports, require) {
${cjsBundle}
})({ exports: {} }, {}, __kataRequire);
`;
}

export interface SnapshotInputs {
  /** The repo or installed tree (for node_modules/.bin/esbuild). */
  root: string;
  agentBundle: string;
  /** The node binary the guest runs (the unstripped original: same code). */
  node: string;
  /** A directory to work in (kept: a later build with the same inputs reuses the blob). */
  workDir: string;
  guestAgentFile: string;
  /** V8/node flags the guest's node runs with: the snapshot is made and checked with the same ones. */
  nodeFlags: string[];
}

/** The esbuild CLI that converts the ESM bundle to CommonJS, or undefined in a tree without dev dependencies. */
export function findEsbuild(root: string): string | undefined {
  const bin = path.join(root, 'node_modules', '.bin', 'esbuild');
  return fs.existsSync(bin) ? bin : undefined;
}

/** Builds (or reuses) the snapshot blob; throws with the reason when it cannot be made or does not load. */
export async function buildAgentSnapshot(i: SnapshotInputs): Promise<string> {
  const blob = path.join(i.workDir, 'kata-agent.blob');
  const ok = path.join(i.workDir, '.ok');
  if (fs.existsSync(ok) && fs.existsSync(blob)) return blob;
  const esbuild = findEsbuild(i.root);
  if (!esbuild)
    throw new Error(`esbuild (an npm dev dependency) is not installed under ${i.root}/node_modules`);
  fs.rmSync(i.workDir, { recursive: true, force: true });
  fs.mkdirSync(i.workDir, { recursive: true });
  const cjs = path.join(i.workDir, 'kata-agent.cjs');
  await run(esbuild, [
    i.agentBundle,
    '--format=cjs',
    '--platform=node',
    '--target=node20',
    '--define:import.meta.url=__kataImportMetaUrl',
    `--outfile=${cjs}`,
    '--log-level=error',
  ]);
  const entry = path.join(i.workDir, 'entry.js');
  fs.writeFileSync(entry, snapshotEntry(fs.readFileSync(cjs, 'utf8'), i.guestAgentFile));
  const args = [...i.nodeFlags, '--snapshot-blob', blob, '--build-snapshot', entry];
  try {
    // In a new pid namespace node is pid 1, as the agent is in the guest: the logger's `pid` field is taken
    // when the snapshot is made.
    await run('unshare', ['--pid', '--fork', '--mount-proc', i.node, ...args], { cwd: i.workDir });
  } catch (e) {
    // Only when unshare itself cannot run (not installed, not permitted): a failing snapshot build is an error.
    if (!/unshare: |unshare is not installed/.test((e as Error).message)) throw e;
    await run(i.node, args, { cwd: i.workDir });
  }
  const check = await run(i.node, [...i.nodeFlags, '--snapshot-blob', blob], {
    cwd: i.workDir,
    env: { ...process.env, KATA_AGENT_CHECK_SNAPSHOT: '1' },
  });
  if (!check.stdout.includes('kata-agent snapshot ok')) {
    throw new Error(`the snapshot does not load: ${(check.stdout + check.stderr).trim().slice(-500)}`);
  }
  fs.writeFileSync(ok, '');
  return blob;
}
