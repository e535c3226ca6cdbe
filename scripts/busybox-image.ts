// Writes the local busybox OCI image tar (no registry here) for `ctr images import`: busybox-image.mjs OUT [NAME]
import { BUSYBOX_IMAGE, buildBusyboxImageTar } from '../test/helpers/busybox-image.js';

const [out, name] = process.argv.slice(2);
if (!out) {
  process.stderr.write('usage: busybox-image OUT.tar [IMAGE-NAME]\n');
  process.exit(2);
}
process.stdout.write(`${buildBusyboxImageTar(out, name ?? BUSYBOX_IMAGE)}\n`);
