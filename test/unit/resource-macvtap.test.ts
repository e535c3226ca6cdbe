// The macvtap internetworking model without a netns: the argv it runs, the record it persists before each
// change, the undo when a step fails, and the rescan that must not take its own interface (new MAC) for a new one.
import { describe, expect, it } from 'vitest';
import { logger } from '../../src/common/log.js';
import { createEndpoints, newInterfaces } from '../../src/resource/network/endpoint.js';
import { macvtapAddArgs, randomMac, routeRestoreArgs } from '../../src/resource/network/macvtap.js';
import { type NetworkRecord, emptyRecord } from '../../src/resource/network/record.js';
import type { ScannedInterface } from '../../src/resource/network/types.js';

const eth0: ScannedInterface = {
  name: 'eth0',
  index: 2,
  kind: 'veth',
  mac: '0a:58:0a:e7:00:02',
  mtu: 1400,
  addresses: [
    { family: 4, address: '10.231.1.2', prefixLength: 24 },
    { family: 6, address: 'fd00:231:1::2', prefixLength: 64 },
  ],
  routes: [
    { family: 4, dest: '', gateway: '10.231.1.1', device: 'eth0', source: '', scope: 0, mtu: 0 },
    {
      family: 4,
      dest: '10.231.1.0/24',
      gateway: '',
      device: 'eth0',
      source: '10.231.1.2',
      scope: 253,
      mtu: 0,
    },
  ],
  neighbours: [],
};

function fakeNetns(failOn?: RegExp) {
  const calls: string[] = [];
  const snapshots: string[] = [];
  const record: NetworkRecord = emptyRecord('/run/netns/x');
  const opts = {
    cmds: {
      netnsPath: '/run/netns/x',
      ip: async (a: readonly string[]) => {
        calls.push(a.join(' '));
        if (failOn?.test(a.join(' '))) throw new Error(`fake: ${a.join(' ')} failed`);
        return '';
      },
      tc: async (a: readonly string[]) => {
        calls.push(`tc ${a.join(' ')}`);
        return '';
      },
    },
    log: logger('test'),
    record,
    persist: async (r: NetworkRecord) => {
      snapshots.push(JSON.stringify(r));
    },
  };
  return { calls, snapshots, record, opts };
}

describe('macvtap model', () => {
  it('builds the link argv, a locally administered MAC and the routes to restore', () => {
    expect(macvtapAddArgs('eth0', 'tap0_kata', 9000, 1).join(' ')).toBe(
      'link add link eth0 name tap0_kata index 9000 type macvtap',
    );
    expect(macvtapAddArgs('eth0', 'tap0_kata', 9000, 2)).toContain('numtxqueues');
    const mac = randomMac();
    expect(mac).toMatch(/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
    expect(Number.parseInt(mac.slice(0, 2), 16) & 0x03).toBe(0x02);
    expect(routeRestoreArgs(eth0.routes[0]!)?.join(' ')).toBe(
      '-4 route replace default via 10.231.1.1 dev eth0',
    );
    expect(routeRestoreArgs(eth0.routes[1]!)).toBeUndefined(); // comes back with the address
  });

  it('persists what it changes before changing it, and undoes everything when a step fails', async () => {
    // The unit tier has no /dev/tap<N>: opening it fails after every ip step, which exercises the undo.
    const f = fakeNetns();
    const [ep] = createEndpoints([eth0], 'macvtap', f.opts);
    await expect(ep!.prepare()).rejects.toThrow(/network open macvtap device \(tap0_kata\): \/dev\/tap\d+/);
    const add = f.calls.findIndex((c) => c.startsWith('link add link eth0 name tap0_kata index'));
    expect(add).toBe(0);
    const firstSnap = JSON.parse(f.snapshots[0]!) as NetworkRecord;
    expect(firstSnap.taps[0]).toMatchObject({
      peer: 'eth0',
      tap: 'tap0_kata',
      macvtap: { peerMac: eth0.mac },
    });
    expect(firstSnap.taps[0]!.macvtap!.index).toBeGreaterThanOrEqual(8192);
    expect(f.calls).toContain('addr del 10.231.1.2/24 dev eth0');
    expect(f.calls).toContain(`link set dev tap0_kata address ${eth0.mac}`);
    expect(f.calls.some((c) => c.startsWith('tc '))).toBe(false);
    // The undo: link deleted, MAC, addresses and the default route given back; the record emptied.
    const undo = f.calls.slice(f.calls.indexOf('link del dev tap0_kata'));
    expect(undo).toEqual([
      'link del dev tap0_kata',
      `link set dev eth0 address ${eth0.mac}`,
      'addr replace 10.231.1.2/24 dev eth0',
      'addr replace fd00:231:1::2/64 dev eth0 nodad',
      '-4 route replace default via 10.231.1.1 dev eth0',
    ]);
    expect(f.record.taps).toEqual([]);
  });

  it('a link add that keeps failing is an error naming the link, after retries with other indexes', async () => {
    const f = fakeNetns(/^link add/);
    const [ep] = createEndpoints([eth0], 'macvtap', f.opts);
    await expect(ep!.prepare()).rejects.toThrow(/add macvtap link \(16 tries\) \(tap0_kata\)/);
    expect(f.calls.filter((c) => c.startsWith('link add')).length).toBe(16);
    expect(f.calls).not.toContain('link del dev tap0_kata'); // never made
    expect(f.record.taps).toEqual([]);
  });

  it('an ipvlan joins by tcfilter; a rescan sees the interface with its new MAC as covered', () => {
    const f = fakeNetns();
    const ipvl: ScannedInterface = { ...eth0, name: 'ipvl0', kind: 'ipvlan', mac: '0a:58:0a:e7:00:03' };
    const eps = createEndpoints([eth0, ipvl], 'macvtap', f.opts);
    expect(eps.map((e) => e.id)).toEqual(['net0', 'net1']);
    const rescanned = [
      { ...eth0, mac: randomMac() },
      { ...eth0, name: 'eth1', mac: '0a:58:0a:e7:00:04' },
    ];
    expect(newInterfaces(rescanned, eps).map((s) => s.name)).toEqual(['eth1']);
  });
});
