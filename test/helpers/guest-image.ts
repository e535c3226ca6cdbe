// Builds the guest image into build/guest once per run (reused across runs while its inputs are unchanged).
// The builder's lock file keeps parallel callers, in this process or others, from building at the same time.
import path from 'node:path';
import { buildGuestImage } from '../../src/image/index.js';

export const GUEST_DIR = path.resolve(import.meta.dirname, '../../build/guest');

export interface GuestImageFiles {
  dir: string;
  kernel: string;
  initrd: string;
  kernelParams: string;
}

let pending: Promise<GuestImageFiles> | undefined;

export function ensureGuestImage(): Promise<GuestImageFiles> {
  pending ??= buildGuestImage({
    outDir: GUEST_DIR,
    onProgress: (line) => process.stderr.write(`guest-image: ${line}\n`),
  }).then(
    (img) => ({ dir: img.dir, kernel: img.kernel, initrd: img.initrd, kernelParams: img.kernelParams }),
    (e: unknown) => {
      pending = undefined; // let a later caller retry
      throw e;
    },
  );
  return pending;
}
