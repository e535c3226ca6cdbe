// Reading a container's cgroup: where it is (from /proc/<pid>/cgroup), its statistics as the agent
// protocol's CgroupStats (cgroup v2 in the guest; v1 too, for hosts that still run it), OOM kills, pids.
import fs from 'node:fs';
import path from 'node:path';
import type { MessageInitShape } from '@bufbuild/protobuf';
import type { CgroupStatsSchema } from '../protocols/gen/agent_pb.js';

export type CgroupStatsInit = MessageInitShape<typeof CgroupStatsSchema>;

/** A process's cgroup: the unified directory (v2) or one directory per v1 controller. */
export interface CgroupRef {
  v2?: string;
  v1: Record<string, string>;
}

export const CGROUP_ROOT = '/sys/fs/cgroup';
const U64_MAX = 0xffffffffffffffffn;

/** Locates the cgroup(s) of a live process. */
export function cgroupOf(pid: number, root = CGROUP_ROOT): CgroupRef {
  const text = fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8');
  return parseProcCgroup(text, root, fs.existsSync(path.join(root, 'cgroup.controllers')));
}

export function parseProcCgroup(text: string, root: string, unified: boolean): CgroupRef {
  const ref: CgroupRef = { v1: {} };
  for (const line of text.split('\n')) {
    const m = /^(\d+):([^:]*):(.*)$/.exec(line);
    if (!m) continue;
    const [, , controllers, p] = m as unknown as [string, string, string, string];
    if (controllers === '') {
      if (unified) ref.v2 = path.join(root, p);
      continue;
    }
    for (const c of controllers.split(',')) {
      const name = c.startsWith('name=') ? c.slice(5) : c;
      ref.v1[name] = path.join(root, name, p);
    }
  }
  return ref;
}

function read(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

function readU64(file: string): bigint {
  const t = read(file)?.trim();
  if (!t) return 0n;
  if (t === 'max') return U64_MAX;
  try {
    return BigInt(t);
  } catch {
    return 0n;
  }
}

/** "key value" lines (memory.stat, cpu.stat, memory.events) → map. */
export function readKeyed(file: string): Map<string, bigint> {
  const out = new Map<string, bigint>();
  for (const line of (read(file) ?? '').split('\n')) {
    const [k, v] = line.trim().split(/\s+/);
    if (!k || v === undefined) continue;
    try {
      out.set(k, BigInt(v));
    } catch {
      // non-numeric lines (e.g. "max" values) carry nothing we report
    }
  }
  return out;
}

function statsV2(dir: string): CgroupStatsInit {
  const cpu = readKeyed(path.join(dir, 'cpu.stat'));
  const mem = readKeyed(path.join(dir, 'memory.stat'));
  const events = readKeyed(path.join(dir, 'memory.events'));
  const stats: Record<string, bigint> = {};
  for (const [k, v] of mem) stats[k] = v;
  const pidsMax = readU64(path.join(dir, 'pids.max'));
  const serviceBytes: { major: bigint; minor: bigint; op: string; value: bigint }[] = [];
  const serviced: typeof serviceBytes = [];
  for (const line of (read(path.join(dir, 'io.stat')) ?? '').split('\n')) {
    const m = /^(\d+):(\d+)\s+(.*)$/.exec(line.trim());
    if (!m) continue;
    const kv = new Map(m[3]!.split(/\s+/).map((f) => f.split('=') as [string, string]));
    const major = BigInt(m[1]!);
    const minor = BigInt(m[2]!);
    const get = (k: string) => BigInt(kv.get(k) ?? '0');
    serviceBytes.push(
      { major, minor, op: 'Read', value: get('rbytes') },
      { major, minor, op: 'Write', value: get('wbytes') },
    );
    serviced.push(
      { major, minor, op: 'Read', value: get('rios') },
      { major, minor, op: 'Write', value: get('wios') },
    );
  }
  const hugetlb: CgroupStatsInit['hugetlbStats'] = {};
  for (const f of safeReaddir(dir)) {
    const m = /^hugetlb\.([^.]+)\.current$/.exec(f);
    if (!m) continue;
    const hev = readKeyed(path.join(dir, `hugetlb.${m[1]}.events`));
    hugetlb[m[1]!] = {
      usage: readU64(path.join(dir, f)),
      maxUsage: readU64(path.join(dir, `hugetlb.${m[1]}.max`)),
      failcnt: hev.get('max') ?? 0n,
    };
  }
  const usec = (k: string) => (cpu.get(k) ?? 0n) * 1000n;
  return {
    cpuStats: {
      cpuUsage: {
        totalUsage: usec('usage_usec'),
        usageInKernelmode: usec('system_usec'),
        usageInUsermode: usec('user_usec'),
        percpuUsage: [],
      },
      throttlingData: {
        periods: cpu.get('nr_periods') ?? 0n,
        throttledPeriods: cpu.get('nr_throttled') ?? 0n,
        throttledTime: usec('throttled_usec'),
      },
    },
    memoryStats: {
      cache: mem.get('file') ?? 0n,
      usage: {
        usage: readU64(path.join(dir, 'memory.current')),
        maxUsage: readU64(path.join(dir, 'memory.peak')),
        failcnt: events.get('max') ?? 0n,
        limit: readU64(path.join(dir, 'memory.max')),
      },
      swapUsage: {
        usage: readU64(path.join(dir, 'memory.swap.current')),
        maxUsage: readU64(path.join(dir, 'memory.swap.peak')),
        limit: readU64(path.join(dir, 'memory.swap.max')),
      },
      kernelUsage: { usage: mem.get('kernel') ?? (mem.get('kernel_stack') ?? 0n) + (mem.get('slab') ?? 0n) },
      useHierarchy: true,
      stats,
    },
    pidsStats: {
      current: readU64(path.join(dir, 'pids.current')),
      limit: pidsMax === U64_MAX ? 0n : pidsMax,
    },
    blkioStats: { ioServiceBytesRecursive: serviceBytes, ioServicedRecursive: serviced },
    hugetlbStats: hugetlb,
  };
}

function blkioV1(file: string): { major: bigint; minor: bigint; op: string; value: bigint }[] {
  const out: { major: bigint; minor: bigint; op: string; value: bigint }[] = [];
  for (const line of (read(file) ?? '').split('\n')) {
    const m = /^(\d+):(\d+)\s+(\S+)\s+(\d+)$/.exec(line.trim());
    if (m) out.push({ major: BigInt(m[1]!), minor: BigInt(m[2]!), op: m[3]!, value: BigInt(m[4]!) });
  }
  return out;
}

const USER_HZ = 100n;

function statsV1(v1: Record<string, string>): CgroupStatsInit {
  const mem = v1.memory;
  const cpuacct = v1.cpuacct;
  const cpu = v1.cpu;
  const pids = v1.pids;
  const blkio = v1.blkio;
  const memStat = mem ? readKeyed(path.join(mem, 'memory.stat')) : new Map<string, bigint>();
  const stats: Record<string, bigint> = {};
  for (const [k, v] of memStat) stats[k] = v;
  const acctStat = cpuacct ? readKeyed(path.join(cpuacct, 'cpuacct.stat')) : new Map<string, bigint>();
  const cpuStat = cpu ? readKeyed(path.join(cpu, 'cpu.stat')) : new Map<string, bigint>();
  const memData = (prefix: string) =>
    mem
      ? {
          usage: readU64(path.join(mem, `${prefix}.usage_in_bytes`)),
          maxUsage: readU64(path.join(mem, `${prefix}.max_usage_in_bytes`)),
          failcnt: readU64(path.join(mem, `${prefix}.failcnt`)),
          limit: readU64(path.join(mem, `${prefix}.limit_in_bytes`)),
        }
      : {};
  const pidsMax = pids ? readU64(path.join(pids, 'pids.max')) : 0n;
  const hugetlb: CgroupStatsInit['hugetlbStats'] = {};
  const h = v1.hugetlb;
  if (h) {
    for (const f of safeReaddir(h)) {
      const m = /^hugetlb\.([^.]+)\.usage_in_bytes$/.exec(f);
      if (!m) continue;
      hugetlb[m[1]!] = {
        usage: readU64(path.join(h, f)),
        maxUsage: readU64(path.join(h, `hugetlb.${m[1]}.max_usage_in_bytes`)),
        failcnt: readU64(path.join(h, `hugetlb.${m[1]}.failcnt`)),
      };
    }
  }
  const percpu = cpuacct
    ? (read(path.join(cpuacct, 'cpuacct.usage_percpu')) ?? '')
        .trim()
        .split(/\s+/)
        .filter(Boolean)
        .map((v) => BigInt(v))
    : [];
  const ticksToNs = (v: bigint | undefined) => ((v ?? 0n) * 1_000_000_000n) / USER_HZ;
  const blk = (f: string) => (blkio ? blkioV1(path.join(blkio, f)) : []);
  return {
    cpuStats: {
      cpuUsage: {
        totalUsage: cpuacct ? readU64(path.join(cpuacct, 'cpuacct.usage')) : 0n,
        percpuUsage: percpu,
        usageInKernelmode: ticksToNs(acctStat.get('system')),
        usageInUsermode: ticksToNs(acctStat.get('user')),
      },
      throttlingData: {
        periods: cpuStat.get('nr_periods') ?? 0n,
        throttledPeriods: cpuStat.get('nr_throttled') ?? 0n,
        throttledTime: cpuStat.get('throttled_time') ?? 0n,
      },
    },
    memoryStats: {
      cache: memStat.get('cache') ?? 0n,
      usage: memData('memory'),
      swapUsage: memData('memory.memsw'),
      kernelUsage: memData('memory.kmem'),
      useHierarchy: mem ? readU64(path.join(mem, 'memory.use_hierarchy')) === 1n : false,
      stats,
    },
    pidsStats: {
      current: pids ? readU64(path.join(pids, 'pids.current')) : 0n,
      limit: pidsMax === U64_MAX ? 0n : pidsMax,
    },
    blkioStats: {
      ioServiceBytesRecursive: blk('blkio.throttle.io_service_bytes'),
      ioServicedRecursive: blk('blkio.throttle.io_serviced'),
    },
    hugetlbStats: hugetlb,
  };
}

function safeReaddir(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}

/** The cgroup's statistics in the agent protocol's shape. */
export function readStats(cg: CgroupRef): CgroupStatsInit {
  return cg.v2 ? statsV2(cg.v2) : statsV1(cg.v1);
}

/** How many processes the kernel OOM-killed in this cgroup so far. */
export function oomKillCount(cg: CgroupRef): number {
  if (cg.v2) return Number(readKeyed(path.join(cg.v2, 'memory.events')).get('oom_kill') ?? 0n);
  const mem = cg.v1.memory;
  if (!mem) return 0;
  return Number(readKeyed(path.join(mem, 'memory.oom_control')).get('oom_kill') ?? 0n);
}

/** The file whose changes signal OOM events (inotify works on it in cgroup v2). */
export function oomEventsFile(cg: CgroupRef): string | undefined {
  if (cg.v2) return path.join(cg.v2, 'memory.events');
  return cg.v1.memory ? path.join(cg.v1.memory, 'memory.oom_control') : undefined;
}

/** Pids of every process in the cgroup. */
export function cgroupPids(cg: CgroupRef): number[] {
  const dir = cg.v2 ?? cg.v1.pids ?? cg.v1.memory ?? Object.values(cg.v1)[0];
  if (!dir) return [];
  return (read(path.join(dir, 'cgroup.procs')) ?? '').split('\n').filter(Boolean).map(Number);
}

/** Every directory of the cgroup (for checks that it was removed). */
export function cgroupDirs(cg: CgroupRef): string[] {
  return [...(cg.v2 ? [cg.v2] : []), ...Object.values(cg.v1)];
}
