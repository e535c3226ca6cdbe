// manifest.json of a guest image directory: what was built, from what, and how to boot it.
import fs from 'node:fs';
import path from 'node:path';
import type { Compression } from './compress.js';

export const MANIFEST_FILE = 'manifest.json';
export const KERNEL_LINK = 'vmlinuz.container';
export const INITRD_LINK = 'kata-containers-initrd.img';

export interface ArtifactInfo {
  file: string;
  size: number;
  sha256: string;
}

export interface GuestManifest {
  formatVersion: 1;
  builderVersion: string;
  /** sha256 over every input (package versions, file hashes, builder version): equal means up to date. */
  inputsHash: string;
  createdAt: string;
  kernel: ArtifactInfo & { release: string; package: string; packageVersion: string };
  initrd: ArtifactInfo & { compression: Compression; uncompressedSize: number; files: number };
  /** Kernel command line the guest needs (the runtime adds its own, e.g. Kata's per-arch list). */
  kernelParams: string;
  /** How the guest's node starts the agent: from a V8 startup snapshot, or by loading the bundle. */
  agentStart: 'snapshot' | 'bundle';
  agentVersion: string;
  nodeVersion: string;
  crunVersion: string;
  busyboxVersion: string;
  kernelModules: { loadedAtBoot: string[]; builtIn: string[]; unavailable: string[] };
  buildSeconds: number;
}

export function readManifest(dir: string): GuestManifest | undefined {
  const file = path.join(dir, MANIFEST_FILE);
  if (!fs.existsSync(file)) return undefined;
  try {
    const m = JSON.parse(fs.readFileSync(file, 'utf8')) as GuestManifest;
    return m.formatVersion === 1 ? m : undefined;
  } catch {
    return undefined; // unreadable: rebuilt
  }
}

export function writeManifest(dir: string, m: GuestManifest): void {
  const file = path.join(dir, MANIFEST_FILE);
  fs.writeFileSync(`${file}.tmp`, `${JSON.stringify(m, null, 2)}\n`);
  fs.renameSync(`${file}.tmp`, file);
}

/** True when the manifest's artifacts are all there with their recorded sizes. */
export function artifactsPresent(dir: string, m: GuestManifest): boolean {
  return [m.kernel, m.initrd].every((a) => {
    try {
      return fs.statSync(path.join(dir, a.file)).size === a.size;
    } catch {
      return false;
    }
  });
}

/** Points `link` at `target` atomically (a symlink in the same directory). */
export function replaceSymlink(dir: string, link: string, target: string): void {
  const tmp = path.join(dir, `.${link}.tmp-${process.pid}`);
  fs.rmSync(tmp, { force: true });
  fs.symlinkSync(target, tmp);
  fs.renameSync(tmp, path.join(dir, link));
}
