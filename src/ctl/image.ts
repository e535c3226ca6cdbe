// `kata-ctl image build`: builds the guest kernel + initrd (see src/image).
import type { Command } from 'commander';
import { type Compression, DEFAULT_IMAGE_DIR, buildGuestImage } from '../image/index.js';

const COMPRESSIONS: Compression[] = ['none', 'gzip', 'zstd', 'lz4'];

export function registerImage(program: Command): void {
  const image = program.command('image').description('the guest image: kernel and initrd');
  image
    .command('build')
    .description('build the guest kernel and initrd from Debian packages (reuses a current build)')
    .option('--out <dir>', 'output directory', DEFAULT_IMAGE_DIR)
    .option('--force', 'rebuild even when the image is up to date', false)
    .option('--cache <dir>', 'download and unpack cache (default /var/cache/kata-ts or $KATA_IMAGE_CACHE)')
    .option('--compression <kind>', `initrd compression: ${COMPRESSIONS.join(', ')} (default lz4)`)
    .option('--no-snapshot', 'start the agent from its bundle instead of a V8 startup snapshot')
    .action(
      async (o: { out: string; force: boolean; cache?: string; compression?: string; snapshot: boolean }) => {
        if (o.compression !== undefined && !COMPRESSIONS.includes(o.compression as Compression)) {
          throw new Error(
            `--compression: expected one of ${COMPRESSIONS.join(', ')}, got ${JSON.stringify(o.compression)}`,
          );
        }
        const img = await buildGuestImage({
          outDir: o.out,
          force: o.force,
          cacheDir: o.cache,
          compression: o.compression as Compression | undefined,
          snapshot: o.snapshot,
          onProgress: (line) => process.stderr.write(`image: ${line}\n`),
        });
        process.stdout.write(
          `${JSON.stringify({ dir: img.dir, kernel: img.kernel, initrd: img.initrd, reused: img.reused })}\n`,
        );
      },
    );
}
