// Host memory of running sandboxes, for the start-up and density benchmarks: PSS (shared pages split between
// the processes that map them, so a template's or node's pages shared by N sandboxes count 1/N each) of the
// shim, QEMU and virtiofsd of one sandbox, and the host's used memory from /proc/meminfo.
import fs from 'node:fs';

/** Processes whose command line matches `re` and contains `needle` (a sandbox id). */
export function pidsMatching(re: RegExp, needle: string): number[] {
  const out: number[] = [];
  for (const p of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      const c = fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').replace(/\0/g, ' ');
      if (re.test(c) && c.includes(needle)) out.push(Number(p));
    } catch {
      // gone
    }
  }
  return out;
}

/** A field (kB) of /proc/<pid>/smaps_rollup (Pss, Rss, Pss_Anon, ...), 0 when the process is gone. */
export function rollupKiB(pid: number, field: string): number {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+)`, 'm').exec(
      fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'),
    );
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

export interface SandboxMemory {
  /** KiB of PSS */
  shim: number;
  qemu: number;
  virtiofsd: number;
  /** KiB of RSS of QEMU, for comparison with the PSS */
  qemuRss: number;
}

export function sandboxMemory(id: string): SandboxMemory {
  const sum = (pids: number[], field: string) => pids.reduce((a, p) => a + rollupKiB(p, field), 0);
  const qemu = pidsMatching(/qemu-system/, id);
  return {
    shim: sum(pidsMatching(/containerd-shim-kata-v2/, `-id ${id}`), 'Pss'),
    qemu: sum(qemu, 'Pss'),
    virtiofsd: sum(pidsMatching(/virtiofsd/, id), 'Pss'),
    qemuRss: sum(qemu, 'Rss'),
  };
}

/**
 * Host memory in use (KiB): MemTotal - MemAvailable, plus the file pages mapped into processes that are not
 * shmem. MemAvailable counts mapped file pages as reclaimable, but a clone's guest RAM is such a page when its
 * RAM file lives on a disk-backed /run (as on these machines), and it is not reclaimable while the VM runs; on a
 * tmpfs /run the RAM is shmem and MemAvailable already leaves it out.
 */
export function hostUsedKiB(): number {
  const t = fs.readFileSync('/proc/meminfo', 'utf8');
  const f = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(t)?.[1] ?? 0);
  return f('MemTotal') - f('MemAvailable') + Math.max(0, f('Mapped') - f('Shmem'));
}

export const mib = (kib: number) => (kib / 1024).toFixed(1);

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? (s[(s.length - 1) >> 1]! + s[s.length >> 1]!) / 2 : Number.NaN;
}
