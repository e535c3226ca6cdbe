// A busybox OCI image built locally from Debian's static busybox (no registry): an OCI image-layout tar with one
// gzipped layer (/bin/busybox, one symlink per applet, /etc/passwd and friends), ready for `ctr images import`.
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';

export const BUSYBOX_IMAGE = 'docker.io/library/busybox:kata-ts';
const BUSYBOX_BIN = '/bin/busybox';

interface TarEntry {
  name: string;
  type: 'file' | 'dir' | 'symlink';
  mode: number;
  data?: Buffer;
  linkname?: string;
}

/** One ustar header block; names longer than 100 bytes go to the prefix field. */
function tarHeader(e: TarEntry, size: number): Buffer {
  const h = Buffer.alloc(512);
  let name = e.name;
  let prefix = '';
  if (Buffer.byteLength(name) > 100) {
    const cut = name.lastIndexOf('/', 154);
    prefix = name.slice(0, cut);
    name = name.slice(cut + 1);
  }
  const put = (s: string, off: number, len: number) => h.write(s, off, len, 'utf8');
  const octal = (n: number, off: number, len: number) =>
    put(`${n.toString(8).padStart(len - 1, '0')}\0`, off, len);
  put(name, 0, 100);
  octal(e.mode, 100, 8);
  octal(0, 108, 8);
  octal(0, 116, 8);
  octal(size, 124, 12);
  octal(0, 136, 12); // mtime 0: the image digest is the same on every build
  h.fill(' ', 148, 156);
  h[156] = (e.type === 'file' ? '0' : e.type === 'symlink' ? '2' : '5').charCodeAt(0);
  if (e.linkname) put(e.linkname, 157, 100);
  put('ustar\0', 257, 6);
  put('00', 263, 2);
  put('root', 265, 32);
  put('root', 297, 32);
  put(prefix, 345, 155);
  let sum = 0;
  for (const b of h) sum += b;
  put(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8);
  return h;
}

export function tar(entries: TarEntry[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const data = e.type === 'file' ? (e.data ?? Buffer.alloc(0)) : Buffer.alloc(0);
    parts.push(tarHeader(e, data.length), data);
    const pad = (512 - (data.length % 512)) % 512;
    if (pad) parts.push(Buffer.alloc(pad));
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

const sha256 = (b: Buffer) => crypto.createHash('sha256').update(b).digest('hex');

function busyboxLayer(): Buffer {
  const applets = execFileSync(BUSYBOX_BIN, ['--list'], { encoding: 'utf8' })
    .split('\n')
    .map((s) => s.trim())
    .filter((s) => s && s !== 'busybox');
  const dir = (name: string, mode = 0o755): TarEntry => ({ name: `${name}/`, type: 'dir', mode });
  const file = (name: string, text: string, mode = 0o644): TarEntry => ({
    name,
    type: 'file',
    mode,
    data: Buffer.from(text),
  });
  const entries: TarEntry[] = [
    dir('bin'),
    dir('dev'),
    dir('etc'),
    dir('home'),
    dir('proc'),
    dir('root', 0o700),
    dir('sys'),
    dir('tmp', 0o1777),
    dir('usr'),
    dir('usr/bin'),
    dir('var'),
    { name: 'bin/busybox', type: 'file', mode: 0o755, data: fs.readFileSync(BUSYBOX_BIN) },
    ...applets.map(
      (a): TarEntry => ({ name: `bin/${a}`, type: 'symlink', mode: 0o777, linkname: 'busybox' }),
    ),
    file('etc/passwd', 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n'),
    file('etc/group', 'root:x:0:\nnobody:x:65534:\n'),
    file('etc/hosts', '127.0.0.1 localhost\n'),
    file('etc/nsswitch.conf', 'hosts: files dns\n'),
  ];
  return tar(entries);
}

/** Writes the OCI image-layout tar to `out` (platform linux/amd64) and returns its path. */
export function buildBusyboxImageTar(out: string, name = BUSYBOX_IMAGE): string {
  const layerTar = busyboxLayer();
  const layer = zlib.gzipSync(layerTar, { level: 6 });
  const config = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], Cmd: ['sh'] },
      rootfs: { type: 'layers', diff_ids: [`sha256:${sha256(layerTar)}`] },
      history: [{ created_by: 'kata-ts test/helpers/busybox-image.ts' }],
    }),
  );
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: {
        mediaType: 'application/vnd.oci.image.config.v1+json',
        digest: `sha256:${sha256(config)}`,
        size: config.length,
      },
      layers: [
        {
          mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
          digest: `sha256:${sha256(layer)}`,
          size: layer.length,
        },
      ],
    }),
  );
  const index = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          digest: `sha256:${sha256(manifest)}`,
          size: manifest.length,
          platform: { architecture: 'amd64', os: 'linux' },
          annotations: {
            'io.containerd.image.name': name,
            'org.opencontainers.image.ref.name': name.split(':').pop(),
          },
        },
      ],
    }),
  );
  const blob = (b: Buffer): TarEntry => ({
    name: `blobs/sha256/${sha256(b)}`,
    type: 'file',
    mode: 0o644,
    data: b,
  });
  const archive = tar([
    { name: 'oci-layout', type: 'file', mode: 0o644, data: Buffer.from('{"imageLayoutVersion":"1.0.0"}') },
    { name: 'index.json', type: 'file', mode: 0o644, data: index },
    { name: 'blobs/', type: 'dir', mode: 0o755 },
    { name: 'blobs/sha256/', type: 'dir', mode: 0o755 },
    blob(config),
    blob(manifest),
    blob(layer),
  ]);
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, archive);
  return out;
}

/** Builds the image tar and imports (and unpacks) it with the given ctr runner. */
export async function importBusybox(
  ctr: (args: string[]) => Promise<{ code: number | null; stdout: string; stderr: string }>,
  workDir: string,
  name = BUSYBOX_IMAGE,
): Promise<string> {
  const file = buildBusyboxImageTar(path.join(workDir, 'busybox-oci.tar'), name);
  const r = await ctr(['images', 'import', '--platform', 'linux/amd64', file]);
  if (r.code !== 0) throw new Error(`ctr images import ${file} failed (${r.code}): ${r.stderr || r.stdout}`);
  return name;
}
