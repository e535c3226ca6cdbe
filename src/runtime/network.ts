// Host side of guest network configuration: once a NIC is plugged, wait until the guest lists an interface
// with its MAC, then UpdateInterface (name, MTU, addresses), UpdateRoutes (all NICs' routes, default last),
// AddARPNeighbors. Kata sends the same three calls in that order.
import { create } from '@bufbuild/protobuf';
import type { Logger } from '../common/log.js';
import { pollUntil } from '../common/poll.js';
import {
  AddARPNeighborsRequestSchema,
  ListInterfacesRequestSchema,
  UpdateInterfaceRequestSchema,
  UpdateRoutesRequestSchema,
} from '../protocols/gen/agent_pb.js';
import { IPFamily } from '../protocols/gen/types_pb.js';
import type { GuestInterface } from '../resource/network/endpoint.js';
import type { NetRoute } from '../resource/network/types.js';
import type { AgentClient } from './agent.js';
import { RuntimeError, errorMessage } from './errors.js';

/** The part of the agent client this module calls (a fake in tests). */
export type NetworkAgent = Pick<
  AgentClient,
  'listInterfaces' | 'updateInterface' | 'updateRoutes' | 'addARPNeighbors'
>;

const family = (f: 4 | 6) => (f === 6 ? IPFamily.v6 : IPFamily.v4);

export function updateInterfaceRequest(g: GuestInterface) {
  return create(UpdateInterfaceRequestSchema, {
    interface: {
      device: g.name,
      name: g.name,
      hwAddr: g.mac,
      mtu: BigInt(g.mtu),
      IPAddresses: g.addresses.map((a) => ({
        family: family(a.family),
        address: a.address,
        mask: String(a.prefixLength),
      })),
    },
  });
}

/** Routes of all NICs: link routes first, then gateway routes, default routes (IPv4 and IPv6) last. */
export function updateRoutesRequest(ifaces: readonly GuestInterface[]) {
  const rank = (r: NetRoute) => (r.dest === '' ? 2 : r.gateway ? 1 : 0);
  const routes = ifaces.flatMap((g) => g.routes).sort((a, b) => rank(a) - rank(b));
  return create(UpdateRoutesRequestSchema, {
    routes: {
      Routes: routes.map((r) => ({
        dest: r.dest,
        gateway: r.gateway,
        device: r.device,
        source: r.source,
        scope: r.scope,
        family: family(r.family),
        mtu: r.mtu,
      })),
    },
  });
}

export function addArpNeighborsRequest(ifaces: readonly GuestInterface[]) {
  return create(AddARPNeighborsRequestSchema, {
    neighbors: {
      ARPNeighbors: ifaces.flatMap((g) =>
        g.neighbours.map((n) => ({
          toIPAddress: { family: family(n.family), address: n.address, mask: '' },
          device: n.device,
          lladdr: n.lladdr,
          state: n.state,
        })),
      ),
    },
  });
}

export interface ConfigureGuestOptions {
  /** total wait for the NICs to show up in the guest; default 30 s (TCG guests probe PCI slowly) */
  timeoutMs?: number;
  /** per RPC; default 10 s */
  rpcTimeoutMs?: number;
  signal?: AbortSignal;
  log: Logger;
}

/** Waits until the guest lists every MAC in `macs` (case-insensitive). */
export async function waitForGuestNics(
  agent: NetworkAgent,
  macs: readonly string[],
  o: ConfigureGuestOptions,
): Promise<void> {
  const want = macs.map((m) => m.toLowerCase());
  const rpc = { timeoutMs: o.rpcTimeoutMs ?? 10_000, signal: o.signal };
  let seen: string[] = [];
  try {
    await pollUntil(
      async () => {
        const list = await agent.listInterfaces(create(ListInterfacesRequestSchema, {}), rpc);
        seen = list.Interfaces.map((i) => i.hwAddr.toLowerCase());
        return want.every((m) => seen.includes(m));
      },
      {
        timeoutMs: o.timeoutMs ?? 30_000,
        intervalMs: 200,
        signal: o.signal,
        what: `guest NICs ${want.join(', ')}`,
      },
    );
  } catch (e) {
    const missing = want.filter((m) => !seen.includes(m));
    throw new RuntimeError(
      'DeadlineExceeded',
      `network: the guest never listed NIC(s) ${missing.join(', ')} (it has ${seen.join(', ') || 'none'}): ${errorMessage(e)}`,
    );
  }
}

/** Configures the guest for these NICs. Each failing call names the interface (or routes/neighbours) and step. */
export async function configureGuestNetwork(
  agent: NetworkAgent,
  ifaces: readonly GuestInterface[],
  o: ConfigureGuestOptions,
): Promise<void> {
  if (!ifaces.length) return;
  await waitForGuestNics(
    agent,
    ifaces.map((g) => g.mac),
    o,
  );
  const rpc = { timeoutMs: o.rpcTimeoutMs ?? 10_000, signal: o.signal };
  for (const g of ifaces) {
    try {
      await agent.updateInterface(updateInterfaceRequest(g), rpc);
    } catch (e) {
      throw new RuntimeError(
        'Internal',
        `network: UpdateInterface ${g.name} (${g.mac}, MTU ${g.mtu}) failed: ${errorMessage(e)}`,
      );
    }
  }
  try {
    await agent.updateRoutes(updateRoutesRequest(ifaces), rpc);
  } catch (e) {
    throw new RuntimeError(
      'Internal',
      `network: UpdateRoutes for ${ifaces.map((g) => g.name).join(', ')} failed: ${errorMessage(e)}`,
    );
  }
  const neigh = addArpNeighborsRequest(ifaces);
  if (neigh.neighbors?.ARPNeighbors.length) {
    try {
      await agent.addARPNeighbors(neigh, rpc);
    } catch (e) {
      throw new RuntimeError('Internal', `network: AddARPNeighbors failed: ${errorMessage(e)}`);
    }
  }
  o.log.info({ nics: ifaces.map((g) => `${g.name}/${g.mac}`) }, 'guest network configured');
}
