// A throwaway guest for hypervisor e2e tests: the Debian cloud kernel (from apt's cache or `apt-get download`,
// extracted into build/cache/) plus a tiny busybox initrd whose /init loads the virtio modules, prints
// "T: ..." marker lines on the console and behaves as `test.mode=` on the kernel command line says.
import { execFileSync } from 'node:child_process';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import path from 'node:path';

const REPO = path.resolve(import.meta.dirname, '../..');
const CACHE = path.join(REPO, 'build/cache/hypervisor-test-guest');
/** Load order matters: dependencies first. */
const MODULES = [
  'drivers/virtio/virtio.ko',
  'drivers/virtio/virtio_ring.ko',
  'drivers/virtio/virtio_pci_modern_dev.ko',
  'drivers/virtio/virtio_pci_legacy_dev.ko',
  'drivers/virtio/virtio_pci.ko',
  'drivers/block/virtio_blk.ko',
  'drivers/char/virtio_console.ko',
  'fs/fuse/fuse.ko',
  'fs/fuse/virtiofs.ko',
  'drivers/scsi/scsi_common.ko',
  'drivers/scsi/scsi_mod.ko',
  'drivers/scsi/sd_mod.ko',
  'drivers/scsi/virtio_scsi.ko',
];

const INIT = `#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /mnt /tmp
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in ${MODULES.map((m) => path.basename(m, '.ko')).join(' ')}; do
  insmod /lib/modules/$m.ko || echo "T: INSMOD FAILED $m"
done
echo "T: BOOTED"
mode=$(sed -n 's/.*test\\.mode=\\([a-z]*\\).*/\\1/p' /proc/cmdline)
wait_for() { # $1: test command, tries every 0.1 s for up to 60 s
  i=0
  while [ $i -lt 600 ]; do
    if eval "$1"; then return 0; fi
    sleep 0.1; i=$((i+1))
  done
  return 1
}
case "$mode" in
poweroff)
  echo "T: POWEROFF"
  poweroff -f
  ;;
full)
  for p in /sys/class/virtio-ports/*; do echo "T: PORT $(cat $p/name)"; done
  mount -t virtiofs kataShared /mnt && echo "T: VIRTIOFS MOUNTED"
  wait_for '[ -f /mnt/later/marker ]' && echo "T: LATER $(cat /mnt/later/marker)"
  wait_for '[ -b /dev/vda ]' && echo "T: BLK $(dd if=/dev/vda bs=8 count=1 2>/dev/null)"
  wait_for '[ ! -b /dev/vda ]' && echo "T: BLK GONE"
  wait_for '[ -b /dev/sda ]' && echo "T: SCSI $(dd if=/dev/sda bs=8 count=1 2>/dev/null)"
  wait_for '[ ! -b /dev/sda ]' && echo "T: SCSI GONE"
  ;;
esac
echo "T: IDLE"
while :; do sleep 3600; done
`;

function findKernelDeb(): string {
  const archives = '/var/cache/apt/archives';
  const cached = existsSync(archives)
    ? readdirSync(archives).filter((f) => /^linux-image-[0-9.]+-[0-9]+-cloud-amd64_.*\.deb$/.test(f))
    : [];
  if (cached.length > 0) return path.join(archives, cached.sort().at(-1)!);
  const debs = path.join(CACHE, 'debs');
  mkdirSync(debs, { recursive: true });
  const have = readdirSync(debs).filter((f) => f.endsWith('.deb'));
  if (have.length > 0) return path.join(debs, have[0]!);
  const deps = execFileSync('apt-cache', ['depends', 'linux-image-cloud-amd64'], { encoding: 'utf8' });
  const pkg = /Depends: (linux-image-\S+-cloud-amd64)/.exec(deps)?.[1];
  if (!pkg) throw new Error(`cannot find the cloud kernel package in: ${deps}`);
  execFileSync('apt-get', ['download', pkg], { cwd: debs, stdio: 'inherit' });
  return path.join(debs, readdirSync(debs).find((f) => f.endsWith('.deb'))!);
}

export interface TestGuest {
  kernel: string;
  initrd: string;
}

/** Kernel + busybox initrd, built once into build/cache/hypervisor-test-guest/. */
export function ensureTestGuest(): TestGuest {
  const kernel = path.join(CACHE, 'vmlinuz');
  const initrd = path.join(CACHE, 'initrd.cpio');
  const stamp = path.join(CACHE, 'init.sh');
  if (existsSync(kernel) && existsSync(initrd) && existsSync(stamp) && readFileSync(stamp, 'utf8') === INIT) {
    return { kernel, initrd };
  }
  mkdirSync(CACHE, { recursive: true });
  const work = mkdtempSync(path.join(CACHE, 'work-'));
  try {
    const x = path.join(work, 'deb');
    execFileSync('dpkg-deb', ['-x', findKernelDeb(), x]);
    const vmlinuz = readdirSync(path.join(x, 'boot')).find((f) => f.startsWith('vmlinuz-'));
    if (!vmlinuz) throw new Error('kernel package has no /boot/vmlinuz-*');
    const modRoot = path.join(x, 'lib/modules');
    const kver = readdirSync(modRoot)[0]!;

    const root = path.join(work, 'root');
    mkdirSync(path.join(root, 'bin'), { recursive: true });
    mkdirSync(path.join(root, 'lib/modules'), { recursive: true });
    copyFileSync('/bin/busybox', path.join(root, 'bin/busybox'));
    for (const m of MODULES) {
      copyFileSync(path.join(modRoot, kver, 'kernel', m), path.join(root, 'lib/modules', path.basename(m)));
    }
    writeFileSync(path.join(root, 'init'), INIT, { mode: 0o755 });
    execFileSync('sh', ['-c', `cd "${root}" && find . | cpio -o -H newc --quiet > "${initrd}.tmp"`]);
    copyFileSync(path.join(x, 'boot', vmlinuz), kernel);
    execFileSync('mv', [`${initrd}.tmp`, initrd]);
    writeFileSync(stamp, INIT);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  return { kernel, initrd };
}

/** Pids of processes whose command line contains `needle` (to prove nothing is left behind). */
export function processesMentioning(needle: string): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d) || Number(d) === process.pid) continue;
    try {
      const cmd = readFileSync(`/proc/${d}/cmdline`, 'utf8');
      if (cmd.includes(needle)) out.push(Number(d));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** Polls the guest console log until `re` matches; returns the match. */
export async function waitConsole(file: string, re: RegExp, timeoutMs = 120_000): Promise<RegExpMatchArray> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const text = existsSync(file) ? readFileSync(file, 'utf8') : '';
    const m = text.match(re);
    if (m) return m;
    if (Date.now() > deadline)
      throw new Error(`console ${file}: no ${re} within ${timeoutMs} ms; it has:\n${text.slice(-3000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
