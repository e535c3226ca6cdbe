// The sandbox's network (Kata's network entity): the pod netns named by the OCI spec, scanned at create, one
// endpoint per interface (tap + tc redirect), NICs cold-plugged before boot, the guest configured once the agent
// is up, late interfaces picked up at Start (hotplug), and everything this made removed at stop.
import { stat } from 'node:fs/promises';
import type { Logger } from '../common/log.js';
import type { KataConfig } from '../config/types.js';
import type { NicSink } from '../hypervisor/hypervisor.js';
import {
  type Endpoint,
  type InternetworkingModel,
  type NetnsCommands,
  type NetnsScan,
  type NetworkRecord,
  createEndpoints,
  emptyRecord,
  newInterfaces,
} from '../resource/network/index.js';
import { RuntimeError, errorMessage, withContext } from './errors.js';
import { type NetworkAgent, configureGuestNetwork } from './network.js';
import type { OciSpec } from './oci.js';

/** What the sandbox's network needs from the resource layer (fakes in unit tests). */
export interface NetworkDeps {
  commands(netnsPath: string): NetnsCommands;
  scan(cmds: NetnsCommands): Promise<NetnsScan>;
  /** Removes what a record names (crash cleanup). */
  cleanupLeftovers(record: NetworkRecord): Promise<void>;
}

export interface SandboxNetworkOptions {
  netnsPath: string;
  model: InternetworkingModel;
  disableVhostNet: boolean;
  deps: NetworkDeps;
  log: Logger;
  /** Persists the record; called before each tap is made and after each is removed. */
  persist(record: NetworkRecord): Promise<void>;
}

/** The netns path the spec names (CRI's pod netns, `ctr run --with-ns network:...`); undefined: a fresh netns. */
export function specNetnsPath(spec: OciSpec): string | undefined {
  const ns = spec.linux?.namespaces?.find((n) => n.type === 'network');
  return ns?.path || undefined;
}

export function internetworkingModel(value: string): InternetworkingModel {
  if (value === 'tcfilter' || value === 'macvtap' || value === 'none') return value;
  throw new RuntimeError(
    'InvalidArgument',
    `runtime.internetworking_model ${JSON.stringify(value)} is not supported (use "tcfilter", "macvtap" or "none")`,
  );
}

export class SandboxNetwork {
  readonly record: NetworkRecord;
  private readonly endpoints: Endpoint[] = [];
  private readonly attached = new Set<string>();
  private readonly cmds: NetnsCommands;

  private constructor(private readonly o: SandboxNetworkOptions) {
    this.record = emptyRecord(o.netnsPath);
    this.cmds = o.deps.commands(o.netnsPath);
  }

  /** The network of a sandbox whose spec names `netnsPath`, with the model and vhost choice from its config. */
  static forSandbox(
    netnsPath: string,
    config: KataConfig,
    deps: NetworkDeps | undefined,
    o: Pick<SandboxNetworkOptions, 'log' | 'persist'>,
  ): Promise<SandboxNetwork> {
    if (!deps)
      throw new RuntimeError('Unimplemented', `network namespace ${netnsPath}: no network support is wired`);
    return SandboxNetwork.setup({
      ...o,
      netnsPath,
      model: internetworkingModel(config.runtime.internetworking_model),
      disableVhostNet: config.hypervisor.disable_vhost_net,
      deps,
    });
  }

  /** Scans the netns and prepares an endpoint per usable interface; on failure nothing is left. */
  static async setup(o: SandboxNetworkOptions): Promise<SandboxNetwork> {
    try {
      await stat(o.netnsPath);
    } catch (e) {
      throw new RuntimeError(
        'InvalidArgument',
        `network namespace ${o.netnsPath} (linux.namespaces of the OCI spec) cannot be used: ${errorMessage(e)}`,
      );
    }
    const net = new SandboxNetwork(o);
    try {
      await net.addInterfaces();
    } catch (e) {
      await net
        .teardown()
        .catch((te: unknown) => o.log.warn({ err: errorMessage(te) }, 'undoing a failed network setup'));
      throw e;
    }
    return net;
  }

  get size(): number {
    return this.endpoints.length;
  }

  /** Scans again and prepares endpoints for interfaces not seen yet; returns them. */
  private async addInterfaces(): Promise<Endpoint[]> {
    const scan = await this.o.deps.scan(this.cmds);
    const fresh = newInterfaces(scan.interfaces, this.endpoints);
    if (scan.skipped.length) this.o.log.debug({ skipped: scan.skipped }, 'netns interfaces left out');
    const made = createEndpoints(
      fresh,
      this.o.model,
      {
        cmds: this.cmds,
        log: this.o.log,
        record: this.record,
        persist: (r) => this.o.persist(r),
        disableVhostNet: this.o.disableVhostNet,
      },
      this.endpoints.length,
    );
    for (const ep of made) {
      await ep.prepare();
      this.endpoints.push(ep);
    }
    if (made.length)
      this.o.log.info(
        { netns: this.o.netnsPath, endpoints: made.map((e) => `${e.id}:${e.source.name}/${e.source.mac}`) },
        'network endpoints prepared',
      );
    return made;
  }

  /** Gives every endpoint not yet attached to `sink` (cold-plug before boot, hotplug after). */
  async plug(sink: NicSink): Promise<void> {
    for (const ep of this.endpoints) {
      if (this.attached.has(ep.id)) continue;
      await ep.attach(sink);
      this.attached.add(ep.id);
    }
  }

  /** Addresses, routes and neighbours into the guest once its NICs show up. */
  async configureGuest(agent: NetworkAgent, signal?: AbortSignal): Promise<void> {
    await configureGuestNetwork(
      agent,
      this.endpoints.map((e) => e.guestInterface()),
      { log: this.o.log, signal },
    );
  }

  /**
   * Kata's rescan at the sandbox container's Start: interfaces added to the netns after Create are hot-plugged
   * into the running VM and configured.
   */
  async rescanAtStart(hv: { nicSink(): NicSink }, agent: NetworkAgent, signal?: AbortSignal): Promise<void> {
    try {
      const made = await this.addInterfaces();
      if (!made.length) return;
      await this.plug(hv.nicSink());
      await this.configureGuest(agent, signal);
    } catch (e) {
      throw withContext(e, 'adding the network interfaces that appeared since create');
    }
  }

  /**
   * Removes the taps, filters and qdiscs this made (the VM is stopped, so QEMU's tap fds are closed); the CNI's
   * interfaces stay as found. Tries every endpoint and throws one error naming each failure.
   */
  async teardown(): Promise<void> {
    const errors: string[] = [];
    for (const ep of this.endpoints.splice(0).reverse()) {
      try {
        await ep.teardown();
      } catch (e) {
        errors.push(`${ep.id} (${ep.source.name}): ${errorMessage(e)}`);
      }
    }
    this.attached.clear();
    if (errors.length)
      throw new Error(`tearing down the network in ${this.o.netnsPath}: ${errors.join('; ')}`);
  }
}
