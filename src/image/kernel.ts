// The guest kernel from Debian's cloud kernel package: resolved with apt-cache, downloaded with apt-get into a
// cache, unpacked with dpkg-deb (never installed on the host), plus the modules the guest needs.
import fs from 'node:fs';
import path from 'node:path';
import { type Progress, run } from './steps.js';

/** Debian's meta package that depends on the current cloud kernel. */
export const KERNEL_META_PACKAGE = 'linux-image-cloud-amd64';

export interface KernelPackage {
  /** linux-image-6.1.0-56-cloud-amd64 */
  name: string;
  /** Debian version, 6.1.192-2 */
  version: string;
  /** Kernel release (uname -r), 6.1.0-56-cloud-amd64 */
  release: string;
}

const APT_QUIET = ['-q', '-o', 'APT::Sandbox::User=root'];

async function aptShow(pkg: string): Promise<string> {
  return (await run('apt-cache', ['show', '--no-all-versions', pkg])).stdout;
}

function field(record: string, name: string): string | undefined {
  return new RegExp(`^${name}: (.*)$`, 'm').exec(record)?.[1]?.trim();
}

/** Debian's .deb file name for a package version (an epoch's colon becomes %3a). */
export function debFileName(k: Pick<KernelPackage, 'name' | 'version'>): string {
  return `${k.name}_${k.version.replace(/:/g, '%3a')}_amd64.deb`;
}

/**
 * The kernel package the meta package currently points at. Runs `apt-get update` once if the package lists
 * are missing; offline, falls back to the newest cloud kernel .deb already in the cache or apt's archive.
 */
export async function resolveKernelPackage(cacheDir: string, progress: Progress): Promise<KernelPackage> {
  let record: string | undefined;
  try {
    record = await aptShow(KERNEL_META_PACKAGE);
  } catch {
    progress(`kernel: no apt list has ${KERNEL_META_PACKAGE}; running apt-get update`);
    try {
      await run('apt-get', ['update', ...APT_QUIET]);
      record = await aptShow(KERNEL_META_PACKAGE);
    } catch (e) {
      const cached = newestCachedKernel(cacheDir);
      if (cached) {
        progress(
          `kernel: apt cannot resolve ${KERNEL_META_PACKAGE} (${(e as Error).message}); using cached ${debFileName(cached)}`,
        );
        return cached;
      }
      throw new Error(`resolving ${KERNEL_META_PACKAGE} with apt-cache: ${(e as Error).message}`);
    }
  }
  const depends = field(record, 'Depends') ?? '';
  const m = /(linux-image-[^\s,(]+)\s*\(=\s*([^)\s]+)\)/.exec(depends);
  if (!m)
    throw new Error(
      `${KERNEL_META_PACKAGE} has no linux-image-<version> dependency (Depends: ${depends || 'none'})`,
    );
  const name = m[1]!;
  return { name, version: m[2]!, release: name.replace(/^linux-image-/, '') };
}

function newestCachedKernel(cacheDir: string): KernelPackage | undefined {
  const found: KernelPackage[] = [];
  for (const dir of [cacheDir, '/var/cache/apt/archives']) {
    let names: string[] = [];
    try {
      names = fs.readdirSync(dir);
    } catch {
      continue;
    }
    for (const f of names) {
      const m = /^(linux-image-(\d[^_]*-cloud-amd64))_([^_]+)_amd64\.deb$/.exec(f);
      if (m) found.push({ name: m[1]!, release: m[2]!, version: m[3]!.replace(/%3a/g, ':') });
    }
  }
  const key = (k: KernelPackage) =>
    k.version
      .split(/[.-]/)
      .map((p) => p.padStart(6, '0'))
      .join('.');
  return found.sort((a, b) => (key(a) < key(b) ? 1 : -1))[0];
}

/** The .deb in the cache (reused from apt's archive if there), downloading it with apt-get when missing. */
export async function fetchKernelDeb(
  k: KernelPackage,
  cacheDir: string,
  progress: Progress,
): Promise<string> {
  const file = debFileName(k);
  const cached = path.join(cacheDir, file);
  if (fs.existsSync(cached)) return cached;
  const archived = path.join('/var/cache/apt/archives', file);
  fs.mkdirSync(cacheDir, { recursive: true });
  if (fs.existsSync(archived)) {
    fs.copyFileSync(archived, `${cached}.tmp`);
    fs.renameSync(`${cached}.tmp`, cached);
    return cached;
  }
  const tmpDir = fs.mkdtempSync(path.join(cacheDir, 'download-'));
  try {
    const download = () =>
      run('apt-get', ['download', ...APT_QUIET, `${k.name}=${k.version}`], { cwd: tmpDir });
    progress(`kernel: downloading ${k.name} ${k.version} with apt-get`);
    try {
      await download();
    } catch (first) {
      progress(`kernel: download failed (${(first as Error).message}); running apt-get update and retrying`);
      await run('apt-get', ['update', ...APT_QUIET]);
      await download();
    }
    const got = fs.readdirSync(tmpDir).find((f) => f.endsWith('.deb'));
    if (!got) throw new Error(`apt-get download ${k.name}=${k.version} produced no .deb`);
    fs.renameSync(path.join(tmpDir, got), cached);
    return cached;
  } catch (e) {
    throw new Error(`downloading kernel package ${k.name} ${k.version}: ${(e as Error).message}`);
  } finally {
    fs.rmSync(tmpDir, { recursive: true, force: true });
  }
}

/** Unpacks the .deb once into `<cache>/<name>_<version>/` (dpkg-deb -x) and builds its modules.dep. */
export async function unpackKernel(k: KernelPackage, deb: string, cacheDir: string): Promise<string> {
  const dir = path.join(cacheDir, `${k.name}_${k.version}`);
  const done = path.join(dir, '.unpacked');
  if (fs.existsSync(done)) return dir;
  fs.rmSync(dir, { recursive: true, force: true });
  const tmp = `${dir}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  try {
    await run('dpkg-deb', ['-x', deb, tmp]);
    if (!fs.existsSync(path.join(tmp, 'boot', `vmlinuz-${k.release}`))) {
      throw new Error(`${path.basename(deb)} has no /boot/vmlinuz-${k.release}`);
    }
    // The package ships no modules.dep (the postinst makes it): make it in the unpacked tree, not the host's.
    await run('depmod', ['-b', tmp, k.release]);
    fs.writeFileSync(path.join(tmp, '.unpacked'), `${k.name} ${k.version}\n`);
    fs.renameSync(tmp, dir);
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw new Error(`unpacking ${path.basename(deb)}: ${(e as Error).message}`);
  }
  return dir;
}

/** What the guest needs from the kernel, by module name, with the config symbol that provides it. */
export const GUEST_KERNEL_FEATURES: { module: string; config: string; why: string; required: boolean }[] = [
  { module: 'virtio_pci', config: 'VIRTIO_PCI', why: 'every virtio device', required: true },
  {
    module: 'virtio_console',
    config: 'VIRTIO_CONSOLE',
    why: 'the agent channel (virtio-serial)',
    required: true,
  },
  { module: 'vsock', config: 'VSOCKETS', why: 'the agent channel (vsock)', required: false },
  {
    module: 'vmw_vsock_virtio_transport',
    config: 'VIRTIO_VSOCKETS',
    why: 'the agent channel (vsock)',
    required: false,
  },
  { module: 'virtio_rng', config: 'HW_RANDOM_VIRTIO', why: 'entropy from the host', required: false },
  { module: 'fuse', config: 'FUSE_FS', why: 'virtio-fs', required: true },
  { module: 'virtiofs', config: 'VIRTIO_FS', why: 'the shared directory (virtio-fs)', required: true },
  { module: 'overlay', config: 'OVERLAY_FS', why: 'container rootfs layers', required: true },
  { module: 'virtio_blk', config: 'VIRTIO_BLK', why: 'block devices', required: true },
  { module: 'virtio_scsi', config: 'SCSI_VIRTIO', why: 'block devices (virtio-scsi)', required: false },
  { module: 'sd_mod', config: 'BLK_DEV_SD', why: 'SCSI disks', required: false },
  { module: 'virtio_net', config: 'VIRTIO_NET', why: 'networking', required: true },
  { module: 'ext4', config: 'EXT4_FS', why: 'ext4 block devices', required: false },
  { module: 'erofs', config: 'EROFS_FS', why: 'erofs images', required: false },
];

export interface KernelParts {
  vmlinuz: string;
  /** Module files to copy: path relative to lib/modules/<release>/ (decompressed name) → source file. */
  moduleFiles: Map<string, string>;
  /** modules.dep restricted to the shipped modules, with decompressed names. */
  modulesDep: string;
  modulesBuiltin: string;
  /** Modules for the agent to load at boot, in order. */
  bootModules: string[];
  builtIn: string[];
  missing: string[];
  /** Compressed module files that must be decompressed when copied (xz or zstd). */
  compressed: Map<string, 'xz' | 'zstd'>;
}

/** Reads the kernel config and modules.dep to pick the modules (and their dependencies) the guest needs. */
export function selectKernelParts(unpacked: string, k: KernelPackage): KernelParts {
  const configText = fs.readFileSync(path.join(unpacked, 'boot', `config-${k.release}`), 'utf8');
  const config = new Map<string, string>();
  for (const m of configText.matchAll(/^CONFIG_(\w+)=(.*)$/gm)) config.set(m[1]!, m[2]!);
  const modDir = path.join(unpacked, 'lib', 'modules', k.release);
  const depLines = fs.readFileSync(path.join(modDir, 'modules.dep'), 'utf8').split('\n');
  const deps = new Map<string, { ko: string; deps: string[] }>();
  const nameOf = (ko: string) =>
    path
      .basename(ko)
      .replace(/\.ko(\.xz|\.zst|\.gz)?$/, '')
      .replace(/-/g, '_');
  for (const line of depLines) {
    const colon = line.indexOf(':');
    if (colon < 0) continue;
    const ko = line.slice(0, colon);
    deps.set(nameOf(ko), {
      ko,
      deps: line
        .slice(colon + 1)
        .trim()
        .split(/\s+/)
        .filter(Boolean),
    });
  }
  const builtIn: string[] = [];
  const missing: string[] = [];
  const bootModules: string[] = [];
  const wantedKo = new Set<string>();
  for (const f of GUEST_KERNEL_FEATURES) {
    const v = config.get(f.config);
    if (v === 'y') {
      builtIn.push(f.module);
      continue;
    }
    const entry = deps.get(f.module);
    if (v !== 'm' || !entry) {
      if (f.required) {
        throw new Error(
          `kernel ${k.release} lacks CONFIG_${f.config} (module ${f.module}, needed for ${f.why})`,
        );
      }
      missing.push(f.module);
      continue;
    }
    bootModules.push(f.module);
    wantedKo.add(entry.ko);
    for (const d of entry.deps) wantedKo.add(d);
  }
  const plain = (ko: string) => ko.replace(/\.(xz|zst|gz)$/, '');
  const moduleFiles = new Map<string, string>();
  const compressed = new Map<string, 'xz' | 'zstd'>();
  for (const ko of wantedKo) {
    const src = path.join(modDir, ko);
    if (!fs.existsSync(src))
      throw new Error(`module file ${ko} listed in modules.dep is missing from the package`);
    moduleFiles.set(plain(ko), src);
    if (ko.endsWith('.xz')) compressed.set(plain(ko), 'xz');
    if (ko.endsWith('.zst')) compressed.set(plain(ko), 'zstd');
  }
  const modulesDep = [...deps.values()]
    .filter((d) => wantedKo.has(d.ko))
    .map((d) => `${plain(d.ko)}:${d.deps.map((x) => ` ${plain(x)}`).join('')}\n`)
    .join('');
  return {
    vmlinuz: path.join(unpacked, 'boot', `vmlinuz-${k.release}`),
    moduleFiles,
    modulesDep,
    modulesBuiltin: fs.readFileSync(path.join(modDir, 'modules.builtin'), 'utf8'),
    bootModules,
    builtIn,
    missing,
    compressed,
  };
}
