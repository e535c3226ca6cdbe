import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { cgroupPids, oomKillCount, parseProcCgroup, readStats } from '../../src/agent/cgroups.js';
import { parseNetDev } from '../../src/agent/netstats.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kt-cgroups-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function tree(dir: string, files: Record<string, string>): string {
  for (const [f, c] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, f)), { recursive: true });
    fs.writeFileSync(path.join(dir, f), c);
  }
  return dir;
}

describe('cgroup location', () => {
  it('parses /proc/<pid>/cgroup for v2 and v1 hosts', () => {
    expect(parseProcCgroup('0::/kata/c1\n', '/sys/fs/cgroup', true)).toEqual({
      v2: '/sys/fs/cgroup/kata/c1',
      v1: {},
    });
    const v1 = parseProcCgroup('4:memory:/k/c\n2:cpu,cpuacct:/k/c\n1:name=systemd:/k/c\n0::/\n', '/r', false);
    expect(v1.v2).toBeUndefined();
    expect(v1.v1).toEqual({
      memory: '/r/memory/k/c',
      cpu: '/r/cpu/k/c',
      cpuacct: '/r/cpuacct/k/c',
      systemd: '/r/systemd/k/c',
    });
  });
});

describe('cgroup v2 statistics', () => {
  const dir = tree(path.join(tmp, 'v2'), {
    'cpu.stat':
      'usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 10\nnr_throttled 2\nthrottled_usec 300\n',
    'memory.current': '4096000\n',
    'memory.max': 'max\n',
    'memory.peak': '5000000\n',
    'memory.stat': 'anon 1000\nfile 2000\nkernel 300\n',
    'memory.events': 'low 0\nhigh 0\nmax 4\noom 1\noom_kill 2\n',
    'memory.swap.current': '0\n',
    'memory.swap.max': '0\n',
    'pids.current': '3\n',
    'pids.max': '100\n',
    'io.stat': '8:0 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=0 dios=0\n',
    'hugetlb.2MB.current': '0\n',
    'hugetlb.2MB.max': 'max\n',
    'cgroup.procs': '12\n13\n',
  });

  it('fills CgroupStats from memory.*, cpu.stat, pids.*, io.stat', () => {
    const s = readStats({ v2: dir, v1: {} });
    expect(s.cpuStats).toEqual({
      cpuUsage: {
        totalUsage: 1_500_000n,
        usageInKernelmode: 500_000n,
        usageInUsermode: 1_000_000n,
        percpuUsage: [],
      },
      throttlingData: { periods: 10n, throttledPeriods: 2n, throttledTime: 300_000n },
    });
    expect(s.memoryStats?.usage).toEqual({
      usage: 4096000n,
      maxUsage: 5000000n,
      failcnt: 4n,
      limit: 0xffffffffffffffffn,
    });
    expect(s.memoryStats?.cache).toBe(2000n);
    expect(s.memoryStats?.stats).toEqual({ anon: 1000n, file: 2000n, kernel: 300n });
    expect(s.pidsStats).toEqual({ current: 3n, limit: 100n });
    expect(s.blkioStats?.ioServiceBytesRecursive).toEqual([
      { major: 8n, minor: 0n, op: 'Read', value: 100n },
      { major: 8n, minor: 0n, op: 'Write', value: 200n },
    ]);
    expect(s.hugetlbStats?.['2MB']?.maxUsage).toBe(0xffffffffffffffffn);
    expect(oomKillCount({ v2: dir, v1: {} })).toBe(2);
    expect(cgroupPids({ v2: dir, v1: {} })).toEqual([12, 13]);
  });

  it('reads a vanished cgroup as zeros instead of failing', () => {
    const s = readStats({ v2: path.join(tmp, 'gone'), v1: {} });
    expect(s.memoryStats?.usage?.usage).toBe(0n);
    expect(oomKillCount({ v2: path.join(tmp, 'gone'), v1: {} })).toBe(0);
  });
});

describe('cgroup v1 statistics', () => {
  const root = path.join(tmp, 'v1');
  tree(root, {
    'memory/c/memory.usage_in_bytes': '1000\n',
    'memory/c/memory.max_usage_in_bytes': '2000\n',
    'memory/c/memory.limit_in_bytes': '67108864\n',
    'memory/c/memory.failcnt': '1\n',
    'memory/c/memory.stat': 'cache 10\nrss 20\n',
    'memory/c/memory.use_hierarchy': '1\n',
    'memory/c/memory.oom_control': 'oom_kill_disable 0\nunder_oom 0\noom_kill 5\n',
    'cpuacct/c/cpuacct.usage': '123456\n',
    'cpuacct/c/cpuacct.usage_percpu': '100000 23456 \n',
    'cpuacct/c/cpuacct.stat': 'user 3\nsystem 1\n',
    'cpu/c/cpu.stat': 'nr_periods 4\nnr_throttled 1\nthrottled_time 99\n',
    'pids/c/pids.current': '2\n',
    'pids/c/pids.max': 'max\n',
  });
  const ref = parseProcCgroup('4:memory:/c\n3:cpuacct:/c\n2:cpu:/c\n1:pids:/c\n', root, false);

  it('fills CgroupStats from the v1 controllers', () => {
    const s = readStats(ref);
    expect(s.cpuStats?.cpuUsage).toEqual({
      totalUsage: 123456n,
      percpuUsage: [100000n, 23456n],
      usageInKernelmode: 10_000_000n,
      usageInUsermode: 30_000_000n,
    });
    expect(s.cpuStats?.throttlingData).toEqual({ periods: 4n, throttledPeriods: 1n, throttledTime: 99n });
    expect(s.memoryStats?.usage).toEqual({ usage: 1000n, maxUsage: 2000n, failcnt: 1n, limit: 67108864n });
    expect(s.memoryStats?.cache).toBe(10n);
    expect(s.memoryStats?.useHierarchy).toBe(true);
    expect(s.pidsStats).toEqual({ current: 2n, limit: 0n });
    expect(oomKillCount(ref)).toBe(5);
  });
});

describe('network statistics', () => {
  it('parses /proc/net/dev without loopback', () => {
    const text = `Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0
  eth0:    5000      40    1    2    0     0          0         0     3000      30    3    4    0     0       0          0
`;
    expect(parseNetDev(text)).toEqual([
      {
        name: 'eth0',
        rxBytes: 5000n,
        rxPackets: 40n,
        rxErrors: 1n,
        rxDropped: 2n,
        txBytes: 3000n,
        txPackets: 30n,
        txErrors: 3n,
        txDropped: 4n,
      },
    ]);
  });
});
