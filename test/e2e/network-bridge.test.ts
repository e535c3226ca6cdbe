// Two kata pods on a Linux bridge inside a netns this test made ("lan"): kata → kata HTTP over IPv4 and IPv6,
// a pod with two NICs (the second to another test netns), and UDP (a DNS query to a server on the lan, its
// answer back). Addresses only inside these netns (10.235.x.0/24, 10.236.x.0/24, fd00:235:x::/64).
import { randomInt } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { pollUntil } from '../../src/common/poll.js';
import { TestNetns, sh } from '../integration/network-helpers.js';
import { useKataSuite } from './shim-suite.js';

const suite = useKataSuite();
const netns = new TestNetns();
afterEach(() => netns.destroyAll());

/** A DNS server on `ip`:53 (UDP) that answers every A query with 10.9.9.9 and every other query with nothing. */
async function dnsServer(ns: string, ip: string): Promise<void> {
  const code = `
const s = require('dgram').createSocket('udp4');
s.on('message', (q, from) => {
  let i = 12; while (q[i]) i += q[i] + 1;
  const qtype = q.readUInt16BE(i + 1), end = i + 5;
  const head = Buffer.from(q.subarray(0, end)); head.writeUInt16BE(0x8180, 2); head.writeUInt16BE(0, 8); head.writeUInt16BE(0, 10);
  head.writeUInt16BE(qtype === 1 ? 1 : 0, 6);
  const ans = qtype === 1 ? Buffer.from([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 9, 9, 9]) : Buffer.alloc(0);
  s.send(Buffer.concat([head, ans]), from.port, from.address);
});
s.bind(53, ${JSON.stringify(ip)}, () => console.log('up'));`;
  await netns.serve(ns, code, 'DNS server');
}

describe('kata pods on a bridge', () => {
  it('talk to each other over IPv4 and IPv6, use a second NIC, and exchange UDP with the lan', async () => {
    const n = randomInt(1, 250);
    const hex = n.toString(16);
    const lan = netns.add();
    const ipn = (ns: string, args: string[]) => netns.ip(ns, args);
    ipn(lan.name, ['link', 'add', 'br0', 'type', 'bridge']);
    ipn(lan.name, ['link', 'set', 'br0', 'up']);
    ipn(lan.name, ['addr', 'add', `10.235.${n}.1/24`, 'dev', 'br0']);
    const pods = ['a', 'b'].map((p, i) => {
      const ns = netns.add();
      const ip = `10.235.${n}.${10 + i}`;
      const ip6 = `fd00:235:${hex}::${10 + i}`;
      netns.veth(ns.name, 'eth0', lan.name, `v${p}`, { mac: `0a:58:0a:eb:00:${10 + i}` });
      ipn(lan.name, ['link', 'set', `v${p}`, 'master', 'br0', 'up']);
      ipn(ns.name, ['addr', 'add', `${ip}/24`, 'dev', 'eth0']);
      ipn(ns.name, ['addr', 'add', `${ip6}/64`, 'dev', 'eth0', 'nodad']);
      ipn(ns.name, ['link', 'set', 'eth0', 'up']);
      ipn(ns.name, ['link', 'set', 'lo', 'up']);
      return { ns, ip, ip6, cid: suite.id(`br${p}`) };
    });
    const [a, b] = pods as [(typeof pods)[0], (typeof pods)[0]];
    // Pod a's second NIC, to a netns of its own.
    const side = netns.add();
    netns.veth(a.ns.name, 'eth1', side.name, 'vside');
    ipn(a.ns.name, ['addr', 'add', `10.236.${n}.2/24`, 'dev', 'eth1']);
    ipn(a.ns.name, ['link', 'set', 'eth1', 'up']);
    ipn(side.name, ['addr', 'add', `10.236.${n}.1/24`, 'dev', 'vside']);
    ipn(side.name, ['link', 'set', 'vside', 'up']);
    await dnsServer(lan.name, `10.235.${n}.1`);

    const runs = await Promise.all([
      suite.k.run(
        [
          '-d',
          '--with-ns',
          `network:${a.ns.path}`,
          suite.k.image,
          a.cid,
          'sh',
          '-c',
          'mkdir -p /w && echo hello-from-a > /w/index.html && exec httpd -f -p 8080 -h /w',
        ],
        { timeoutMs: 240_000 },
      ),
      suite.k.run(['-d', '--with-ns', `network:${b.ns.path}`, suite.k.image, b.cid, 'sleep', '600'], {
        timeoutMs: 240_000,
      }),
    ]);
    runs.forEach((r, i) => expect(r.code, suite.explain(`run ${pods[i]!.cid}`, r)).toBe(0));
    const exec = async (cid: string, execId: string, script: string) =>
      suite.k.ctrd.ctr(['task', 'exec', '--exec-id', execId, cid, 'sh', '-c', script], { timeoutMs: 60_000 });

    // Two NICs in pod a's VM, each configured, the second reaching its own netns.
    const links = await exec(
      a.cid,
      'links',
      `ip -o addr show dev eth1; ping -c 1 -W 5 10.236.${n}.1 >/dev/null && echo side-ok`,
    );
    expect(links.stdout, suite.explain('eth1', links)).toContain(`inet 10.236.${n}.2/24`);
    expect(links.stdout).toContain('side-ok');

    // kata → kata over the bridge, IPv4 then IPv6 (retried while httpd starts and v6 settles).
    for (const url of [`http://${a.ip}:8080/`, `http://[${a.ip6}]:8080/`]) {
      const body = await pollUntil(
        async () => {
          const r = await exec(b.cid, `get${randomInt(1e6)}`, `wget -q -O - ${url}`);
          return r.code === 0 ? r.stdout : undefined;
        },
        { timeoutMs: 60_000, intervalMs: 1000, what: `pod b to fetch ${url}` },
      );
      expect(body).toBe('hello-from-a\n');
    }

    // UDP: a DNS query from pod b to the lan's server, and its answer back.
    const dns = await exec(b.cid, 'dns', `nslookup kata-ts.test 10.235.${n}.1`);
    expect(dns.stdout, suite.explain('nslookup', dns)).toMatch(/Address:\s+10\.9\.9\.9/);

    for (const p of pods) {
      await suite.k.ctrd.ctr(['task', 'kill', '-s', 'SIGKILL', p.cid]);
      await pollUntil(
        async () => ((await suite.k.ctrd.ctr(['task', 'delete', p.cid])).code === 0 ? true : undefined),
        { timeoutMs: 60_000, intervalMs: 500, what: `task ${p.cid} to be deletable` },
      );
      await suite.k.ctrd.ctr(['container', 'delete', p.cid]);
      expect(sh('ip', ['-n', p.ns.name, '-o', 'link', 'show'])).not.toMatch(/tap\d+_kata/);
    }
    netns.destroyAll(); // before the leftover check
  });
});
