// Hermetic: the agent messages for a NIC, the wait for its MAC and the call order, over a fake agent; and the
// QEMU netdev/device arguments for cold plug.
import { create } from '@bufbuild/protobuf';
import { describe, expect, it } from 'vitest';
import { logger } from '../../src/common/log.js';
import { ColdPlugNics, netdevArg, nicDeviceProps } from '../../src/hypervisor/qemu/netdev.js';
import { InterfacesSchema, RoutesSchema } from '../../src/protocols/gen/agent_pb.js';
import { IPFamily, InterfaceSchema } from '../../src/protocols/gen/types_pb.js';
import type { GuestInterface } from '../../src/resource/network/endpoint.js';
import {
  type NetworkAgent,
  addArpNeighborsRequest,
  configureGuestNetwork,
  updateInterfaceRequest,
  updateRoutesRequest,
} from '../../src/runtime/network.js';

const log = logger('test');

const eth0: GuestInterface = {
  name: 'eth0',
  mac: '1a:7f:17:6d:2d:3d',
  mtu: 1450,
  addresses: [
    { family: 4, address: '10.9.0.2', prefixLength: 24 },
    { family: 6, address: 'fd00:9::2', prefixLength: 64 },
  ],
  routes: [
    { family: 4, dest: '', gateway: '10.9.0.1', device: 'eth0', source: '', scope: 0, mtu: 0 },
    { family: 6, dest: '', gateway: 'fd00:9::1', device: 'eth0', source: '', scope: 0, mtu: 0 },
    { family: 4, dest: '10.20.0.0/16', gateway: '10.9.0.1', device: 'eth0', source: '', scope: 0, mtu: 0 },
    { family: 4, dest: '10.9.0.0/24', gateway: '', device: 'eth0', source: '10.9.0.2', scope: 253, mtu: 0 },
  ],
  neighbours: [{ family: 4, address: '10.9.0.7', lladdr: '02:00:00:00:00:07', device: 'eth0', state: 0x80 }],
};

describe('guest network messages', () => {
  it('UpdateInterface carries name, MAC, MTU and addresses with prefix lengths', () => {
    const i = updateInterfaceRequest(eth0).interface!;
    expect(i).toMatchObject({ name: 'eth0', device: 'eth0', hwAddr: eth0.mac, mtu: 1450n });
    expect(i.IPAddresses.map((a) => [a.family, a.address, a.mask])).toEqual([
      [IPFamily.v4, '10.9.0.2', '24'],
      [IPFamily.v6, 'fd00:9::2', '64'],
    ]);
  });
  it('UpdateRoutes: link routes, then gateway routes, defaults (v4 and v6) last', () => {
    const r = updateRoutesRequest([eth0]).routes!.Routes;
    expect(r.map((x) => x.dest || `default/${x.family === IPFamily.v6 ? 6 : 4}`)).toEqual([
      '10.9.0.0/24',
      '10.20.0.0/16',
      'default/4',
      'default/6',
    ]);
    expect(r[0]).toMatchObject({ scope: 253, source: '10.9.0.2', device: 'eth0' });
  });
  it('AddARPNeighbors carries the static entries', () => {
    const n = addArpNeighborsRequest([eth0]).neighbors!.ARPNeighbors;
    expect(n).toHaveLength(1);
    expect(n[0]).toMatchObject({ device: 'eth0', lladdr: '02:00:00:00:00:07', state: 0x80 });
    expect(n[0]!.toIPAddress?.address).toBe('10.9.0.7');
  });
});

function fakeAgent(macsAfter: number, fail?: 'updateInterface') {
  const calls: string[] = [];
  let lists = 0;
  const agent: NetworkAgent = {
    listInterfaces: async () => {
      calls.push('listInterfaces');
      lists++;
      return create(InterfacesSchema, {
        Interfaces:
          lists > macsAfter
            ? [{ name: 'eth0', hwAddr: eth0.mac.toUpperCase() }]
            : [{ name: 'lo', hwAddr: '00:00:00:00:00:00' }],
      });
    },
    updateInterface: async (req) => {
      calls.push(`updateInterface ${req.interface?.name}`);
      if (fail === 'updateInterface') throw new Error('invalid argument: mtu');
      return create(InterfaceSchema, {});
    },
    updateRoutes: async (req) => {
      calls.push(`updateRoutes ${req.routes?.Routes?.length}`);
      return create(RoutesSchema, {});
    },
    addARPNeighbors: async () => {
      calls.push('addARPNeighbors');
      return {} as Awaited<ReturnType<NetworkAgent['addARPNeighbors']>>;
    },
  };
  return { agent, calls };
}

describe('configureGuestNetwork', () => {
  it('waits for the MAC, then interface, routes, neighbours', async () => {
    const { agent, calls } = fakeAgent(2);
    await configureGuestNetwork(agent, [eth0], { log, timeoutMs: 5000 });
    expect(calls).toEqual([
      'listInterfaces',
      'listInterfaces',
      'listInterfaces',
      'updateInterface eth0',
      'updateRoutes 4',
      'addARPNeighbors',
    ]);
  });
  it('times out naming the missing MAC', async () => {
    const { agent } = fakeAgent(1_000_000);
    await expect(configureGuestNetwork(agent, [eth0], { log, timeoutMs: 300 })).rejects.toThrow(
      /never listed NIC\(s\) 1a:7f:17:6d:2d:3d \(it has 00:00:00:00:00:00\)/,
    );
  });
  it('a refused interface update names the interface and MTU', async () => {
    const { agent } = fakeAgent(0, 'updateInterface');
    await expect(configureGuestNetwork(agent, [eth0], { log, timeoutMs: 1000 })).rejects.toThrow(
      /UpdateInterface eth0 \(1a:7f:17:6d:2d:3d, MTU 1450\) failed: invalid argument: mtu/,
    );
  });
});

describe('QEMU netdev arguments', () => {
  it('single queue, plain tap and vhost-net', () => {
    expect(netdevArg('net0', [3], [])).toBe('tap,id=netdev-net0,fd=3');
    expect(netdevArg('net0', [3], [4])).toBe('tap,id=netdev-net0,fd=3,vhost=on,vhostfd=4');
    expect(netdevArg('net1', [3, 4], [5, 6])).toBe('tap,id=netdev-net1,fds=3:4,vhost=on,vhostfds=5:6');
  });
  it('multiqueue device gets mq and vectors; a bus puts it on a root port', () => {
    expect(nicDeviceProps({ id: 'net0', mac: '02:00:00:00:00:01', queues: 2 }, 'rp1')).toEqual({
      driver: 'virtio-net-pci',
      id: 'nic-net0',
      netdev: 'netdev-net0',
      mac: '02:00:00:00:00:01',
      'disable-modern': false,
      romfile: '',
      mq: true,
      vectors: 6,
      bus: 'rp1',
      addr: '0',
    });
  });
  it('cold plug numbers the fds from firstFd in stdio order', async () => {
    const c = new ColdPlugNics();
    await c.attachNic({ id: 'net0', mac: '02:00:00:00:00:01', queues: 1, tapFds: [40], vhostFds: [41] });
    await c.attachNic({ id: 'net1', mac: '02:00:00:00:00:02', queues: 2, tapFds: [42, 43], vhostFds: [] });
    const { args, extraFds } = c.build(5);
    expect(extraFds).toEqual([40, 41, 42, 43]);
    expect(args.filter((_, i) => i % 4 === 1)).toEqual([
      'tap,id=netdev-net0,fd=5,vhost=on,vhostfd=6',
      'tap,id=netdev-net1,fds=7:8',
    ]);
    await expect(c.attachNic({ id: 'net0', mac: 'x', queues: 1, tapFds: [], vhostFds: [] })).rejects.toThrow(
      /already planned/,
    );
  });
});
