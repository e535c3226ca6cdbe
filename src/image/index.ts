// The guest image builder behind `kata-ctl image build`: a Debian cloud kernel and an initrd that boots
// straight into the kata-ts agent. Output is versioned, and a rebuild with unchanged inputs reuses it.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { type Compression, writeCompressed } from './compress.js';
import { cpioChunks } from './cpio.js';
import {
  type FileInput,
  debianVersion,
  ensureAgentBundle,
  fileInput,
  findSourceRoot,
  hasInterpreter,
  hashFile,
  koffiInputs,
  sharedLibraries,
} from './inputs.js';
import { fetchKernelDeb, resolveKernelPackage, selectKernelParts, unpackKernel } from './kernel.js';
import { withLock } from './lock.js';
import {
  type GuestManifest,
  INITRD_LINK,
  KERNEL_LINK,
  MANIFEST_FILE,
  artifactsPresent,
  readManifest,
  replaceSymlink,
  writeManifest,
} from './manifest.js';
import { GUEST_AGENT_FILE, generatedText, rootfsEntries } from './rootfs.js';
import {
  type CpuFeatures,
  buildAgentSnapshot,
  findEsbuild,
  hostCpuFeatures,
  hostSnapshotBlocker,
} from './snapshot.js';
import { ImageBuildError, type Progress, run, step } from './steps.js';

export { ImageBuildError } from './steps.js';
export type { GuestManifest } from './manifest.js';
export type { Compression } from './compress.js';

/** Bump when the layout or the way of building changes (rootfs.ts, kernel.ts), so that old images are rebuilt. */
export const BUILDER_VERSION = '4';

export const DEFAULT_IMAGE_DIR = '/usr/share/kata-containers';
export const DEFAULT_CACHE_DIR = '/var/cache/kata-ts';

/**
 * What the guest kernel needs on its command line: the serial console (the agent logs there), a short
 * console log level, and a quick exit on panic (with QEMU's -no-reboot that ends the VM).
 */
export const GUEST_KERNEL_PARAMS = 'console=ttyS0 quiet panic=1 rdinit=/init';

/**
 * Measured under TCG (bench/guest-boot.ts, src/image/README.md): lz4 unpacks fastest (kernel to init ~3.0 s,
 * against ~3.3 s plain, ~3.8 s zstd, ~4.5 s gzip). zstd is the fallback when the lz4 tool is missing.
 */
export const DEFAULT_COMPRESSION: Compression = 'lz4';
const NODE_FLAGS: string[] = [];

export interface BuildOptions {
  /** Where the image goes (default /usr/share/kata-containers). */
  outDir?: string;
  /** Downloads and unpacked packages (default /var/cache/kata-ts, or $KATA_IMAGE_CACHE). */
  cacheDir?: string;
  /** Rebuild even when the image is current. */
  force?: boolean;
  compression?: Compression;
  onProgress?: Progress;
  /** Host binaries (defaults: /usr/bin/node, /usr/bin/crun, /bin/busybox). */
  nodeBinary?: string;
  crunBinary?: string;
  busyboxBinary?: string;
  /** The dir with dist/ and node_modules/ (default: found from this module's location). */
  sourceRoot?: string;
  /** Start the agent from a V8 startup snapshot (default true; needs esbuild, a dev dependency). */
  snapshot?: boolean;
}

export interface GuestImage {
  dir: string;
  /** Versioned files (stable for the life of a VM even if the links move on). */
  kernel: string;
  initrd: string;
  kernelParams: string;
  manifest: GuestManifest;
  reused: boolean;
}

function imageOf(dir: string, m: GuestManifest, reused: boolean): GuestImage {
  return {
    dir,
    kernel: path.join(dir, m.kernel.file),
    initrd: path.join(dir, m.initrd.file),
    kernelParams: m.kernelParams,
    manifest: m,
    reused,
  };
}

export async function buildGuestImage(opts: BuildOptions = {}): Promise<GuestImage> {
  const outDir = path.resolve(opts.outDir ?? DEFAULT_IMAGE_DIR);
  const cacheDir = path.resolve(opts.cacheDir ?? process.env.KATA_IMAGE_CACHE ?? DEFAULT_CACHE_DIR);
  const say: Progress = opts.onProgress ?? (() => {});
  await step('prepare', () => {
    fs.mkdirSync(outDir, { recursive: true });
    fs.mkdirSync(cacheDir, { recursive: true });
  });
  return withLock(
    path.join(outDir, '.build.lock'),
    20 * 60_000,
    () => say(`waiting for another build of ${outDir} to finish`),
    () => build(outDir, cacheDir, opts, say),
  );
}

async function build(
  outDir: string,
  cacheDir: string,
  opts: BuildOptions,
  say: Progress,
): Promise<GuestImage> {
  const started = Date.now();
  let compression = opts.compression ?? DEFAULT_COMPRESSION;
  if (!opts.compression && compression === 'lz4' && !onPath('lz4')) {
    say('initrd: lz4 is not installed (Debian package lz4); compressing with zstd instead');
    compression = 'zstd';
  }
  const root = opts.sourceRoot ?? (await step('inputs', () => findSourceRoot()));

  say('kernel: resolving linux-image-cloud-amd64 with apt-cache');
  const kpkg = await step('kernel: resolve', () => resolveKernelPackage(cacheDir, say));
  say(`kernel: ${kpkg.name} ${kpkg.version}`);

  const agentBundle = await step('agent bundle', () => ensureAgentBundle(root, say));
  say('inputs: hashing node, crun, busybox, koffi, libraries and the agent bundle');
  const inputs = await step('inputs', async () => {
    const node = fileInput(
      opts.nodeBinary ?? '/usr/bin/node',
      'node (Debian package nodejs)',
      '/usr/bin/node',
    );
    const crun = fileInput(opts.crunBinary ?? '/usr/bin/crun', 'crun (Debian package crun)', '/usr/bin/crun');
    const busybox = fileInput(
      opts.busyboxBinary ?? '/bin/busybox',
      'busybox (Debian package busybox-static)',
      '/usr/bin/busybox',
    );
    if (hasInterpreter(busybox.source)) {
      throw new Error(
        `${busybox.source} is dynamically linked; the guest needs the static one (Debian package busybox-static)`,
      );
    }
    const koffi = koffiInputs(root);
    const libraries = await sharedLibraries([node.source, crun.source, koffi.native.source]);
    const agent = fileInput(agentBundle, 'the agent bundle', '/usr/lib/kata-agent/kata-agent.mjs');
    return { node, crun, busybox, koffi, libraries, agent };
  });
  const versions = await step('inputs', async () => ({
    agent: agentVersion(root, inputs.agent.sha256),
    node: (await run(inputs.node.source, ['--version'])).stdout.trim(),
    crun:
      (await debianVersion('crun')) ||
      (await run(inputs.crun.source, ['--version'])).stdout.split('\n')[0]!.trim(),
    busybox: (await debianVersion('busybox-static')) || 'unknown',
  }));
  const blocker = opts.snapshot === false ? undefined : hostSnapshotBlocker();
  const snapshotPlanned = opts.snapshot !== false && !blocker && findEsbuild(root) !== undefined;
  if (blocker) say(`agent: no snapshot: ${blocker}; the guest loads the bundle (slower start)`);
  else if (opts.snapshot !== false && !snapshotPlanned)
    say('agent: no esbuild under node_modules: the guest loads the bundle (slower start)');
  const inputsHash = hashInputs({
    builder: BUILDER_VERSION,
    kernel: [kpkg.name, kpkg.version],
    compression,
    generated: generatedText(NODE_FLAGS, snapshotPlanned ? hostCpuFeatures() : undefined),
    kernelParams: GUEST_KERNEL_PARAMS,
    files: [
      inputs.node,
      inputs.crun,
      inputs.busybox,
      inputs.agent,
      ...Object.values(inputs.koffi),
      ...inputs.libraries,
    ].map((f: FileInput) => [f.path, f.sha256]),
  });

  const current = readManifest(outDir);
  if (!opts.force && current?.inputsHash === inputsHash && artifactsPresent(outDir, current)) {
    ensureLinks(outDir, current);
    say(`reused: ${outDir} is up to date (inputs ${inputsHash.slice(0, 12)}, built ${current.createdAt})`);
    return imageOf(outDir, current, true);
  }

  const deb = await step(`kernel: download ${kpkg.name}`, () => fetchKernelDeb(kpkg, cacheDir, say));
  say(`kernel: unpacking ${path.basename(deb)}`);
  const unpacked = await step(`kernel: unpack ${path.basename(deb)}`, () =>
    unpackKernel(kpkg, deb, cacheDir),
  );
  const parts = await step('kernel: modules', () => selectKernelParts(unpacked, kpkg));
  say(
    `kernel: ${kpkg.release}; modules ${parts.bootModules.join(' ')} (+${parts.moduleFiles.size - parts.bootModules.length} deps)` +
      `${parts.builtIn.length ? `; built in: ${parts.builtIn.join(' ')}` : ''}${parts.missing.length ? `; unavailable: ${parts.missing.join(' ')}` : ''}`,
  );
  await step('kernel: modules', () =>
    decompressModules(parts.moduleFiles, parts.compressed, path.join(unpacked, '.decompressed')),
  );

  say(`node: stripping ${inputs.node.source} (${mib(inputs.node.size)})`);
  const strippedNode = await step('node: strip', () => stripNode(inputs.node, cacheDir));
  say(`node: ${mib(fs.statSync(strippedNode).size)} stripped`);

  let snapshot: { blob: string; cpu: CpuFeatures } | undefined;
  if (snapshotPlanned) {
    say('agent: building the V8 startup snapshot');
    try {
      const blob = await buildAgentSnapshot({
        root,
        agentBundle: inputs.agent.source,
        node: inputs.node.source,
        workDir: path.join(
          cacheDir,
          `snapshot-${inputs.agent.sha256.slice(0, 12)}-${inputs.node.sha256.slice(0, 12)}`,
        ),
        guestAgentFile: GUEST_AGENT_FILE,
        nodeFlags: NODE_FLAGS,
      });
      snapshot = { blob, cpu: hostCpuFeatures() };
      say(`agent: snapshot ${mib(fs.statSync(blob).size)} (for CPUs with ${snapshot.cpu.has.join(' ')})`);
    } catch (e) {
      say(`agent: no snapshot (${(e as Error).message}); the guest loads the bundle (slower start)`);
    }
  }

  const applets = await step('busybox applets', async () =>
    (await run(inputs.busybox.source, ['--list-full'])).stdout.split('\n').filter(Boolean),
  );
  const entries = rootfsEntries({
    agentBundle: inputs.agent.source,
    node: strippedNode,
    nodeFlags: NODE_FLAGS,
    snapshot,
    crun: inputs.crun,
    busybox: inputs.busybox,
    busyboxApplets: applets,
    koffi: Object.values(inputs.koffi),
    libraries: inputs.libraries,
    kernelRelease: kpkg.release,
    moduleFiles: parts.moduleFiles,
    modulesDep: parts.modulesDep,
    modulesBuiltin: parts.modulesBuiltin,
    bootModules: parts.bootModules,
  });
  const initrdFile = `kata-containers-initrd-${inputsHash.slice(0, 12)}.img`;
  say(`initrd: writing ${entries.length} entries as cpio, ${compression}`);
  const initrd = await step(`initrd: ${initrdFile}`, () =>
    writeCompressed(cpioChunks(entries), compression, path.join(outDir, initrdFile)),
  );
  say(`initrd: ${initrdFile} ${mib(initrd.size)} (${mib(initrd.uncompressedSize)} uncompressed)`);

  const kernelFile = `vmlinuz-${kpkg.release}`;
  await step(`kernel: ${kernelFile}`, () => {
    fs.copyFileSync(parts.vmlinuz, path.join(outDir, `${kernelFile}.tmp`));
    fs.renameSync(path.join(outDir, `${kernelFile}.tmp`), path.join(outDir, kernelFile));
  });
  const manifest: GuestManifest = {
    formatVersion: 1,
    builderVersion: BUILDER_VERSION,
    inputsHash,
    createdAt: new Date().toISOString(),
    kernel: {
      file: kernelFile,
      size: fs.statSync(parts.vmlinuz).size,
      sha256: hashFile(parts.vmlinuz),
      release: kpkg.release,
      package: kpkg.name,
      packageVersion: kpkg.version,
    },
    initrd: {
      file: initrdFile,
      size: initrd.size,
      sha256: initrd.sha256,
      compression,
      uncompressedSize: initrd.uncompressedSize,
      files: entries.length,
    },
    kernelParams: GUEST_KERNEL_PARAMS,
    agentStart: snapshot ? 'snapshot' : 'bundle',
    agentVersion: versions.agent,
    nodeVersion: versions.node,
    crunVersion: versions.crun,
    busyboxVersion: versions.busybox,
    kernelModules: { loadedAtBoot: parts.bootModules, builtIn: parts.builtIn, unavailable: parts.missing },
    buildSeconds: Math.round((Date.now() - started) / 100) / 10,
  };
  await step('manifest', () => {
    writeManifest(outDir, manifest);
    ensureLinks(outDir, manifest);
    removeStale(outDir, manifest);
  });
  say(`done in ${manifest.buildSeconds} s: ${outDir}`);
  return imageOf(outDir, manifest, false);
}

function onPath(cmd: string): boolean {
  return (process.env.PATH ?? '/usr/bin:/bin').split(':').some((d) => {
    try {
      fs.accessSync(path.join(d, cmd), fs.constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

function hashInputs(v: unknown): string {
  return crypto.createHash('sha256').update(JSON.stringify(v)).digest('hex');
}

function mib(n: number): string {
  return `${(n / 2 ** 20).toFixed(1)} MiB`;
}

function agentVersion(root: string, bundleSha: string): string {
  let version = 'unknown';
  try {
    version =
      (JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { version?: string })
        .version ?? version;
  } catch {
    // an installed tree has no package.json: the bundle hash still identifies the agent
  }
  return `${version}+${bundleSha.slice(0, 12)}`;
}

function ensureLinks(dir: string, m: GuestManifest): void {
  for (const [link, target] of [
    [KERNEL_LINK, m.kernel.file],
    [INITRD_LINK, m.initrd.file],
  ] as const) {
    let current: string | undefined;
    try {
      current = fs.readlinkSync(path.join(dir, link));
    } catch {
      // missing or not a link
    }
    if (current !== target) replaceSymlink(dir, link, target);
  }
}

/** Removes earlier versioned artifacts (running VMs keep theirs: QEMU read them at start). */
function removeStale(dir: string, m: GuestManifest): void {
  for (const f of fs.readdirSync(dir)) {
    const ours = /^kata-containers-initrd-[0-9a-f]{12}\.img$/.test(f) || /^vmlinuz-\d.*$/.test(f);
    if (ours && f !== m.kernel.file && f !== m.initrd.file && f !== MANIFEST_FILE)
      fs.rmSync(path.join(dir, f), { force: true });
  }
}

/** `strip` into the cache, keyed by the binary's hash (node ships with debug info: ~100 MB). */
async function stripNode(node: FileInput, cacheDir: string): Promise<string> {
  const out = path.join(cacheDir, `node-${node.sha256.slice(0, 16)}.stripped`);
  if (fs.existsSync(out)) return out;
  await run('strip', ['--strip-all', '-o', `${out}.tmp`, node.source]);
  fs.renameSync(`${out}.tmp`, out);
  return out;
}

async function decompressModules(
  files: Map<string, string>,
  compressed: Map<string, 'xz' | 'zstd'>,
  dir: string,
): Promise<void> {
  for (const [rel, kind] of compressed) {
    const out = path.join(dir, rel);
    if (!fs.existsSync(out)) {
      fs.mkdirSync(path.dirname(out), { recursive: true });
      await run('sh', [
        '-c',
        `${kind === 'xz' ? 'xz' : 'zstd'} -dc "$1" > "$2.tmp" && mv "$2.tmp" "$2"`,
        'sh',
        files.get(rel)!,
        out,
      ]);
    }
    files.set(rel, out);
  }
}

/** For callers that want to know a build failed because of a missing package or file. */
export function isImageBuildError(e: unknown): e is ImageBuildError {
  return e instanceof ImageBuildError;
}
