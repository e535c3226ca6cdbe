import type { MessageInitShape } from '@bufbuild/protobuf';
import type { Logger } from '../common/log.js';
// Guest networking through busybox `ip` (and `arp` for static neighbours, which busybox ip lacks):
// the host tells the agent which addresses, routes and neighbours the guest's interfaces get.
import { ROUTE_SCOPES } from '../contract/index.js';
import type {
  ARPNeighbor,
  Interface,
  InterfaceSchema,
  Route,
  RouteSchema,
} from '../protocols/gen/types_pb.js';
import { IPFamily } from '../protocols/gen/types_pb.js';
import { invalidArgument, notFound } from './errors.js';
import { runTracked } from './reaper.js';

export interface NetworkOptions {
  /** argv prefix for `ip` (default: busybox ip). */
  ip?: string[];
  /** argv prefix for `arp`. */
  arp?: string[];
  /** Loads the NIC driver when a NIC has appeared (hot-plugged after boot); called before links are listed. */
  nicDriver?: () => Promise<unknown>;
  log: Logger;
}

export interface LinkInfo {
  index: number;
  name: string;
  flags: string[];
  mtu: number;
  mac: string;
  type: string;
}

export interface AddrInfo {
  name: string;
  family: IPFamily;
  address: string;
  prefix: string;
}

const IFF: Record<string, number> = {
  UP: 0x1,
  BROADCAST: 0x2,
  DEBUG: 0x4,
  LOOPBACK: 0x8,
  POINTOPOINT: 0x10,
  NOTRAILERS: 0x20,
  RUNNING: 0x40,
  NOARP: 0x80,
  PROMISC: 0x100,
  ALLMULTI: 0x200,
  MULTICAST: 0x1000,
  LOWER_UP: 0x10000,
};

/** Parses `ip -o link show`. */
export function parseLinks(text: string): LinkInfo[] {
  const out: LinkInfo[] = [];
  for (const line of text.split('\n')) {
    const m = /^(\d+):\s+([^:@\s]+)(?:@[^:\s]+)?:\s+<([^>]*)>(.*)$/.exec(line.trim());
    if (!m) continue;
    const rest = m[4]!;
    const mtu = /\bmtu\s+(\d+)/.exec(rest);
    const link = /link\/(\S+)(?:\s+([0-9a-fA-F:]+))?/.exec(rest);
    out.push({
      index: Number(m[1]),
      name: m[2]!,
      flags: m[3]!.split(',').filter(Boolean),
      mtu: mtu ? Number(mtu[1]) : 0,
      type: link?.[1] ?? '',
      mac: link?.[2] ?? '',
    });
  }
  return out;
}

/** Parses `ip -o addr show`. */
export function parseAddrs(text: string): AddrInfo[] {
  const out: AddrInfo[] = [];
  for (const line of text.split('\n')) {
    const m = /^\d+:\s+([^:@\s]+)\s+(inet6?)\s+([0-9a-fA-F.:]+)\/(\d+)/.exec(line.trim());
    if (!m) continue;
    out.push({
      name: m[1]!,
      family: m[2] === 'inet6' ? IPFamily.v6 : IPFamily.v4,
      address: m[3]!,
      prefix: m[4]!,
    });
  }
  return out;
}

const SCOPE_NAMES: Record<number, string> = { 0: 'global', 200: 'site', 253: 'link', 254: 'host' };

/** Parses `ip route show` / `ip -6 route show`. */
export function parseRoutes(text: string, family: IPFamily): MessageInitShape<typeof RouteSchema>[] {
  const out: MessageInitShape<typeof RouteSchema>[] = [];
  for (const line of text.split('\n')) {
    const t = line.trim().split(/\s+/).filter(Boolean);
    if (t.length === 0) continue;
    let i = 0;
    // route types other than unicast (local, broadcast, unreachable...) are not the host's business
    if (
      [
        'local',
        'broadcast',
        'anycast',
        'multicast',
        'unreachable',
        'prohibit',
        'blackhole',
        'throw',
      ].includes(t[0]!)
    ) {
      continue;
    }
    const dest = t[i++] === 'default' ? '' : t[i - 1]!;
    const r: MessageInitShape<typeof RouteSchema> = {
      dest,
      family,
      gateway: '',
      device: '',
      source: '',
      scope: 0,
    };
    while (i < t.length) {
      const k = t[i++]!;
      const v = t[i] ?? '';
      switch (k) {
        case 'via':
          r.gateway = v;
          break;
        case 'dev':
          r.device = v;
          break;
        case 'src':
          r.source = v;
          break;
        case 'scope':
          r.scope = ROUTE_SCOPES[v] ?? Number(v);
          break;
        case 'mtu':
          r.mtu = Number(v);
          break;
        case 'proto':
        case 'metric':
        case 'table':
        case 'pref':
        case 'expires':
        case 'realm':
        case 'advmss':
        case 'hoplimit':
          break;
        default:
          continue; // a flag without a value (onlink, linkdown...)
      }
      i++;
    }
    out.push(r);
  }
  return out;
}

const MAC_RE = /^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/;
const NAME_RE = /^[A-Za-z0-9_.:-]{1,15}$/;

function checkIp(a: string, what: string): string {
  if (!/^[0-9a-fA-F.:]+$/.test(a)) throw invalidArgument(`${what} ${JSON.stringify(a)} is not an IP address`);
  return a;
}

export class Network {
  private readonly ip: string[];
  private readonly arp: string[];

  constructor(private readonly opts: NetworkOptions) {
    this.ip = opts.ip ?? ['busybox', 'ip'];
    this.arp = opts.arp ?? ['busybox', 'arp'];
  }

  private async run(argv: string[], args: string[]): Promise<string> {
    const r = await runTracked(argv[0]!, [...argv.slice(1), ...args], { timeoutMs: 30_000 });
    if (r.code !== 0) {
      throw new Error(
        `${argv[argv.length - 1]} ${args.join(' ')} failed: ${(r.stderr || r.stdout).trim() || `exit ${r.code}`}`,
      );
    }
    return r.stdout;
  }

  async links(): Promise<LinkInfo[]> {
    await this.opts.nicDriver?.();
    return parseLinks(await this.run(this.ip, ['-o', 'link', 'show']));
  }

  async listInterfaces(): Promise<MessageInitShape<typeof InterfaceSchema>[]> {
    const links = await this.links();
    const addrs = parseAddrs(await this.run(this.ip, ['-o', 'addr', 'show']));
    return links.map((l) => ({
      device: l.name,
      name: l.name,
      mtu: BigInt(l.mtu),
      hwAddr: l.mac,
      type: l.type,
      rawFlags: l.flags.reduce((acc, f) => acc | (IFF[f] ?? 0), 0),
      IPAddresses: addrs
        .filter((a) => a.name === l.name)
        .map((a) => ({ family: a.family, address: a.address, mask: a.prefix })),
    }));
  }

  /** Finds the link by MAC, renames it, sets MTU and addresses, and brings it up. */
  async updateInterface(iface: Interface): Promise<Interface> {
    if (!iface.hwAddr || !MAC_RE.test(iface.hwAddr)) {
      throw invalidArgument(
        `update interface ${iface.name}: bad or missing hardware address ${JSON.stringify(iface.hwAddr)}`,
      );
    }
    if (!NAME_RE.test(iface.name))
      throw invalidArgument(`update interface: bad name ${JSON.stringify(iface.name)}`);
    for (const a of iface.IPAddresses) {
      checkIp(a.address, 'interface address');
      if (a.mask && !/^\d{1,3}$/.test(a.mask))
        throw invalidArgument(`address ${a.address}: bad prefix ${a.mask}`);
    }
    const link = (await this.links()).find((l) => l.mac.toLowerCase() === iface.hwAddr.toLowerCase());
    if (!link) throw notFound(`no interface with hardware address ${iface.hwAddr}`);
    let name = link.name;
    await this.run(this.ip, ['link', 'set', 'dev', name, 'down']);
    if (name !== iface.name) {
      await this.run(this.ip, ['link', 'set', 'dev', name, 'name', iface.name]);
      name = iface.name;
    }
    if (iface.mtu > 0n) await this.run(this.ip, ['link', 'set', 'dev', name, 'mtu', String(iface.mtu)]);
    await this.run(this.ip, ['addr', 'flush', 'dev', name]);
    for (const a of iface.IPAddresses) {
      const fam = a.family === IPFamily.v6 ? ['-6'] : [];
      const prefix = a.mask || (a.family === IPFamily.v6 ? '128' : '32');
      await this.run(this.ip, [...fam, 'addr', 'add', `${a.address}/${prefix}`, 'dev', name]);
    }
    await this.run(this.ip, ['link', 'set', 'dev', name, 'up']);
    this.opts.log.info({ name, mac: iface.hwAddr }, 'interface updated');
    return iface;
  }

  async listRoutes(): Promise<MessageInitShape<typeof RouteSchema>[]> {
    const v4 = parseRoutes(await this.run(this.ip, ['route', 'show']), IPFamily.v4);
    let v6: MessageInitShape<typeof RouteSchema>[] = [];
    try {
      v6 = parseRoutes(await this.run(this.ip, ['-6', 'route', 'show']), IPFamily.v6);
    } catch {
      // no IPv6 in this guest
    }
    return [...v4, ...v6];
  }

  /**
   * Makes the routing table match `routes`: routes that are not asked for go (link-scope routes the
   * kernel derives from addresses stay), then the requested ones are replaced in, link routes first
   * so that gateways are reachable.
   */
  async updateRoutes(routes: readonly Route[]): Promise<MessageInitShape<typeof RouteSchema>[]> {
    for (const r of routes) {
      if (r.dest && !/^[0-9a-fA-F.:]+(\/\d{1,3})?$/.test(r.dest)) {
        throw invalidArgument(`route destination ${JSON.stringify(r.dest)} is not an address or prefix`);
      }
      if (r.gateway) checkIp(r.gateway, 'route gateway');
      if (r.source) checkIp(r.source, 'route source');
      if (r.device && !NAME_RE.test(r.device))
        throw invalidArgument(`route device ${JSON.stringify(r.device)}`);
    }
    const key = (r: { dest?: string; family?: IPFamily }) => `${r.family ?? 0}|${r.dest || 'default'}`;
    const wanted = new Set(routes.map(key));
    for (const cur of await this.listRoutes()) {
      if (cur.device === 'lo' || wanted.has(key(cur))) continue;
      if (!cur.gateway && cur.scope === 253) continue;
      const fam = cur.family === IPFamily.v6 ? ['-6'] : [];
      await this.run(this.ip, [
        ...fam,
        'route',
        'del',
        cur.dest || 'default',
        ...(cur.device ? ['dev', cur.device] : []),
      ]).catch((e: Error) => this.opts.log.warn({ err: e }, 'removing stale route failed'));
    }
    const ordered = [...routes].sort((a, b) => Number(!!a.gateway) - Number(!!b.gateway));
    for (const r of ordered) {
      const args = [...(r.family === IPFamily.v6 ? ['-6'] : []), 'route', 'replace', r.dest || 'default'];
      if (r.gateway) args.push('via', r.gateway);
      if (r.device) args.push('dev', r.device);
      if (r.source) args.push('src', r.source);
      if (r.scope) args.push('scope', SCOPE_NAMES[r.scope] ?? String(r.scope));
      if (r.mtu) args.push('mtu', String(r.mtu));
      await this.run(this.ip, args);
    }
    return this.listRoutes();
  }

  /** Static neighbour entries (busybox ip cannot add them; arp -s can, IPv4 only). */
  async addArpNeighbors(neighbors: readonly ARPNeighbor[]): Promise<void> {
    for (const n of neighbors) {
      const ip = n.toIPAddress?.address ?? '';
      checkIp(ip, 'neighbour address');
      if (!MAC_RE.test(n.lladdr))
        throw invalidArgument(`neighbour ${ip}: bad link-layer address ${JSON.stringify(n.lladdr)}`);
      if (!NAME_RE.test(n.device))
        throw invalidArgument(`neighbour ${ip}: bad device ${JSON.stringify(n.device)}`);
      if (n.toIPAddress?.family === IPFamily.v6) {
        throw invalidArgument(`neighbour ${ip}: IPv6 neighbours are not supported by this agent`);
      }
      await this.run(this.arp, ['-i', n.device, '-s', ip, n.lladdr]);
    }
  }
}
