// Root: scan a netns the test made, set up the tcfilter model, send a frame from a peer netns and read it on
// the tap fd, then tear down and check nothing is left (tap, qdisc, filter) and the veth is as found.
import fs from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { logger } from '../../src/common/log.js';
import { closeFd, openTapInNetns } from '../../src/native/netns.js';
import {
  NetworkError,
  type NetworkRecord,
  cleanupNetworkLeftovers,
  createEndpoints,
  emptyRecord,
  netnsCommands,
  scanNetns,
} from '../../src/resource/network/index.js';
import { TestNetns, isRoot, preparedEndpoint, readFrameAfter } from './network-helpers.js';

const nets = new TestNetns();
afterAll(() => nets.destroyAll());
const log = logger('test-network');

/** pod netns with eth0 (veth) 10.77.0.2/24 + fd00:77::2/64, default routes via .1; peer netns holds .1. */
function podWithPeer() {
  const pod = nets.add();
  const peer = nets.add();
  nets.exec(pod.name, ['ip', 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'peer0']);
  nets.exec(pod.name, ['ip', 'link', 'set', 'peer0', 'netns', peer.name]);
  nets.exec(pod.name, ['ip', 'link', 'set', 'eth0', 'mtu', '1450', 'up']);
  nets.exec(pod.name, ['ip', 'addr', 'add', '10.77.0.2/24', 'dev', 'eth0']);
  nets.exec(pod.name, ['ip', 'addr', 'add', 'fd00:77::2/64', 'dev', 'eth0', 'nodad']);
  nets.exec(pod.name, ['ip', 'route', 'add', 'default', 'via', '10.77.0.1']);
  nets.exec(pod.name, ['ip', '-6', 'route', 'add', 'default', 'via', 'fd00:77::1', 'dev', 'eth0']);
  nets.exec(pod.name, [
    'ip',
    'neigh',
    'add',
    '10.77.0.9',
    'lladdr',
    '02:00:00:00:00:09',
    'dev',
    'eth0',
    'nud',
    'permanent',
  ]);
  nets.exec(peer.name, ['ip', 'link', 'set', 'peer0', 'mtu', '1450', 'up']);
  nets.exec(peer.name, ['ip', 'addr', 'add', '10.77.0.1/24', 'dev', 'peer0']);
  return { pod, peer };
}

describe.skipIf(!isRoot)('network tcfilter in a test netns', () => {
  it('scans, redirects frames to the tap and tears down to the state it found', async () => {
    const { pod, peer } = podWithPeer();
    const cmds = netnsCommands(pod.path);
    const qdiscsBefore = nets.exec(pod.name, ['tc', '-j', 'qdisc', 'show', 'dev', 'eth0']);
    const scan = await scanNetns(cmds);
    expect(scan.interfaces.map((i) => i.name)).toEqual(['eth0']);
    const eth0 = scan.interfaces[0]!;
    expect(eth0).toMatchObject({ kind: 'veth', mtu: 1450 });
    expect(eth0.addresses).toEqual([
      { family: 4, address: '10.77.0.2', prefixLength: 24 },
      { family: 6, address: 'fd00:77::2', prefixLength: 64 },
    ]);
    expect(eth0.routes.filter((r) => r.dest === '').map((r) => r.gateway)).toEqual([
      '10.77.0.1',
      'fd00:77::1',
    ]);
    expect(eth0.neighbours).toEqual([
      { family: 4, address: '10.77.0.9', lladdr: '02:00:00:00:00:09', device: 'eth0', state: 0x80 },
    ]);
    expect(scan.skipped.map((s) => s.name)).toContain('lo');

    let record: NetworkRecord = emptyRecord(pod.path);
    const persisted: string[] = [];
    const [ep] = createEndpoints(scan.interfaces, 'tcfilter', {
      cmds,
      log,
      record,
      persist: async (r) => {
        record = r;
        persisted.push(JSON.stringify(r));
      },
    });
    await ep!.prepare();
    // recorded before the tap was made
    expect(JSON.parse(persisted[0]!).taps).toEqual([
      { peer: 'eth0', tap: 'tap0_kata', peerIngressOurs: true },
    ]);
    const tapLink = JSON.parse(nets.exec(pod.name, ['ip', '-j', '-d', 'link', 'show', 'tap0_kata']))[0];
    expect(tapLink.mtu).toBe(1450);
    expect(tapLink.linkinfo.info_data.type).toBe('tap');
    for (const dev of ['eth0', 'tap0_kata']) {
      expect(nets.exec(pod.name, ['tc', 'qdisc', 'show', 'dev', dev])).toContain('ingress');
      expect(nets.exec(pod.name, ['tc', 'filter', 'show', 'dev', dev, 'ingress'])).toContain('mirred');
    }

    // The frame path: a ping from the peer reaches the tap's fd (what QEMU would read), via the redirect.
    const fd = (ep as unknown as { fds: number[] }).fds[0]!;
    const got = await readFrameAfter(fd, () =>
      nets.exec(peer.name, ['/bin/busybox', 'ping', '-c', '1', '-W', '1', '10.77.0.2']),
    );
    // 10-byte virtio-net header (IFF_VNET_HDR), then an ethernet frame carrying ARP (0x0806) or IPv4 (0x0800)
    const ethertype = got.readUInt16BE(10 + 12);
    expect([0x0806, 0x0800, 0x86dd]).toContain(ethertype);

    await ep!.teardown();
    expect(() => nets.exec(pod.name, ['ip', 'link', 'show', 'tap0_kata'])).toThrow();
    expect(nets.exec(pod.name, ['tc', '-j', 'qdisc', 'show', 'dev', 'eth0'])).toBe(qdiscsBefore);
    expect(nets.exec(pod.name, ['tc', 'filter', 'show', 'dev', 'eth0', 'ingress']).trim()).toBe('');
    expect(record.taps).toEqual([]);
  });

  it('cleanupNetworkLeftovers removes what a crashed shim left', async () => {
    const { pod } = podWithPeer();
    const { ep, saved } = await preparedEndpoint(pod.path, 'tcfilter');
    // crash: the fds die with the shim; a tap that outlives it (QEMU still holding it, or persistent) and the
    // veth's ingress qdisc + filter are what is left. A persistent tap of the same name stands in for QEMU's.
    for (const f of (ep as unknown as { fds: number[] }).fds.splice(0)) closeFd(f);
    nets.exec(pod.name, ['ip', 'tuntap', 'add', 'dev', 'tap0_kata', 'mode', 'tap', 'vnet_hdr']);
    expect(nets.exec(pod.name, ['tc', 'filter', 'show', 'dev', 'eth0', 'ingress'])).toContain('mirred');
    await cleanupNetworkLeftovers(saved());
    expect(() => nets.exec(pod.name, ['ip', 'link', 'show', 'tap0_kata'])).toThrow();
    expect(nets.exec(pod.name, ['tc', 'qdisc', 'show', 'dev', 'eth0'])).not.toContain('ingress');
    await cleanupNetworkLeftovers(saved()); // idempotent
  });

  it('bad input: missing netns, refused MTU — an error naming the interface and step, nothing left', async () => {
    await expect(scanNetns(netnsCommands('/var/run/netns/kt-does-not-exist'))).rejects.toThrow(
      /does not exist/,
    );
    const { pod } = podWithPeer();
    const cmds = netnsCommands(pod.path);
    const scan = await scanNetns(cmds);
    const bad = { ...scan.interfaces[0]!, mtu: 70_000 }; // tap max MTU is 65521
    const [ep] = createEndpoints([bad], 'tcfilter', {
      cmds,
      log,
      record: emptyRecord(pod.path),
      persist: async () => {},
    });
    const err = await ep!.prepare().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NetworkError);
    expect(String(err)).toMatch(/set MTU 70000.*tap0_kata/);
    expect(() => nets.exec(pod.name, ['ip', 'link', 'show', 'tap0_kata'])).toThrow();
    expect(nets.exec(pod.name, ['tc', 'qdisc', 'show', 'dev', 'eth0'])).not.toContain('ingress');
  });

  it('opens a multiqueue tap in the netns without moving this thread', async () => {
    const pod = nets.add();
    const before = fs.readlinkSync('/proc/thread-self/ns/net');
    const tap = await openTapInNetns(pod.path, 'mq0_kata', { queues: 2 });
    expect(tap.fds).toHaveLength(2);
    expect(fs.readlinkSync('/proc/thread-self/ns/net')).toBe(before);
    expect(nets.exec(pod.name, ['ip', '-d', 'link', 'show', 'mq0_kata'])).toContain('multi_queue');
    for (const f of tap.fds) closeFd(f);
    expect(() => nets.exec(pod.name, ['ip', 'link', 'show', 'mq0_kata'])).toThrow();
  });
});
