// Hermetic: iproute2 JSON parsing, the scan over a fake `ip`, tc argv, the leftover cleanup over a fake `tc`.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { logger } from '../../src/common/log.js';
import { tapFlags } from '../../src/native/netns.js';
import { createEndpoints, newInterfaces } from '../../src/resource/network/endpoint.js';
import { IprouteError, type NetnsCommands } from '../../src/resource/network/iproute.js';
import {
  classifyLink,
  countFilters,
  parseAddrs,
  parseLinks,
  parseNeighbours,
  parseQdiscs,
  parseRoutes,
} from '../../src/resource/network/parse.js';
import { cleanupNetworkLeftovers, emptyRecord } from '../../src/resource/network/record.js';
import { scanNetns } from '../../src/resource/network/scan.js';
import {
  deleteFilterArgs,
  ingressQdiscArgs,
  redirectFilterArgs,
} from '../../src/resource/network/tcfilter.js';
import { NetworkError } from '../../src/resource/network/types.js';

const LINKS = JSON.stringify([
  { ifindex: 1, ifname: 'lo', mtu: 65536, link_type: 'loopback', address: '00:00:00:00:00:00', flags: [] },
  {
    ifindex: 5,
    ifname: 'tap1',
    mtu: 1500,
    link_type: 'ether',
    address: '02:00:00:00:00:05',
    linkinfo: { info_kind: 'tun', info_data: { type: 'tap' } },
  },
  {
    ifindex: 3,
    ifname: 'eth0',
    mtu: 1450,
    link_type: 'ether',
    address: '1A:7F:17:6D:2D:3D',
    linkinfo: { info_kind: 'veth' },
  },
  {
    ifindex: 4,
    ifname: 'br0',
    mtu: 1500,
    link_type: 'ether',
    address: '02:00:00:00:00:04',
    linkinfo: { info_kind: 'bridge' },
  },
  {
    ifindex: 6,
    ifname: 'tap0_kata',
    mtu: 1450,
    link_type: 'ether',
    address: '02:00:00:00:00:06',
    linkinfo: { info_kind: 'tun', info_data: { type: 'tap' } },
  },
]);
const ADDRS = JSON.stringify([
  {
    ifname: 'eth0',
    addr_info: [
      { family: 'inet', local: '10.9.0.2', prefixlen: 24, scope: 'global' },
      { family: 'inet6', local: 'fd00:9::2', prefixlen: 64, scope: 'global' },
      { family: 'inet6', local: 'fe80::1', prefixlen: 64, scope: 'link' },
    ],
  },
]);
const ROUTES4 = JSON.stringify([
  { dst: 'default', gateway: '10.9.0.1', flags: [] },
  { dst: '10.9.0.0/24', protocol: 'kernel', scope: 'link', prefsrc: '10.9.0.2', flags: [] },
  { dst: '10.20.0.5', gateway: '10.9.0.1', metrics: [{ mtu: 1400 }], flags: [] },
]);
const ROUTES6 = JSON.stringify([
  { dst: 'fd00:9::/64', protocol: 'kernel', metric: 256, flags: [] },
  { dst: 'fe80::/64', protocol: 'kernel', metric: 256, flags: [] },
  { dst: 'default', gateway: 'fd00:9::1', metric: 1024, flags: [] },
]);
const NEIGH = JSON.stringify([
  { dst: '10.9.0.7', lladdr: '02:00:00:00:00:07', state: ['PERMANENT'] },
  { dst: 'ff02::16', lladdr: '33:33:00:00:00:16', state: ['NOARP'] },
]);

describe('iproute2 JSON parsing', () => {
  it('classifies links: veth/macvlan/ipvlan/tap are endpoints; lo, tun, bridges and physical devices are not', () => {
    const links = parseLinks(LINKS);
    expect(
      links.map((l) => [
        l.name,
        'kind' in classifyLink(l) ? (classifyLink(l) as { kind: string }).kind : 'skip',
      ]),
    ).toEqual([
      ['lo', 'skip'],
      ['tap1', 'tuntap'],
      ['eth0', 'veth'],
      ['br0', 'skip'],
      ['tap0_kata', 'tuntap'],
    ]);
    expect(links[2]!.mac).toBe('1a:7f:17:6d:2d:3d');
    const tun = parseLinks(
      JSON.stringify([
        { ifindex: 9, ifname: 't', linkinfo: { info_kind: 'tun', info_data: { type: 'tun' } } },
      ]),
    );
    expect(classifyLink(tun[0]!)).toEqual({ skip: 'tun device (L3, no ethernet frames)' });
    expect(
      classifyLink(parseLinks(JSON.stringify([{ ifindex: 2, ifname: 'ens3', link_type: 'ether' }]))[0]!),
    ).toHaveProperty('skip');
  });
  it('keeps global addresses with prefixes, drops link-local', () => {
    expect(parseAddrs(ADDRS).get('eth0')).toEqual([
      { family: 4, address: '10.9.0.2', prefixLength: 24 },
      { family: 6, address: 'fd00:9::2', prefixLength: 64 },
    ]);
  });
  it('parses routes: default as "", host routes get a prefix, scope and MTU; IPv6 link-local dropped', () => {
    expect(parseRoutes(ROUTES4, 4)).toEqual([
      { family: 4, dest: '', gateway: '10.9.0.1', device: '', source: '', scope: 0, mtu: 0 },
      { family: 4, dest: '10.9.0.0/24', gateway: '', device: '', source: '10.9.0.2', scope: 253, mtu: 0 },
      { family: 4, dest: '10.20.0.5/32', gateway: '10.9.0.1', device: '', source: '', scope: 0, mtu: 1400 },
    ]);
    expect(parseRoutes(ROUTES6, 6).map((r) => r.dest)).toEqual(['fd00:9::/64', '']);
  });
  it('keeps static neighbours, not multicast mappings', () => {
    expect(parseNeighbours(NEIGH)).toEqual([
      { family: 4, address: '10.9.0.7', lladdr: '02:00:00:00:00:07', device: '', state: 0x80 },
    ]);
  });
  it('parses qdiscs and counts filters; rejects non-JSON naming the command', () => {
    expect(parseQdiscs('[{"kind":"noqueue","handle":"0:","root":true}]')).toEqual([
      { kind: 'noqueue', handle: '0:', parent: undefined, root: true },
    ]);
    expect(
      countFilters(
        '[{"protocol":"all","pref":49152,"kind":"u32"},{"protocol":"all","pref":49152,"kind":"u32","options":{}}]',
      ),
    ).toBe(1);
    expect(() => parseLinks('Error: oops')).toThrow(/ip -j -d link show: output is not JSON/);
  });
});

function fakeIp(netnsPath: string, answers: (args: string) => string): NetnsCommands {
  return {
    netnsPath,
    ip: async (a) => answers(a.join(' ')),
    tc: async () => '[]',
  };
}

describe('scanNetns over a fake ip', () => {
  const ns = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'kt-net-')), 'ns');
  fs.writeFileSync(ns, '');
  const answers = (a: string): string => {
    if (a.startsWith('-j -d link show')) return LINKS;
    if (a.startsWith('-j addr show dev eth0')) return ADDRS;
    if (a.startsWith('-j addr show')) return '[]';
    if (a.startsWith('-j -4 route show table main dev eth0')) return ROUTES4;
    if (a.startsWith('-j -6 route show table main dev eth0')) return ROUTES6;
    if (a.startsWith('-j neigh show nud permanent dev eth0')) return NEIGH;
    return '[]';
  };
  it('one endpoint per usable interface, veth first, our own taps skipped, devices filled in', async () => {
    const scan = await scanNetns(fakeIp(ns, answers));
    expect(scan.interfaces.map((i) => `${i.name}:${i.kind}`)).toEqual(['eth0:veth', 'tap1:tuntap']);
    const eth0 = scan.interfaces[0]!;
    expect(eth0.routes.every((r) => r.device === 'eth0')).toBe(true);
    expect(eth0.neighbours[0]!.device).toBe('eth0');
    expect(scan.skipped.map((s) => s.name)).toEqual(['lo', 'br0', 'tap0_kata']);
  });
  it('a vanishing interface is an error naming it and the step', async () => {
    const vanish = fakeIp(ns, (a) => {
      if (a.startsWith('-j -d link show')) return LINKS;
      if (a.includes('dev eth0'))
        throw new IprouteError(['nsenter'], 'Device "eth0" does not exist.', 'Device "eth0" does not exist.');
      return '[]';
    });
    const err = await scanNetns(vanish).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NetworkError);
    expect(String(err)).toMatch(/network scan \(eth0\): the interface vanished during the scan/);
  });
  it('a missing netns path is an error naming the path', async () => {
    await expect(scanNetns(fakeIp('/nonexistent/netns/x', answers))).rejects.toThrow(
      /netns \/nonexistent\/netns\/x does not exist/,
    );
  });
});

describe('tcfilter argv and leftovers', () => {
  it('builds the ingress qdisc and the match-all mirred redirect', () => {
    expect(ingressQdiscArgs('eth0').join(' ')).toBe('qdisc add dev eth0 handle ffff: ingress');
    expect(redirectFilterArgs('eth0', 'tap0_kata').join(' ')).toBe(
      'filter add dev eth0 parent ffff: pref 49152 protocol all u32 match u8 0 0 action mirred egress redirect dev tap0_kata',
    );
    expect(deleteFilterArgs('eth0').join(' ')).toBe('filter del dev eth0 parent ffff: pref 49152');
  });
  it('tap flags: IFF_TAP|IFF_NO_PI|IFF_VNET_HDR, plus IFF_MULTI_QUEUE for queues > 1', () => {
    expect(tapFlags({})).toBe(0x2 | 0x1000 | 0x4000);
    expect(tapFlags({ vnetHdr: false, queues: 4 })).toBe(0x2 | 0x1000 | 0x100);
  });
  it('cleanupNetworkLeftovers removes our filter, our qdisc only, the tap; missing things count as done', async () => {
    const ns = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'kt-net-')), 'ns');
    fs.writeFileSync(ns, '');
    const calls: string[] = [];
    const cmds: NetnsCommands = {
      netnsPath: ns,
      ip: async (a) => {
        calls.push(`ip ${a.join(' ')}`);
        throw new IprouteError([], 'Cannot find device "tap1_kata"', 'Cannot find device "tap1_kata"');
      },
      tc: async (a) => {
        calls.push(`tc ${a.join(' ')}`);
        return '';
      },
    };
    const rec = emptyRecord(ns);
    rec.taps.push({ peer: 'eth0', tap: 'tap0_kata', peerIngressOurs: true });
    rec.taps.push({ peer: 'eth1', tap: 'tap1_kata', peerIngressOurs: false });
    await cleanupNetworkLeftovers(rec, cmds);
    expect(calls).toEqual([
      'tc filter del dev eth0 parent ffff: pref 49152',
      'tc qdisc del dev eth0 handle ffff: ingress',
      'ip link del dev tap0_kata',
      'tc filter del dev eth1 parent ffff: pref 49152',
      'ip link del dev tap1_kata',
    ]);
    calls.length = 0;
    await cleanupNetworkLeftovers({ ...rec, netnsPath: '/nonexistent/ns' }, cmds);
    expect(calls).toEqual([]); // the netns is gone: CNI already removed everything in it
  });
  it('cleanupNetworkLeftovers reports real failures after trying every step', async () => {
    const ns = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'kt-net-')), 'ns');
    fs.writeFileSync(ns, '');
    const cmds: NetnsCommands = {
      netnsPath: ns,
      ip: async () => '',
      tc: async () => {
        throw new IprouteError([], 'RTNETLINK answers: Operation not permitted', 'Operation not permitted');
      },
    };
    const rec = emptyRecord(ns);
    rec.taps.push({ peer: 'eth0', tap: 'tap0_kata', peerIngressOurs: true });
    await expect(cleanupNetworkLeftovers(rec, cmds)).rejects.toThrow(/filter on eth0.*ingress qdisc on eth0/);
  });
});

describe('endpoints from a scan', () => {
  const iface = (name: string, kind: 'veth' | 'tuntap', mac: string) => ({
    name,
    index: 1,
    kind,
    mac,
    mtu: 1500,
    addresses: [],
    routes: [],
    neighbours: [],
  });
  const opts = {
    cmds: { netnsPath: '/x', ip: async () => '', tc: async () => '' },
    log: logger('test'),
    record: emptyRecord('/x'),
    persist: async () => {},
  };
  it('tcfilter: one per interface; none: only CNI taps; a rescan continues the numbering', () => {
    const a = iface('eth0', 'veth', '02:00:00:00:00:01');
    const b = iface('tap9', 'tuntap', '02:00:00:00:00:02');
    expect(createEndpoints([a, b], 'tcfilter', opts).map((e) => e.id)).toEqual(['net0', 'net1']);
    expect(createEndpoints([a, b], 'none', opts).map((e) => e.source.name)).toEqual(['tap9']);
    const first = createEndpoints([a], 'tcfilter', opts);
    const c = iface('eth1', 'veth', '02:00:00:00:00:03');
    const late = newInterfaces([a, c], first);
    expect(late.map((s) => s.name)).toEqual(['eth1']);
    const more = createEndpoints(late, 'tcfilter', opts, first.length);
    expect(more.map((e) => e.id)).toEqual(['net1']);
    expect(more[0]!.guestInterface()).toMatchObject({ name: 'eth1', mac: '02:00:00:00:00:03', mtu: 1500 });
  });
  it('attach before prepare is an error naming the interface', async () => {
    const [e] = createEndpoints([iface('eth0', 'veth', '02:00:00:00:00:01')], 'tcfilter', opts);
    const sink = { attachNic: async () => {}, detachNic: async () => {} };
    await expect(e!.attach(sink)).rejects.toThrow(/network attach \(eth0\): endpoint is not prepared/);
  });
});
