// The agent's container stats → containerd's cgroup v1 Metrics (what `ctr task metrics` and the CRI decode from
// the Any the Stats RPC returns, type URL io.containerd.cgroups.v1.Metrics).
import { type MessageInitShape, create, toBinary } from '@bufbuild/protobuf';
import { type Any, AnySchema } from '@bufbuild/protobuf/wkt';
import type { BlkioStatsEntry, StatsContainerResponse } from '../protocols/gen/agent_pb.js';
import {
  type BlkIOEntrySchema,
  MemoryStatSchema,
  type Metrics,
  MetricsSchema,
} from '../protocols/gen/github.com/containerd/cgroups/stats/v1/metrics_pb.js';

export const METRICS_V1_TYPE_URL = 'io.containerd.cgroups.v1.Metrics';

const squash = (s: string) => s.replace(/_/g, '');

/** memory.stat keys ("pgpgin", "total_rss") → MemoryStat fields ("pg_pg_in", "total_rss"). */
const MEMORY_STAT_FIELDS = new Map(
  MemoryStatSchema.fields.filter((f) => f.fieldKind === 'scalar').map((f) => [squash(f.name), f.localName]),
);

function blkio(entries: BlkioStatsEntry[]): MessageInitShape<typeof BlkIOEntrySchema>[] {
  return entries.map((e) => ({ op: e.op, major: e.major, minor: e.minor, value: e.value, device: '' }));
}

export function toMetrics(stats: StatsContainerResponse): Metrics {
  const cg = stats.cgroupStats;
  const m: MessageInitShape<typeof MetricsSchema> = {};
  const cpu = cg?.cpuStats;
  // ctr dereferences cpu.usage and memory.usage unconditionally once cpu/memory are set: always fill both.
  m.cpu = {
    usage: {
      total: cpu?.cpuUsage?.totalUsage ?? 0n,
      kernel: cpu?.cpuUsage?.usageInKernelmode ?? 0n,
      user: cpu?.cpuUsage?.usageInUsermode ?? 0n,
      perCpu: cpu?.cpuUsage?.percpuUsage ?? [],
    },
    throttling: {
      periods: cpu?.throttlingData?.periods ?? 0n,
      throttledPeriods: cpu?.throttlingData?.throttledPeriods ?? 0n,
      throttledTime: cpu?.throttlingData?.throttledTime ?? 0n,
    },
  };
  const mem = cg?.memoryStats;
  const entry = (d?: { usage: bigint; maxUsage: bigint; failcnt: bigint; limit: bigint }) => ({
    usage: d?.usage ?? 0n,
    max: d?.maxUsage ?? 0n,
    failcnt: d?.failcnt ?? 0n,
    limit: d?.limit ?? 0n,
  });
  const memory: Record<string, unknown> = {
    cache: mem?.cache ?? 0n,
    usage: entry(mem?.usage),
    swap: entry(mem?.swapUsage),
    kernel: entry(mem?.kernelUsage),
  };
  for (const [k, v] of Object.entries(mem?.stats ?? {})) {
    const field = MEMORY_STAT_FIELDS.get(squash(k));
    if (field && field !== 'cache') memory[field] = v;
  }
  m.memory = memory as MessageInitShape<typeof MemoryStatSchema>;
  if (cg?.pidsStats) m.pids = { current: cg.pidsStats.current, limit: cg.pidsStats.limit };
  const b = cg?.blkioStats;
  if (b) {
    m.blkio = {
      ioServiceBytesRecursive: blkio(b.ioServiceBytesRecursive),
      ioServicedRecursive: blkio(b.ioServicedRecursive),
      ioQueuedRecursive: blkio(b.ioQueuedRecursive),
      ioServiceTimeRecursive: blkio(b.ioServiceTimeRecursive),
      ioWaitTimeRecursive: blkio(b.ioWaitTimeRecursive),
      ioMergedRecursive: blkio(b.ioMergedRecursive),
      ioTimeRecursive: blkio(b.ioTimeRecursive),
      sectorsRecursive: blkio(b.sectorsRecursive),
    };
  }
  m.hugetlb = Object.entries(cg?.hugetlbStats ?? {}).map(([pagesize, h]) => ({
    pagesize,
    usage: h.usage,
    max: h.maxUsage,
    failcnt: h.failcnt,
  }));
  m.network = stats.networkStats.map((n) => ({
    name: n.name,
    rxBytes: n.rxBytes,
    rxPackets: n.rxPackets,
    rxErrors: n.rxErrors,
    rxDropped: n.rxDropped,
    txBytes: n.txBytes,
    txPackets: n.txPackets,
    txErrors: n.txErrors,
    txDropped: n.txDropped,
  }));
  return create(MetricsSchema, m);
}

export function metricsAny(stats: StatsContainerResponse): Any {
  return create(AnySchema, {
    typeUrl: METRICS_V1_TYPE_URL,
    value: toBinary(MetricsSchema, toMetrics(stats)),
  });
}
