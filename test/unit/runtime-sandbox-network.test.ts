// Hermetic: how a sandbox treats the network namespace its spec names, over fakes (fake hypervisor and agent,
// fake `ip`/`tc`): a bad path or model is refused with an error naming it and leaves nothing; an empty netns
// gives a VM without NICs; a failed endpoint setup undoes the VM and the network record.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { logger } from '../../src/common/log.js';
import type { NetnsCommands, NetnsScan, NetworkRecord } from '../../src/resource/network/index.js';
import { type NetworkDeps, specNetnsPath } from '../../src/runtime/sandbox-network.js';
import { Sandbox } from '../../src/runtime/sandbox.js';
import { type FakeEnv, fakeEnv } from './runtime-fakes.js';

let env: FakeEnv;
let netns: string;
let commands: string[];
let cleaned: NetworkRecord[];

beforeEach(async () => {
  env = await fakeEnv();
  netns = path.join(env.dir, 'netns-file'); // exists, so the path check passes; setns(2) into it fails
  fs.writeFileSync(netns, '');
  commands = [];
  cleaned = [];
});
afterEach(async () => env.close());

function networkDeps(interfaces: NetnsScan['interfaces']): NetworkDeps {
  return {
    commands: (netnsPath): NetnsCommands => ({
      netnsPath,
      ip: async (args) => {
        commands.push(`ip ${args.join(' ')}`);
        return '';
      },
      tc: async (args) => {
        commands.push(`tc ${args.join(' ')}`);
        return '[]';
      },
    }),
    scan: async (cmds) => ({ netnsPath: cmds.netnsPath, interfaces, skipped: [] }),
    cleanupLeftovers: async (r) => {
      cleaned.push(r);
    },
  };
}

const veth = {
  name: 'eth0',
  index: 2,
  kind: 'veth' as const,
  mac: '0a:58:0a:f4:00:05',
  mtu: 1450,
  addresses: [{ family: 4 as const, address: '10.244.0.5', prefixLength: 24 }],
  routes: [],
  neighbours: [],
};

function start(netnsPath: string | undefined, network?: NetworkDeps) {
  return Sandbox.start({
    id: 'sb1',
    namespace: 'test',
    bundle: path.join(env.dir, 'bundle'),
    hostname: 'sb1',
    config: structuredClone(env.config),
    deps: { ...env.deps, network },
    log: logger('test'),
    events: { exit: () => {}, oom: () => {} },
    netnsPath,
  });
}

describe('the sandbox and the pod network namespace', () => {
  it('reads the netns path from linux.namespaces (none, or no path: a fresh netns)', () => {
    expect(specNetnsPath({ linux: { namespaces: [{ type: 'network', path: '/var/run/netns/p' }] } })).toBe(
      '/var/run/netns/p',
    );
    expect(specNetnsPath({ linux: { namespaces: [{ type: 'network' }] } })).toBeUndefined();
    expect(specNetnsPath({})).toBeUndefined();
  });

  it('refuses a netns path that does not exist, naming it, and leaves nothing', async () => {
    const missing = path.join(env.dir, 'no-such-netns');
    await expect(start(missing, networkDeps([veth]))).rejects.toThrow(
      new RegExp(`network namespace ${missing}.*cannot be used`),
    );
    expect(env.hypervisors[0]?.cleaned).toBe(true);
    expect(env.hypervisors[0]?.nics).toEqual([]);
    expect(env.states.size).toBe(0);
    expect(commands).toEqual([]);
  });

  it('refuses an unknown internetworking_model, naming the key', async () => {
    env.config.runtime.internetworking_model = 'bogus' as never;
    await expect(start(netns, networkDeps([veth]))).rejects.toThrow(/runtime.internetworking_model "bogus"/);
    expect(env.states.size).toBe(0);
  });

  it('refuses a netns when no network support is wired', async () => {
    await expect(start(netns, undefined)).rejects.toThrow(/no network support/);
  });

  it('boots without NICs and configures nothing when the netns has no usable interface', async () => {
    const sb = await start(netns, networkDeps([]));
    expect(env.hypervisors[0]!.nics).toEqual([]);
    expect(env.agent.count('updateInterface')).toBe(0);
    expect(env.states.get('sb1')?.network).toBeUndefined();
    await sb.stop();
    expect(env.states.size).toBe(0);
  });

  it('undoes everything when the tap cannot be opened: error names the step, the record is emptied', async () => {
    await expect(start(netns, networkDeps([veth]))).rejects.toThrow(/network open tap \(tap0_kata\)/);
    expect(env.hypervisors[0]!.nics).toEqual([]);
    expect(env.hypervisors[0]!.cleaned).toBe(true);
    // The tap was recorded before it was made, and the record emptied again by the undo.
    expect(commands.some((c) => c.startsWith('ip link del'))).toBe(true);
    expect(env.states.size).toBe(0);
  });
});
