// An OCI image-layout tar with one gzipped layer, for `ctr images import` (no registry exists here). Same shape
// as test/helpers/busybox-image.ts writes, for any layer and image config.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { tar } from '../busybox-image.js';

export type TarEntry = Parameters<typeof tar>[0][number];

const sha256 = (b: Buffer) => crypto.createHash('sha256').update(b).digest('hex');

/** The image config's `config` object (OCI image spec): what the runtime starts. */
export interface ImageRunConfig {
  User?: string;
  Env?: string[];
  Entrypoint?: string[];
  Cmd?: string[];
  WorkingDir?: string;
}

/** Writes the image (platform linux/amd64, named `name`) to `out` and returns `out`. */
export function writeOciImageTar(
  out: string,
  name: string,
  layerEntries: TarEntry[],
  runConfig: ImageRunConfig,
): string {
  const layerTar = tar(layerEntries);
  const layer = zlib.gzipSync(layerTar, { level: 6 });
  const config = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: runConfig,
      rootfs: { type: 'layers', diff_ids: [`sha256:${sha256(layerTar)}`] },
      history: [{ created_by: 'kata-ts test/helpers/cri/oci-image.ts' }],
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
