// The host files that go into the guest: the agent bundle, node, crun, busybox, koffi's native module, and the
// shared libraries they load. Each is hashed, so that a rebuild happens exactly when one of them changed.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { run } from './steps.js';

export interface FileInput {
  /** Path as the guest will see it (and as ldd reports it). */
  path: string;
  /** The host file to read (symlinks resolved). */
  source: string;
  size: number;
  sha256: string;
}

export function hashFile(file: string): string {
  const h = crypto.createHash('sha256');
  const fd = fs.openSync(file, 'r');
  try {
    const buf = Buffer.allocUnsafe(4 << 20);
    for (let n = fs.readSync(fd, buf); n > 0; n = fs.readSync(fd, buf)) h.update(buf.subarray(0, n));
  } finally {
    fs.closeSync(fd);
  }
  return h.digest('hex');
}

/** A host file by path, resolved and hashed; `what` names it in the error when it is missing. */
export function fileInput(hostPath: string, what: string, guestPath = hostPath): FileInput {
  let source: string;
  try {
    source = fs.realpathSync(hostPath);
  } catch {
    throw new Error(`${what} not found at ${hostPath}`);
  }
  return { path: guestPath, source, size: fs.statSync(source).size, sha256: hashFile(source) };
}

/**
 * The directory that holds dist/ and node_modules/ (the repo, or where `kata-ctl install` put the bundles):
 * the first ancestor of this module with dist/kata-agent.mjs or package.json.
 */
export function findSourceRoot(from = import.meta.dirname): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    if (
      fs.existsSync(path.join(dir, 'package.json')) ||
      fs.existsSync(path.join(dir, 'dist', 'kata-agent.mjs'))
    )
      return dir;
    if (path.dirname(dir) === dir) throw new Error(`no package.json or dist/kata-agent.mjs above ${from}`);
  }
}

function newestMtime(dir: string): number {
  let newest = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (!e.isFile() || !/\.(ts|json)$/.test(e.name)) continue;
    newest = Math.max(newest, fs.statSync(path.join(e.parentPath ?? e.path, e.name)).mtimeMs);
  }
  return newest;
}

/**
 * dist/kata-agent.mjs, rebuilt with scripts/bundle.mjs when any source is newer (in a checkout). Without
 * sources (an installed tree) the bundle must already be there.
 */
export async function ensureAgentBundle(root: string, say: (line: string) => void): Promise<string> {
  const bundle = path.join(root, 'dist', 'kata-agent.mjs');
  const script = path.join(root, 'scripts', 'bundle.mjs');
  const src = path.join(root, 'src');
  if (fs.existsSync(script) && fs.existsSync(path.join(src, 'agent', 'main.ts'))) {
    const stale = !fs.existsSync(bundle) || newestMtime(src) > fs.statSync(bundle).mtimeMs;
    if (stale) {
      say(
        `agent: bundling ${path.relative(process.cwd(), bundle) || bundle} (node scripts/bundle.mjs kata-agent)`,
      );
      await run(process.execPath, [script, 'kata-agent'], { cwd: root });
    }
  }
  if (!fs.existsSync(bundle))
    throw new Error(
      `the agent bundle ${bundle} is missing (build it with: node scripts/bundle.mjs kata-agent)`,
    );
  return bundle;
}

/** koffi's prebuilt dirs for the architectures a guest can have (the guest runs the host's node, so its arch). */
const KOFFI_TRIPLETS: Readonly<Record<string, string>> = { x64: 'linux_x64', arm64: 'linux_arm64' };

/** koffi's native module, relative to its package dir, for a guest of this arch. */
export function koffiNativePath(arch: string = process.arch): string {
  const triplet = KOFFI_TRIPLETS[arch];
  if (!triplet) {
    throw new Error(
      `the guest image cannot be built on ${arch}: koffi's native module is shipped for ${Object.keys(KOFFI_TRIPLETS).join(', ')}`,
    );
  }
  return `build/koffi/${triplet}/koffi.node`;
}

/**
 * koffi's files for the guest: package.json and the native module for this arch (rootfs.ts writes a small
 * index.js in place of koffi's, whose installer helpers load https, crypto and zlib: about a second under TCG).
 */
export function koffiInputs(
  root: string,
  arch: string = process.arch,
): { packageJson: FileInput; native: FileInput } {
  const dir = path.join(root, 'node_modules', 'koffi');
  const guest = '/usr/lib/kata-agent/node_modules/koffi';
  const native = koffiNativePath(arch);
  return {
    packageJson: fileInput(path.join(dir, 'package.json'), 'koffi (npm package)', `${guest}/package.json`),
    native: fileInput(
      path.join(dir, native),
      `koffi's native module for linux ${arch}`,
      `${guest}/${native}`,
    ),
  };
}

/** The shared libraries (and the dynamic loader) that ldd reports for these binaries. */
export async function sharedLibraries(binaries: string[]): Promise<FileInput[]> {
  const libs = new Map<string, FileInput>();
  for (const bin of binaries) {
    const { stdout } = await run('ldd', [bin]);
    for (const line of stdout.split('\n')) {
      if (/not found/.test(line))
        throw new Error(`${bin} needs a library that is not installed: ${line.trim()}`);
      const m = /=>\s*(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
      if (m && !libs.has(m[1]!)) libs.set(m[1]!, fileInput(m[1]!, `library ${m[1]} (needed by ${bin})`));
    }
  }
  return [...libs.values()].sort((a, b) => (a.path < b.path ? -1 : 1));
}

/** True when an x86-64 ELF file has a program interpreter (PT_INTERP), i.e. is dynamically linked. */
export function hasInterpreter(file: string): boolean {
  const fd = fs.openSync(file, 'r');
  try {
    const head = Buffer.alloc(64);
    fs.readSync(fd, head, 0, 64, 0);
    if (head.readUInt32BE(0) !== 0x7f454c46 || head[4] !== 2)
      throw new Error(`${file} is not a 64-bit ELF file`);
    const phoff = Number(head.readBigUInt64LE(0x20));
    const phentsize = head.readUInt16LE(0x36);
    const phnum = head.readUInt16LE(0x38);
    const ph = Buffer.alloc(phentsize * phnum);
    fs.readSync(fd, ph, 0, ph.length, phoff);
    for (let i = 0; i < phnum; i++) if (ph.readUInt32LE(i * phentsize) === 3) return true;
    return false;
  } finally {
    fs.closeSync(fd);
  }
}

/** Debian version of an installed package, or "" when dpkg does not know it. */
export async function debianVersion(pkg: string): Promise<string> {
  try {
    return (await run('dpkg-query', ['-W', '-f', '${Version}', pkg])).stdout.trim();
  } catch {
    return '';
  }
}
