// Root: the macvtap model in netns the test made: the link takes eth0's MAC, a ping from the peer reaches the
// /dev/tap fd (what QEMU reads), and both teardown and the crash cleanup from the record give eth0 back its MAC,
// addresses and default route.
import fs from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { logger } from '../../src/common/log.js';
import {
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
const log = logger('test-macvtap');
const MAC = '02:00:00:00:78:02';

function podWithPeer() {
  const pod = nets.add();
  const peer = nets.add();
  nets.exec(pod.name, ['ip', 'link', 'add', 'eth0', 'address', MAC, 'type', 'veth', 'peer', 'name', 'peer0']);
  nets.exec(pod.name, ['ip', 'link', 'set', 'peer0', 'netns', peer.name]);
  nets.exec(pod.name, ['ip', 'link', 'set', 'eth0', 'mtu', '1450', 'up']);
  nets.exec(pod.name, ['ip', 'addr', 'add', '10.78.0.2/24', 'dev', 'eth0']);
  nets.exec(pod.name, ['ip', 'addr', 'add', 'fd00:78::2/64', 'dev', 'eth0', 'nodad']);
  nets.exec(pod.name, ['ip', 'route', 'add', 'default', 'via', '10.78.0.1']);
  nets.exec(peer.name, ['ip', 'link', 'set', 'peer0', 'mtu', '1450', 'up']);
  nets.exec(peer.name, ['ip', 'addr', 'add', '10.78.0.1/24', 'dev', 'peer0']);
  return { pod, peer };
}

/** eth0 as the test made it: MAC, MTU, both addresses, the default route. */
function expectEth0AsMade(pod: { name: string }): void {
  const link = JSON.parse(nets.exec(pod.name, ['ip', '-j', 'link', 'show', 'eth0']))[0];
  expect(link).toMatchObject({ address: MAC, mtu: 1450 });
  const addrs = nets.exec(pod.name, ['ip', 'addr', 'show', 'dev', 'eth0']);
  expect(addrs).toContain('inet 10.78.0.2/24');
  expect(addrs).toContain('inet6 fd00:78::2/64');
  expect(nets.exec(pod.name, ['ip', 'route', 'show', 'default'])).toContain('via 10.78.0.1 dev eth0');
  expect(() => nets.exec(pod.name, ['ip', 'link', 'show', 'tap0_kata'])).toThrow();
}

describe.skipIf(!isRoot)('network macvtap in a test netns', () => {
  it('takes the MAC, passes frames to the /dev/tap fd, and teardown gives eth0 back', async () => {
    const { pod, peer } = podWithPeer();
    const cmds = netnsCommands(pod.path);
    const scan = await scanNetns(cmds);
    let record: NetworkRecord = emptyRecord(pod.path);
    const [ep] = createEndpoints(scan.interfaces, 'macvtap', {
      cmds,
      log,
      record,
      persist: async (r) => {
        record = structuredClone(r);
      },
    });
    await ep!.prepare();
    const mv = JSON.parse(nets.exec(pod.name, ['ip', '-j', '-d', 'link', 'show', 'tap0_kata']))[0];
    expect(mv).toMatchObject({ address: MAC, mtu: 1450, linkinfo: { info_kind: 'macvtap' } });
    expect(record.taps[0]?.macvtap?.index).toBe(mv.ifindex);
    const eth0 = JSON.parse(nets.exec(pod.name, ['ip', '-j', 'addr', 'show', 'dev', 'eth0']))[0];
    expect(eth0.address).not.toBe(MAC);
    expect(eth0.addr_info.filter((a: { scope: string }) => a.scope === 'global')).toEqual([]);

    const fd = (ep as unknown as { fds: number[] }).fds[0]!;
    const got = await readFrameAfter(fd, () =>
      nets.exec(peer.name, ['/bin/busybox', 'ping', '-c', '1', '-W', '1', '10.78.0.2']),
    );
    // the virtio-net header macvtap puts first (10 bytes), then ethernet to the pod's MAC or a multicast group
    // (the first frame may be IPv6 neighbour discovery of the link coming up)
    const dst = [...got.subarray(10, 16)].map((b) => b.toString(16).padStart(2, '0')).join(':');
    expect(dst === MAC || (got[10]! & 1) === 1, `frame to ${dst}`).toBe(true);
    expect([0x0806, 0x0800, 0x86dd]).toContain(got.readUInt16BE(10 + 12));

    await ep!.teardown();
    expectEth0AsMade(pod);
    expect(record.taps).toEqual([]);
  });

  it('cleanupNetworkLeftovers gives eth0 back after a crash, from the record alone', async () => {
    const { pod } = podWithPeer();
    const { ep, saved } = await preparedEndpoint(pod.path, 'macvtap');
    for (const f of (ep as unknown as { fds: number[] }).fds.splice(0)) fs.closeSync(f); // the shim dies
    await cleanupNetworkLeftovers(saved());
    expectEth0AsMade(pod);
    await cleanupNetworkLeftovers(saved()); // idempotent
    expectEth0AsMade(pod);
  });
});
