// Interface counters for StatsContainer (containers share the guest's network namespace).
import fs from 'node:fs';
import type { MessageInitShape } from '@bufbuild/protobuf';
import type { NetworkStatsSchema } from '../protocols/gen/agent_pb.js';

/** Parses /proc/net/dev; the loopback interface is left out. */
export function parseNetDev(text: string): MessageInitShape<typeof NetworkStatsSchema>[] {
  const out: MessageInitShape<typeof NetworkStatsSchema>[] = [];
  for (const line of text.split('\n').slice(2)) {
    const m = /^\s*([^:\s]+):\s*(.*)$/.exec(line);
    if (!m || m[1] === 'lo') continue;
    const f = m[2]!
      .trim()
      .split(/\s+/)
      .map((v) => BigInt(v));
    if (f.length < 16) continue;
    out.push({
      name: m[1]!,
      rxBytes: f[0],
      rxPackets: f[1],
      rxErrors: f[2],
      rxDropped: f[3],
      txBytes: f[8],
      txPackets: f[9],
      txErrors: f[10],
      txDropped: f[11],
    });
  }
  return out;
}

export function readNetworkStats(): MessageInitShape<typeof NetworkStatsSchema>[] {
  try {
    return parseNetDev(fs.readFileSync('/proc/net/dev', 'utf8'));
  } catch {
    return [];
  }
}
