import type { Logger } from '../../common/log.js';
// The Endpoint seam: one NIC of the VM, built from one interface of the pod's netns. prepare() makes the
// host side (tap + tc redirect), attach() hands the fds to a NicSink (cold-plug args or QMP hotplug),
// guestInterface() says what the agent must configure, teardown() removes what prepare() made.
import type { NicSink, NicSpec } from '../../hypervisor/hypervisor.js';
import { type OpenTapOptions, closeFd, openTapInNetns } from '../../native/netns.js';
import type { NetnsCommands } from './iproute.js';
import { wrap } from './iproute.js';
import { setUpMacvtap } from './macvtap.js';
import { type NetworkRecord, type TapRecord, removeTapArtifacts } from './record.js';
import { KATA_TAP_SUFFIX } from './scan.js';
import { hasIngressQdisc, ingressQdiscArgs, redirectFilterArgs } from './tcfilter.js';
import type { NetAddress, NetNeighbour, NetRoute, ScannedInterface } from './types.js';
import { NetworkError } from './types.js';
import { openVhostNet } from './vhost.js';

export type InternetworkingModel = 'tcfilter' | 'macvtap' | 'none';

/** What the guest agent must configure for this NIC (runtime/network.ts turns it into agent messages). */
export interface GuestInterface {
  name: string;
  mac: string;
  mtu: number;
  addresses: NetAddress[];
  routes: NetRoute[];
  neighbours: NetNeighbour[];
}

export interface Endpoint {
  readonly id: string;
  readonly source: ScannedInterface;
  prepare(): Promise<void>;
  attach(sink: NicSink): Promise<void>;
  detach(sink: NicSink): Promise<void>;
  guestInterface(): GuestInterface;
  teardown(): Promise<void>;
  /** Whether a rescanned interface is this endpoint's (the macvtap model changes its MAC). */
  covers(s: ScannedInterface): boolean;
}

export interface EndpointOptions {
  cmds: NetnsCommands;
  log: Logger;
  /** the record to append to; `persist` is called with it before each tap is created */
  record: NetworkRecord;
  persist: (r: NetworkRecord) => Promise<void>;
  queues?: number;
  /** config hypervisor.disable_vhost_net */
  disableVhostNet?: boolean;
  tap?: OpenTapOptions;
}

/** tap name for the endpoint at position `i` (IFNAMSIZ is 16 with the NUL). */
export function tapName(i: number): string {
  return `tap${i}${KATA_TAP_SUFFIX}`;
}

/**
 * How an endpoint reaches the VM: `tcfilter` a tap of ours joined by tc redirects, `macvtap` a macvtap link of
 * ours on the interface (macvtap.ts), `direct` the CNI's own tap (no tc, never deleted).
 */
type Join = 'tcfilter' | 'macvtap' | 'direct';

/** Endpoint over a veth/macvlan/ipvlan or a CNI's tap. */
class TapEndpoint implements Endpoint {
  private fds: number[] = [];
  private entry: TapRecord | undefined;
  private prepared = false;
  private readonly direct: boolean;

  constructor(
    readonly id: string,
    readonly source: ScannedInterface,
    private readonly tap: string,
    private readonly join: Join,
    private readonly o: EndpointOptions,
  ) {
    this.direct = join === 'direct';
  }

  covers(s: ScannedInterface): boolean {
    return s.name === this.source.name && (this.join === 'macvtap' || s.mac === this.source.mac);
  }

  async prepare(): Promise<void> {
    if (this.prepared) return;
    const { cmds } = this.o;
    const veth = this.source.name;
    const queues = this.o.queues ?? 1;
    try {
      if (this.join === 'macvtap') {
        const entry: TapRecord = { peer: veth, tap: this.tap, peerIngressOurs: false };
        this.entry = entry;
        this.o.record.taps.push(entry);
        this.fds = await setUpMacvtap(cmds, this.source, this.tap, queues, async (mv) => {
          entry.macvtap = mv;
          await this.o.persist(this.o.record);
        });
        this.prepared = true;
        this.o.log.info({ endpoint: this.id, iface: veth, macvtap: this.tap }, 'endpoint prepared');
        return;
      }
      if (!this.direct) {
        const peerIngressOurs = !(await hasIngressQdisc(cmds, veth).catch((e) => {
          throw wrap('check qdisc', veth, e);
        }));
        this.entry = { peer: veth, tap: this.tap, peerIngressOurs };
        this.o.record.taps.push(this.entry);
        await this.o.persist(this.o.record);
      }
      const opened = await openTapInNetns(cmds.netnsPath, this.tap, { queues, ...this.o.tap }).catch((e) => {
        throw wrap('open tap', this.tap, e);
      });
      this.fds = opened.fds;
      if (!this.direct) {
        await cmds.ip(['link', 'set', 'dev', this.tap, 'mtu', String(this.source.mtu)]).catch((e) => {
          throw wrap(`set MTU ${this.source.mtu}`, this.tap, e);
        });
        await cmds.ip(['link', 'set', 'dev', this.tap, 'up']).catch((e) => {
          throw wrap('link up', this.tap, e);
        });
        if (this.entry?.peerIngressOurs)
          await cmds.tc(ingressQdiscArgs(veth)).catch((e) => {
            throw wrap('add ingress qdisc', veth, e);
          });
        await cmds.tc(ingressQdiscArgs(this.tap)).catch((e) => {
          throw wrap('add ingress qdisc', this.tap, e);
        });
        await cmds.tc(redirectFilterArgs(veth, this.tap)).catch((e) => {
          throw wrap('add redirect filter', veth, e);
        });
        await cmds.tc(redirectFilterArgs(this.tap, veth)).catch((e) => {
          throw wrap('add redirect filter', this.tap, e);
        });
      }
      this.prepared = true;
      this.o.log.info(
        { endpoint: this.id, iface: veth, tap: this.tap, direct: this.direct },
        'endpoint prepared',
      );
    } catch (e) {
      await this.teardown().catch((te) =>
        this.o.log.warn({ endpoint: this.id, err: String(te) }, 'undoing a failed endpoint setup'),
      );
      throw e;
    }
  }

  async attach(sink: NicSink): Promise<void> {
    if (!this.prepared || !this.fds.length)
      throw new NetworkError('attach', this.source.name, 'endpoint is not prepared (or already attached)');
    const queues = this.fds.length;
    const vhostFds = this.o.disableVhostNet ? [] : await openVhostNet(queues);
    this.o.log.info(
      { endpoint: this.id, vhostNet: vhostFds.length > 0, disabled: !!this.o.disableVhostNet },
      vhostFds.length ? 'NIC uses vhost-net' : 'NIC uses a plain tap (no vhost-net)',
    );
    const tapFds = this.fds;
    this.fds = []; // the sink owns them now, even if it fails
    try {
      await sink.attachNic({ id: this.id, mac: this.source.mac, queues, tapFds, vhostFds });
    } catch (e) {
      throw wrap('attach NIC', this.source.name, e);
    }
  }

  async detach(sink: NicSink): Promise<void> {
    await sink.detachNic(this.id).catch((e) => {
      throw wrap('detach NIC', this.source.name, e);
    });
  }

  guestInterface(): GuestInterface {
    const s = this.source;
    return {
      name: s.name,
      mac: s.mac,
      mtu: s.mtu,
      addresses: s.addresses,
      routes: s.routes,
      neighbours: s.neighbours,
    };
  }

  async teardown(): Promise<void> {
    for (const fd of this.fds.splice(0)) closeFd(fd);
    this.prepared = false;
    if (this.direct || !this.entry) return;
    const errors = await removeTapArtifacts(this.o.cmds, this.entry);
    if (errors.length) throw new NetworkError('teardown', this.tap, errors.map((e) => e.message).join('; '));
    this.o.record.taps = this.o.record.taps.filter((t) => t !== this.entry);
    await this.o.persist(this.o.record);
    this.entry = undefined;
  }
}

/**
 * Endpoints for a scan under a model. tcfilter: every interface gets a tap; macvtap: a macvtap link (an ipvlan
 * gets a tap, as under tcfilter); none: only taps a CNI made are
 * used (directly); the others are left out and logged. On a rescan (late interfaces, at Start) pass only the
 * new interfaces (`newInterfaces`) and `firstIndex` = the number of endpoints so far, so ids and tap names
 * stay unique.
 */
export function createEndpoints(
  interfaces: readonly ScannedInterface[],
  model: InternetworkingModel,
  o: EndpointOptions,
  firstIndex = 0,
): Endpoint[] {
  const out: Endpoint[] = [];
  for (const s of interfaces) {
    const i = firstIndex + out.length;
    const id = `net${i}`;
    if (s.kind === 'tuntap') out.push(new TapEndpoint(id, s, s.name, 'direct', o));
    else if (model === 'tcfilter' || (model === 'macvtap' && s.kind === 'ipvlan')) {
      // An ipvlan shares its MAC with its parent: a macvtap on it could not take a MAC of its own.
      if (model === 'macvtap') o.log.info({ iface: s.name }, 'macvtap model: an ipvlan joins by tcfilter');
      out.push(new TapEndpoint(id, s, tapName(i), 'tcfilter', o));
    } else if (model === 'macvtap') out.push(new TapEndpoint(id, s, tapName(i), 'macvtap', o));
    else
      o.log.info({ iface: s.name, kind: s.kind }, 'internetworking_model none: interface left out of the VM');
  }
  return out;
}

/** Interfaces of a rescan that no endpoint covers yet (matched by name and MAC; by name under macvtap). */
export function newInterfaces(
  scanned: readonly ScannedInterface[],
  existing: readonly Endpoint[],
): ScannedInterface[] {
  return scanned.filter((s) => !existing.some((e) => e.covers(s)));
}

export type { NicSink, NicSpec };
