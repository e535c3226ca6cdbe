// Parsers for iproute2's JSON output (`ip -j -d link|addr|route|neigh`, `tc -j qdisc|filter`). Pure: tests feed
// them fixtures. Unknown fields are ignored; a missing field that matters is an error naming the command.
import { ROUTE_SCOPES } from '../../contract/index.js';
import { type LinkKind, type NetAddress, type NetNeighbour, type NetRoute, NetworkError } from './types.js';

export interface IpLink {
  index: number;
  name: string;
  mac: string;
  mtu: number;
  flags: string[];
  linkType: string;
  /** linkinfo.info_kind ("veth", "macvlan", "tun", "bridge", ...) or "" for a physical/loopback device */
  infoKind: string;
  /** for tun/tap: "tap" or "tun" */
  tunType?: string;
}

type Json = Record<string, unknown>;

function parseArray(text: string, what: string): Json[] {
  let v: unknown;
  try {
    v = JSON.parse(text.trim() === '' ? '[]' : text);
  } catch (e) {
    throw new NetworkError('parse', undefined, `${what}: output is not JSON: ${(e as Error).message}`);
  }
  if (!Array.isArray(v)) throw new NetworkError('parse', undefined, `${what}: expected a JSON array`);
  return v as Json[];
}

const str = (v: unknown): string => (typeof v === 'string' ? v : '');
const num = (v: unknown): number => (typeof v === 'number' ? v : 0);

export function parseLinks(text: string): IpLink[] {
  return parseArray(text, 'ip -j -d link show').map((l) => {
    const info = (l.linkinfo ?? {}) as Json;
    const data = (info.info_data ?? {}) as Json;
    const link: IpLink = {
      index: num(l.ifindex),
      name: str(l.ifname),
      mac: str(l.address).toLowerCase(),
      mtu: num(l.mtu),
      flags: Array.isArray(l.flags) ? (l.flags as unknown[]).map(str) : [],
      linkType: str(l.link_type),
      infoKind: str(info.info_kind),
    };
    if (link.infoKind === 'tun') link.tunType = str(data.type);
    if (!link.name || !link.index) throw new NetworkError('parse', undefined, 'a link without name or index');
    return link;
  });
}

/** The endpoint kind of a link, or why it is not one. */
export function classifyLink(l: IpLink): { kind: LinkKind } | { skip: string } {
  if (l.linkType === 'loopback' || l.name === 'lo') return { skip: 'loopback' };
  switch (l.infoKind) {
    case 'veth':
    case 'macvlan':
    case 'ipvlan':
      return { kind: l.infoKind };
    case 'tun':
      // A tap made by a CNI carries frames; a tun (L3) cannot back a virtio-net NIC.
      return l.tunType === 'tap' ? { kind: 'tuntap' } : { skip: 'tun device (L3, no ethernet frames)' };
    case '':
      return { skip: 'physical or unknown device (needs a VFIO endpoint)' };
    default:
      return { skip: `link kind ${l.infoKind} is not an endpoint` };
  }
}

/** `ip -j addr show`: global and site addresses per interface name; link-local (fe80::/10) ones are the guest's own. */
export function parseAddrs(text: string): Map<string, NetAddress[]> {
  const out = new Map<string, NetAddress[]>();
  for (const l of parseArray(text, 'ip -j addr show')) {
    const list: NetAddress[] = [];
    for (const a of (l.addr_info ?? []) as Json[]) {
      const fam = str(a.family);
      if (fam !== 'inet' && fam !== 'inet6') continue;
      if (str(a.scope) === 'link' || str(a.scope) === 'host') continue;
      list.push({ family: fam === 'inet' ? 4 : 6, address: str(a.local), prefixLength: num(a.prefixlen) });
    }
    out.set(str(l.ifname), list);
  }
  return out;
}

/** `ip -j -4|-6 route show table main`. Multicast and IPv6 link-local prefixes are left to the guest kernel. */
export function parseRoutes(text: string, family: 4 | 6): NetRoute[] {
  const out: NetRoute[] = [];
  for (const r of parseArray(text, `ip -j -${family} route show`)) {
    const dst = str(r.dst);
    if (!dst) continue;
    if (str(r.type) && str(r.type) !== 'unicast') continue;
    if (family === 6 && (dst.startsWith('fe80:') || dst.startsWith('ff00:'))) continue;
    const metrics = Array.isArray(r.metrics) ? (r.metrics as Json[]) : [];
    const mtu = metrics.map((m) => num(m.mtu)).find((m) => m > 0) ?? 0;
    out.push({
      family,
      dest: dst === 'default' ? '' : dst.includes('/') ? dst : `${dst}/${family === 4 ? 32 : 128}`,
      gateway: str(r.gateway),
      device: str(r.dev),
      source: str(r.prefsrc),
      scope: typeof r.scope === 'string' ? (ROUTE_SCOPES[r.scope] ?? 0) : num(r.scope),
      mtu,
    });
  }
  return out;
}

export const NUD_NOARP = 0x40;
export const NUD_PERMANENT = 0x80;

function isMulticast(address: string, lladdr: string): boolean {
  const first = Number(address.split('.')[0]);
  return (
    address.toLowerCase().startsWith('ff') ||
    (!address.includes(':') && first >= 224 && first <= 239) ||
    lladdr.startsWith('33:33:') ||
    lladdr.startsWith('01:00:5e:')
  );
}

/** `ip -j neigh show nud permanent|noarp`: the static entries a CNI wrote (multicast mappings are skipped). */
export function parseNeighbours(text: string): NetNeighbour[] {
  const out: NetNeighbour[] = [];
  for (const n of parseArray(text, 'ip -j neigh show')) {
    const states = Array.isArray(n.state) ? (n.state as unknown[]).map(str) : [];
    const state = states.includes('PERMANENT') ? NUD_PERMANENT : states.includes('NOARP') ? NUD_NOARP : 0;
    const address = str(n.dst);
    const lladdr = str(n.lladdr).toLowerCase();
    if (!state || !lladdr || isMulticast(address, lladdr)) continue;
    out.push({ family: address.includes(':') ? 6 : 4, address, lladdr, device: str(n.dev), state });
  }
  return out;
}

export interface TcQdisc {
  kind: string;
  handle: string;
  parent?: string;
  root: boolean;
}

/** `tc -j qdisc show dev X`. */
export function parseQdiscs(text: string): TcQdisc[] {
  return parseArray(text, 'tc -j qdisc show').map((q) => ({
    kind: str(q.kind),
    handle: str(q.handle),
    parent: str(q.parent) || undefined,
    root: q.root === true,
  }));
}

/** `tc -j filter show dev X ingress`: how many filters (any with options, i.e. real entries). */
export function countFilters(text: string): number {
  return parseArray(text, 'tc -j filter show').filter((f) => f.options !== undefined).length;
}
