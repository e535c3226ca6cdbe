import { describe, expect, it } from 'vitest';
import { parseAddrs, parseLinks, parseRoutes } from '../../src/agent/network.js';
import { IPFamily } from '../../src/protocols/gen/types_pb.js';

// Output recorded from busybox 1.35 `ip -o link`, `ip -o addr`, `ip route` in a guest.
const links = `1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue qlen 1000\\    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00
2: eth0@if5: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1450 qdisc noqueue qlen 1000\\    link/ether 4a:1b:fd:29:b9:3a brd ff:ff:ff:ff:ff:ff
3: v1@v0: <BROADCAST,MULTICAST> mtu 1500 qdisc noop qlen 1000\\    link/ether ea:ef:22:be:aa:71 brd ff:ff:ff:ff:ff:ff`;
const addrs = `1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever
2: eth0    inet 10.9.0.2/24 scope global eth0\\       valid_lft forever preferred_lft forever
2: eth0    inet6 fe80::481b:fdff:fe29:b93a/64 scope link \\       valid_lft forever preferred_lft forever`;

describe('busybox ip output', () => {
  it('parses links with flags, MTU, MAC and peer suffixes', () => {
    const l = parseLinks(links);
    expect(l.map((x) => x.name)).toEqual(['lo', 'eth0', 'v1']);
    expect(l[1]).toEqual({
      index: 2,
      name: 'eth0',
      flags: ['BROADCAST', 'MULTICAST', 'UP', 'LOWER_UP'],
      mtu: 1450,
      type: 'ether',
      mac: '4a:1b:fd:29:b9:3a',
    });
  });

  it('parses addresses of both families', () => {
    expect(parseAddrs(addrs)).toEqual([
      { name: 'lo', family: IPFamily.v4, address: '127.0.0.1', prefix: '8' },
      { name: 'eth0', family: IPFamily.v4, address: '10.9.0.2', prefix: '24' },
      { name: 'eth0', family: IPFamily.v6, address: 'fe80::481b:fdff:fe29:b93a', prefix: '64' },
    ]);
  });

  it('parses routes: default, link scope with source, extra keywords and flags', () => {
    const r = parseRoutes(
      'default via 10.9.0.1 dev eth0 \n10.9.0.0/24 dev eth0 scope link  src 10.9.0.2 \n10.8.0.0/16 via 10.9.0.9 dev eth0 proto static metric 5 onlink mtu 1400\nlocal 10.9.0.2 dev eth0\n',
      IPFamily.v4,
    );
    expect(r).toEqual([
      { dest: '', family: IPFamily.v4, gateway: '10.9.0.1', device: 'eth0', source: '', scope: 0 },
      {
        dest: '10.9.0.0/24',
        family: IPFamily.v4,
        gateway: '',
        device: 'eth0',
        source: '10.9.0.2',
        scope: 253,
      },
      {
        dest: '10.8.0.0/16',
        family: IPFamily.v4,
        gateway: '10.9.0.9',
        device: 'eth0',
        source: '',
        scope: 0,
        mtu: 1400,
      },
    ]);
  });
});
