// Pod networking through containerd (issue 8): `ctr run --with-ns network:<netns>` gives the container's VM the
// netns's veth as a virtio-net NIC (tap + tc redirect, or a macvtap link under the macvtap model), with the same MAC, MTU, addresses, routes and static
// neighbours, and traffic flows both ways between the container and a peer netns. Everything here happens in
// netns this file makes (10.231.x.0/24, fd00:231::/64); no route leads anywhere else. After each test the taps
// and qdiscs the runtime made are gone from the pod netns, and the netns are deleted.
import { randomInt } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { pollUntil } from '../../src/common/poll.js';
import { TestNetns, sh } from '../integration/network-helpers.js';
import { useKataSuite } from './shim-suite.js';

const suite = useKataSuite();
const netns = new TestNetns();
afterEach(() => netns.destroyAll());

interface PodNet {
  pod: { name: string; path: string };
  peer: { name: string; path: string };
  podIp: string;
  peerIp: string;
  podIp6: string;
  mac: string;
  neighbour: { ip: string; mac: string };
}

/** pod netns with eth0 (MTU 1400, v4 + v6, default route, a static neighbour), its veth peer in a peer netns. */
function podNetwork(): PodNet {
  const pod = netns.add();
  const peer = netns.add();
  const n = randomInt(1, 250);
  const podIp = `10.231.${n}.2`;
  const peerIp = `10.231.${n}.1`;
  const podIp6 = `fd00:231:${n.toString(16)}::2`;
  const mac = '0a:58:0a:e7:00:02';
  const neighbour = { ip: `10.231.${n}.9`, mac: '0a:58:0a:e7:00:09' };
  const ipn = (ns: string, args: string[]) => netns.ip(ns, args);
  netns.veth(pod.name, 'eth0', peer.name, 'veth0', { mac, mtu: 1400 });
  ipn(pod.name, ['addr', 'add', `${podIp}/24`, 'dev', 'eth0']);
  ipn(pod.name, ['addr', 'add', `${podIp6}/64`, 'dev', 'eth0', 'nodad']);
  ipn(pod.name, ['link', 'set', 'eth0', 'up']);
  ipn(pod.name, ['link', 'set', 'lo', 'up']);
  ipn(pod.name, ['route', 'add', 'default', 'via', peerIp]);
  ipn(pod.name, ['neigh', 'add', neighbour.ip, 'lladdr', neighbour.mac, 'dev', 'eth0', 'nud', 'permanent']);
  ipn(peer.name, ['link', 'set', 'veth0', 'mtu', '1400']);
  ipn(peer.name, ['addr', 'add', `${peerIp}/24`, 'dev', 'veth0']);
  ipn(peer.name, ['link', 'set', 'veth0', 'up']);
  return { pod, peer, podIp, peerIp, podIp6, mac, neighbour };
}

/** An HTTP server in the peer netns answering `body` on peerIp:8080 (a Node child under `ip netns exec`). */
async function peerServer(net: PodNet, body: string): Promise<void> {
  const code = `require('http').createServer((q,s)=>s.end(${JSON.stringify(body)})).listen(8080,${JSON.stringify(net.peerIp)},()=>console.log('up'))`;
  await netns.serve(net.peer.name, code, 'peer server');
}

function podLinks(net: PodNet): string[] {
  return (JSON.parse(sh('ip', ['-n', net.pod.name, '-j', 'link', 'show'])) as { ifname: string }[]).map(
    (l) => l.ifname,
  );
}
function podQdiscs(net: PodNet): string[] {
  return (
    JSON.parse(sh('tc', ['-n', net.pod.name, '-j', 'qdisc', 'show'])) as { dev: string; kind: string }[]
  ).map((q) => `${q.dev}:${q.kind}`);
}

/** A detached busybox httpd container (answering hello-from-kata on :8080) in the pod netns. */
async function runHttpd(net: PodNet, cid: string, extra: string[] = []): Promise<void> {
  const script = 'mkdir -p /w && echo hello-from-kata > /w/index.html && exec httpd -f -p 8080 -h /w';
  const run = await suite.k.run(
    ['-d', ...extra, '--with-ns', `network:${net.pod.path}`, suite.k.image, cid, 'sh', '-c', script],
    { timeoutMs: 180_000 },
  );
  expect(run.code, suite.explain('run', run)).toBe(0);
}

/** `ctr task exec` of `sh -c script` in container `cid`; expects exit 0; returns stdout. */
async function execIn(cid: string, execId: string, script: string): Promise<string> {
  const r = await suite.k.ctrd.ctr(['task', 'exec', '--exec-id', execId, cid, 'sh', '-c', script], {
    timeoutMs: 60_000,
  });
  expect(r.code, suite.explain(`exec ${script}`, r)).toBe(0);
  return r.stdout;
}

/** busybox wget from the peer netns to the container's httpd, retried while httpd comes up. */
function fetchFromPeer(net: PodNet): Promise<string> {
  return pollUntil(
    async () => {
      try {
        return sh('ip', [
          'netns',
          'exec',
          net.peer.name,
          '/bin/busybox',
          'wget',
          '-q',
          '-O',
          '-',
          `http://${net.podIp}:8080/`,
        ]);
      } catch {
        return undefined;
      }
    },
    { timeoutMs: 60_000, intervalMs: 500, what: `httpd in the container at ${net.podIp}:8080` },
  );
}

describe('a container in the pod network namespace', () => {
  it('sees the netns interface (MAC, MTU, addresses, routes, neighbours) and talks both ways to its peer', async () => {
    const net = podNetwork();
    await peerServer(net, 'hello-from-peer');
    const cid = suite.id('net');
    await runHttpd(net, cid);

    // Host side: our tap beside eth0, ingress qdiscs on both.
    expect(podLinks(net)).toContain('tap0_kata');
    expect(podQdiscs(net)).toEqual(expect.arrayContaining(['eth0:ingress', 'tap0_kata:ingress']));

    const exec = (execId: string, script: string) => execIn(cid, execId, script);
    const link = await exec(
      'link',
      'cat /sys/class/net/eth0/address /sys/class/net/eth0/mtu; ip -o link show',
    );
    expect(link).toContain(`${net.mac}\n1400\n`);
    expect(link).not.toContain('tap0_kata');
    const addrs = await exec('addr', 'ip -o addr show dev eth0');
    expect(addrs).toContain(`inet ${net.podIp}/24`);
    expect(addrs).toContain(`inet6 ${net.podIp6}/64`);
    const routes = await exec('route', 'ip route; ip neigh show dev eth0');
    expect(routes).toMatch(new RegExp(`^default via ${net.peerIp.replace(/\./g, '\\.')} dev eth0`, 'm'));
    expect(routes).toMatch(new RegExp(`^${net.neighbour.ip} lladdr ${net.neighbour.mac} .*PERMANENT`, 'm'));

    // Container → peer.
    expect(await exec('get', `wget -q -O - http://${net.peerIp}:8080/`)).toBe('hello-from-peer');
    // Peer → container (busybox httpd in the guest); retried while httpd comes up.
    const fromPeer = await fetchFromPeer(net);
    expect(fromPeer).toBe('hello-from-kata\n');

    await suite.k.ctrd.ctr(['task', 'kill', '-s', 'SIGKILL', cid]);
    const del = await pollUntil(
      async () => {
        const r = await suite.k.ctrd.ctr(['task', 'delete', cid]);
        return r.code === 0 ? r : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 500, what: `task ${cid} to be deletable after SIGKILL` },
    );
    expect(del.code).toBe(0);
    expect((await suite.k.ctrd.ctr(['container', 'delete', cid])).code).toBe(0);

    // What the runtime made is gone; what the caller made is as it was.
    expect(podLinks(net)).not.toContain('tap0_kata');
    expect(podQdiscs(net).filter((q) => q.endsWith(':ingress'))).toEqual([]);
    const eth0 = JSON.parse(sh('ip', ['-n', net.pod.name, '-j', 'link', 'show', 'eth0'])) as {
      address: string;
      mtu: number;
    }[];
    expect(eth0[0]).toMatchObject({ address: net.mac, mtu: 1400 });
  });

  it("under internetworking_model = macvtap: a macvtap link takes eth0's MAC, traffic flows both ways, eth0 is given back", async () => {
    const net = podNetwork();
    await peerServer(net, 'hello-from-peer');
    const conf = suite.k.writeConfig('macvtap.toml', { runtime: { internetworking_model: 'macvtap' } });
    const cid = suite.id('mvtap');
    await runHttpd(net, cid, ['--runtime-config-path', conf]);
    const links = JSON.parse(sh('ip', ['-n', net.pod.name, '-d', '-j', 'link', 'show'])) as {
      ifname: string;
      address: string;
      linkinfo?: { info_kind?: string };
    }[];
    const mv = links.find((l) => l.ifname === 'tap0_kata');
    expect(mv?.linkinfo?.info_kind).toBe('macvtap');
    expect(mv?.address).toBe(net.mac);
    expect(links.find((l) => l.ifname === 'eth0')?.address).not.toBe(net.mac);
    expect(sh('ip', ['-n', net.pod.name, '-4', 'addr', 'show', 'dev', 'eth0'])).not.toContain(net.podIp);
    expect(podQdiscs(net).filter((q) => q.endsWith(':ingress'))).toEqual([]);

    const exec = (execId: string, script: string) => execIn(cid, execId, script);
    const inGuest = await exec(
      'link',
      'cat /sys/class/net/eth0/address /sys/class/net/eth0/mtu; ip -o addr show dev eth0',
    );
    expect(inGuest).toContain(`${net.mac}\n1400\n`);
    expect(inGuest).toContain(`inet ${net.podIp}/24`);
    expect(await exec('get', `wget -q -O - http://${net.peerIp}:8080/`)).toBe('hello-from-peer');
    const fromPeer = await fetchFromPeer(net);
    expect(fromPeer).toBe('hello-from-kata\n');

    await suite.k.ctrd.ctr(['task', 'kill', '-s', 'SIGKILL', cid]);
    await suite.waitTaskStatus(cid, 'STOPPED', 60_000);
    expect((await suite.k.ctrd.ctr(['task', 'delete', cid])).code).toBe(0);
    expect((await suite.k.ctrd.ctr(['container', 'delete', cid])).code).toBe(0);
    // eth0 as the caller made it: MAC, MTU, addresses, default route; no macvtap left.
    expect(podLinks(net)).not.toContain('tap0_kata');
    const eth0 = JSON.parse(sh('ip', ['-n', net.pod.name, '-j', 'link', 'show', 'eth0'])) as {
      address: string;
      mtu: number;
    }[];
    expect(eth0[0]).toMatchObject({ address: net.mac, mtu: 1400 });
    const addrs = sh('ip', ['-n', net.pod.name, 'addr', 'show', 'dev', 'eth0']);
    expect(addrs).toContain(`inet ${net.podIp}/24`);
    expect(addrs).toContain(`inet6 ${net.podIp6}/64`);
    expect(sh('ip', ['-n', net.pod.name, 'route', 'show', 'default'])).toContain(
      `via ${net.peerIp} dev eth0`,
    );
  });

  it('without a netns in the spec the VM has loopback only, and no NIC driver loaded', async () => {
    const script =
      'ls /sys/class/net; test -d /sys/module/virtio_net && echo virtio_net || echo no-nic-driver';
    const r = await suite.k.run(['--rm', suite.k.image, suite.id('lo'), 'sh', '-c', script], {
      timeoutMs: 180_000,
    });
    expect(r.code, suite.explain('run', r)).toBe(0);
    expect(r.stdout.split(/\s+/).filter(Boolean)).toEqual(['lo', 'no-nic-driver']);
  });

  it('refuses a netns path that does not exist, naming it, and leaves nothing', async () => {
    const bad = `/var/run/netns/kt-missing-${randomInt(1e9)}`;
    const cid = suite.id('badns');
    const r = await suite.k.run(['--rm', '--with-ns', `network:${bad}`, suite.k.image, cid, 'true'], {
      timeoutMs: 120_000,
    });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(bad);
    await suite.k.ctrd.ctr(['container', 'delete', cid]);
  });
});
