// What the network setup made, written down BEFORE each thing is made, so that `shim delete` after a crash
// can remove it from the record alone (cleanupNetworkLeftovers).
import fs from 'node:fs/promises';
import { type NetnsCommands, netnsCommands } from './iproute.js';
import { type MacvtapRecord, removeMacvtap } from './macvtap.js';
import { deleteFilterArgs, deleteIngressArgs, removeQuietly } from './tcfilter.js';

export interface TapRecord {
  /** the CNI's interface the tap is paired with */
  peer: string;
  tap: string;
  /** true when kata-ts adds (or was about to add) the ingress qdisc on `peer`; false when it was there */
  peerIngressOurs: boolean;
  /** set under the macvtap model: `tap` is a macvtap link on `peer`, no tc filters */
  macvtap?: MacvtapRecord;
}

export interface NetworkRecord {
  version: 1;
  netnsPath: string;
  taps: TapRecord[];
}

export function emptyRecord(netnsPath: string): NetworkRecord {
  return { version: 1, netnsPath, taps: [] };
}

/** Removes what one tap entry stands for; returns the errors (each names the device and step). */
export async function removeTapArtifacts(cmds: NetnsCommands, t: TapRecord): Promise<Error[]> {
  const errors: Error[] = [];
  const step = async (what: string, run: () => Promise<unknown>) => {
    const e = await removeQuietly(run);
    if (e) errors.push(new Error(`network teardown (${what}): ${e.message}`, { cause: e }));
  };
  if (t.macvtap) {
    await removeMacvtap(cmds, { link: t.tap, lower: t.peer, ...t.macvtap }, step);
    return errors;
  }
  await step(`filter on ${t.peer}`, () => cmds.tc(deleteFilterArgs(t.peer)));
  if (t.peerIngressOurs) await step(`ingress qdisc on ${t.peer}`, () => cmds.tc(deleteIngressArgs(t.peer)));
  // The tap's own qdisc and filter go with the device.
  await step(`tap ${t.tap}`, () => cmds.ip(['link', 'del', 'dev', t.tap]));
  return errors;
}

/**
 * Removes every tap, filter and qdisc the record names. A netns that is gone (CNI deleted it) leaves nothing
 * to do. Throws one error listing every step that failed, after trying them all.
 */
export async function cleanupNetworkLeftovers(
  record: NetworkRecord,
  cmds: NetnsCommands = netnsCommands(record.netnsPath),
): Promise<void> {
  try {
    await fs.access(record.netnsPath);
  } catch {
    return;
  }
  const errors: Error[] = [];
  for (const t of record.taps) errors.push(...(await removeTapArtifacts(cmds, t)));
  if (errors.length)
    throw new Error(
      `cleaning network leftovers in ${record.netnsPath}: ${errors.map((e) => e.message).join('; ')}`,
    );
}
