// What a scan of a network namespace yields: plain data, no handles, so it can be logged, persisted and tested.

export type IpFamily = 4 | 6;

export interface NetAddress {
  family: IpFamily;
  address: string;
  prefixLength: number;
}

export interface NetRoute {
  family: IpFamily;
  /** "" for the default route, else "a.b.c.d/n" or "fd00::/64" */
  dest: string;
  gateway: string;
  /** the interface the route leaves by (the name in the netns, which the guest interface keeps) */
  device: string;
  source: string;
  /** rtnetlink scope number: 0 universe, 253 link, 254 host */
  scope: number;
  mtu: number;
}

export interface NetNeighbour {
  family: IpFamily;
  address: string;
  lladdr: string;
  device: string;
  /** NUD_PERMANENT (0x80) or NUD_NOARP (0x40) */
  state: number;
}

/** Interface kinds an endpoint can be built from; others are reported and skipped. */
export type LinkKind = 'veth' | 'macvlan' | 'ipvlan' | 'tuntap';

export interface ScannedInterface {
  name: string;
  index: number;
  kind: LinkKind;
  mac: string;
  mtu: number;
  addresses: NetAddress[];
  routes: NetRoute[];
  neighbours: NetNeighbour[];
}

export interface NetnsScan {
  netnsPath: string;
  interfaces: ScannedInterface[];
  /** interfaces seen but not usable (lo, bridges, ...), with why, for the log */
  skipped: { name: string; why: string }[];
}

/** A failed network step; names the interface and the step so that the error says what to look at. */
export class NetworkError extends Error {
  constructor(
    readonly step: string,
    readonly iface: string | undefined,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(`network ${step}${iface ? ` (${iface})` : ''}: ${message}`, options);
    this.name = 'NetworkError';
  }
}
