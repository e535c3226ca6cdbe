// Network RPCs against a real (throwaway) network namespace with a veth pair, through busybox ip/arp.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IPFamily } from '../../src/protocols/gen/types_pb.js';
import { Code } from '../../src/protocols/ttrpc/index.js';
import { type HostAgent, startHostAgent } from '../e2e/agent-fixtures.js';

const ns = `kt-agent-net-${process.pid}`;
const canRun = process.getuid?.() === 0 && fs.existsSync('/bin/busybox') && hasIp();

function hasIp(): boolean {
  try {
    execFileSync('ip', ['-V'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const inNs = (...args: string[]) => execFileSync('ip', ['netns', 'exec', ns, ...args], { encoding: 'utf8' });

describe.skipIf(!canRun)('agent network RPCs (busybox ip in a private netns)', () => {
  let env: HostAgent;
  let mac: string;

  beforeAll(async () => {
    execFileSync('ip', ['netns', 'add', ns]);
    inNs('ip', 'link', 'add', 'v0', 'type', 'veth', 'peer', 'name', 'v1');
    mac = /link\/ether ([0-9a-f:]+)/.exec(inNs('ip', 'link', 'show', 'v0'))![1]!;
    env = await startHostAgent({
      ipCommand: ['ip', 'netns', 'exec', ns, 'busybox', 'ip'],
      arpCommand: ['ip', 'netns', 'exec', ns, 'busybox', 'arp'],
    });
  });

  afterAll(async () => {
    await env?.close();
    execFileSync('ip', ['netns', 'del', ns]);
  });

  it('configures an interface found by MAC: name, MTU, addresses, up', async () => {
    const res = await env.agent.updateInterface({
      interface: {
        name: 'eth0',
        hwAddr: mac,
        mtu: 1400n,
        IPAddresses: [{ family: IPFamily.v4, address: '10.9.0.2', mask: '24' }],
      },
    });
    expect(res.name).toBe('eth0');
    const list = (await env.agent.listInterfaces({})).Interfaces;
    const eth0 = list.find((i) => i.name === 'eth0')!;
    expect(eth0.hwAddr).toBe(mac);
    expect(eth0.mtu).toBe(1400n);
    expect(eth0.rawFlags & 1).toBe(1); // IFF_UP
    expect(eth0.IPAddresses.map((a) => `${a.address}/${a.mask}`)).toContain('10.9.0.2/24');
  });

  it('replaces the routing table and lists it', async () => {
    const res = await env.agent.updateRoutes({
      routes: {
        Routes: [
          { dest: '', gateway: '10.9.0.1', device: 'eth0' },
          { dest: '10.9.0.0/24', device: 'eth0', source: '10.9.0.2', scope: 253 },
          { dest: '10.20.0.0/16', gateway: '10.9.0.254', device: 'eth0' },
        ],
      },
    });
    const dests = res.Routes.map((r) => `${r.dest || 'default'} ${r.gateway}`);
    expect(dests).toEqual(
      expect.arrayContaining(['default 10.9.0.1', '10.9.0.0/24 ', '10.20.0.0/16 10.9.0.254']),
    );
    // a second update drops routes no longer asked for
    await env.agent.updateRoutes({ routes: { Routes: [{ dest: '', gateway: '10.9.0.1', device: 'eth0' }] } });
    const after = (await env.agent.listRoutes({})).Routes.map((r) => r.dest);
    expect(after).not.toContain('10.20.0.0/16');
    expect(after).toContain('');
  });

  it('adds static ARP neighbours', async () => {
    await env.agent.addARPNeighbors({
      neighbors: {
        ARPNeighbors: [
          {
            toIPAddress: { family: IPFamily.v4, address: '10.9.0.5' },
            device: 'eth0',
            lladdr: '02:00:00:00:00:05',
            state: 128,
          },
        ],
      },
    });
    expect(inNs('ip', 'neigh', 'show', 'dev', 'eth0')).toMatch(
      /10\.9\.0\.5 lladdr 02:00:00:00:00:05 PERMANENT/,
    );
  });

  it('answers bad input with InvalidArgument and unknown MACs with NotFound', async () => {
    await expect(
      env.agent.updateInterface({ interface: { name: 'eth1', hwAddr: 'nope' } }),
    ).rejects.toMatchObject({
      code: Code.InvalidArgument,
    });
    await expect(
      env.agent.updateInterface({ interface: { name: 'eth1', hwAddr: '02:11:22:33:44:55' } }),
    ).rejects.toMatchObject({
      code: Code.NotFound,
    });
    await expect(
      env.agent.updateRoutes({ routes: { Routes: [{ dest: '1.2.3.0/24; reboot', device: 'eth0' }] } }),
    ).rejects.toMatchObject({
      code: Code.InvalidArgument,
    });
  });
});
