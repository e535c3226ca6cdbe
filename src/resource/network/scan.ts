// Scans a netns for the interfaces that become the VM's NICs (Kata's network "scan": one endpoint per
// traffic-carrying interface, veths first), with their addresses, routes and static neighbours.
import fs from 'node:fs/promises';
import { type NetnsCommands, isNoSuchDevice, wrap } from './iproute.js';
import { classifyLink, parseAddrs, parseLinks, parseNeighbours, parseRoutes } from './parse.js';
import { type NetnsScan, NetworkError, type ScannedInterface } from './types.js';

/** Our own taps (created by the tcfilter model): never scanned as endpoints, so a rescan does not nest them. */
export const KATA_TAP_SUFFIX = '_kata';

const ORDER: Record<string, number> = { veth: 0, macvlan: 1, ipvlan: 2, tuntap: 3 };

export async function scanNetns(cmds: NetnsCommands): Promise<NetnsScan> {
  const netnsPath = cmds.netnsPath;
  try {
    await fs.access(netnsPath);
  } catch (e) {
    throw new NetworkError('scan', undefined, `netns ${netnsPath} does not exist`, { cause: e });
  }
  let links: ReturnType<typeof parseLinks>;
  try {
    links = parseLinks(await cmds.ip(['-j', '-d', 'link', 'show']));
  } catch (e) {
    throw wrap('scan', undefined, e);
  }
  const skipped: NetnsScan['skipped'] = [];
  const interfaces: ScannedInterface[] = [];
  for (const l of links) {
    if (l.name.endsWith(KATA_TAP_SUFFIX)) {
      skipped.push({ name: l.name, why: 'a tap kata-ts made' });
      continue;
    }
    const c = classifyLink(l);
    if ('skip' in c) {
      skipped.push({ name: l.name, why: c.skip });
      continue;
    }
    try {
      const addrs = parseAddrs(await cmds.ip(['-j', 'addr', 'show', 'dev', l.name])).get(l.name) ?? [];
      const routes = [
        ...parseRoutes(await cmds.ip(['-j', '-4', 'route', 'show', 'table', 'main', 'dev', l.name]), 4),
        ...parseRoutes(await cmds.ip(['-j', '-6', 'route', 'show', 'table', 'main', 'dev', l.name]), 6),
      ].map((r) => ({ ...r, device: r.device || l.name }));
      const neighbours = [
        ...parseNeighbours(await cmds.ip(['-j', 'neigh', 'show', 'nud', 'permanent', 'dev', l.name])),
        ...parseNeighbours(await cmds.ip(['-j', 'neigh', 'show', 'nud', 'noarp', 'dev', l.name])),
      ].map((n) => ({ ...n, device: n.device || l.name }));
      interfaces.push({
        name: l.name,
        index: l.index,
        kind: c.kind,
        mac: l.mac,
        mtu: l.mtu,
        addresses: addrs,
        routes,
        neighbours,
      });
    } catch (e) {
      if (isNoSuchDevice(e))
        throw new NetworkError('scan', l.name, 'the interface vanished during the scan', { cause: e });
      throw wrap('scan', l.name, e);
    }
  }
  interfaces.sort((a, b) => (ORDER[a.kind] ?? 9) - (ORDER[b.kind] ?? 9) || a.index - b.index);
  return { netnsPath, interfaces, skipped };
}
