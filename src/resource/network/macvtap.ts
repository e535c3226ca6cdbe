// The macvtap internetworking model (Kata Go's `macvtap`; runtime-rs lists it but runs it as `none`): a macvtap
// link on the CNI's interface takes that interface's MAC, so the VM's NIC answers for the pod's address; the
// interface itself gets a random MAC and loses its addresses (or the netns would answer ARP for them). The VM
// reads and writes frames through /dev/tap<ifindex>. Teardown gives the interface its MAC, addresses and routes
// back and deletes the macvtap link.
import { randomBytes, randomInt } from 'node:crypto';
import fs from 'node:fs';
import { promisify } from 'node:util';
import type { NetnsCommands } from './iproute.js';
import { wrap } from './iproute.js';
import type { NetAddress, NetRoute, ScannedInterface } from './types.js';
import { NetworkError } from './types.js';

const openFile = promisify(fs.open);

/** What the macvtap model changed on the CNI's interface, to give back; persisted before each change. */
export interface MacvtapRecord {
  /** the macvtap link's ifindex (its device is /dev/tap<index>); 0 until one was made */
  index: number;
  peerMac: string;
  addresses: NetAddress[];
  routes: NetRoute[];
}

// /dev/tap<ifindex> is named in the host's /dev whatever netns the link is in, while ifindexes are per netns:
// an index far above the host's own makes a clash unlikely, and a clash is retried with another (as Kata Go).
const INDEX_BASE = 8192;
const INDEX_RANGE = 0xffff;
const INDEX_TRIES = 16;

/** A locally administered unicast MAC (for the CNI's interface, whose own MAC the VM takes). */
export function randomMac(): string {
  const b = randomBytes(6);
  b[0] = (b[0]! & 0xfe) | 0x02;
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}

/** `ip link add` argv of the macvtap link on `lower` (mode vepa, the kernel's default, as Kata Go). */
export function macvtapAddArgs(lower: string, name: string, index: number, queues: number): string[] {
  const q = queues > 1 ? ['numtxqueues', String(queues), 'numrxqueues', String(queues)] : [];
  return ['link', 'add', 'link', lower, 'name', name, 'index', String(index), ...q, 'type', 'macvtap'];
}

function addrArg(a: NetAddress): string {
  return `${a.address}/${a.prefixLength}`;
}

/** `ip route replace` argv restoring a scanned route (link-scope prefix routes come back with the address). */
export function routeRestoreArgs(r: NetRoute): string[] | undefined {
  if (r.scope === 253 && !r.gateway) return undefined;
  const out = [`-${r.family}`, 'route', 'replace', r.dest || 'default'];
  if (r.gateway) out.push('via', r.gateway);
  out.push('dev', r.device);
  if (r.source) out.push('src', r.source);
  if (r.mtu) out.push('mtu', String(r.mtu));
  return out;
}

/**
 * Makes the macvtap link `link` on `source` and returns its /dev/tap fds (`queues` of them). `record` gets what
 * is about to change and must persist it before it returns (crash cleanup works from it).
 */
export async function setUpMacvtap(
  cmds: NetnsCommands,
  source: ScannedInterface,
  link: string,
  queues: number,
  record: (mv: MacvtapRecord) => Promise<void>,
): Promise<number[]> {
  const lower = source.name;
  const mv: MacvtapRecord = {
    index: 0,
    peerMac: source.mac,
    addresses: source.addresses,
    routes: source.routes.filter((r) => r.device === lower),
  };
  let lastErr: unknown;
  for (let i = 0; i < INDEX_TRIES && !mv.index; i++) {
    const index = INDEX_BASE + randomInt(INDEX_RANGE);
    mv.index = index;
    await record(mv);
    try {
      await cmds.ip(macvtapAddArgs(lower, link, index, queues));
    } catch (e) {
      mv.index = 0;
      lastErr = e;
    }
  }
  if (!mv.index) throw wrap(`add macvtap link (${INDEX_TRIES} tries)`, link, lastErr);
  const step = async (what: string, dev: string, args: string[]) => {
    await cmds.ip(args).catch((e) => {
      throw wrap(what, dev, e);
    });
  };
  await step(`set MTU ${source.mtu}`, link, ['link', 'set', 'dev', link, 'mtu', String(source.mtu)]);
  await step('set a random MAC', lower, ['link', 'set', 'dev', lower, 'address', randomMac()]);
  await step(`set MAC ${source.mac}`, link, ['link', 'set', 'dev', link, 'address', source.mac]);
  for (const a of source.addresses) {
    await step(`remove address ${addrArg(a)}`, lower, ['addr', 'del', addrArg(a), 'dev', lower]);
  }
  await step('link up', link, ['link', 'set', 'dev', link, 'up']);
  await step('link up', lower, ['link', 'set', 'dev', lower, 'up']);
  const dev = `/dev/tap${mv.index}`;
  const fds: number[] = [];
  try {
    for (let q = 0; q < queues; q++) fds.push(await openFile(dev, fs.constants.O_RDWR));
  } catch (e) {
    for (const fd of fds) fs.close(fd, () => {});
    throw new NetworkError('open macvtap device', link, `${dev}: ${(e as Error).message}`, { cause: e });
  }
  return fds;
}

/** Undoes setUpMacvtap from its record: the link goes, the interface gets its MAC, addresses and routes back. */
export async function removeMacvtap(
  cmds: NetnsCommands,
  m: MacvtapRecord & { link: string; lower: string },
  step: (what: string, run: () => Promise<unknown>) => Promise<void>,
): Promise<void> {
  if (m.index) await step(`macvtap ${m.link}`, () => cmds.ip(['link', 'del', 'dev', m.link]));
  await step(`MAC of ${m.lower}`, () => cmds.ip(['link', 'set', 'dev', m.lower, 'address', m.peerMac]));
  for (const a of m.addresses) {
    await step(`address ${addrArg(a)} of ${m.lower}`, () =>
      cmds.ip(['addr', 'replace', addrArg(a), 'dev', m.lower, ...(a.family === 6 ? ['nodad'] : [])]),
    );
  }
  for (const r of m.routes) {
    const args = routeRestoreArgs(r);
    if (args) await step(`route ${r.dest || 'default'} of ${m.lower}`, () => cmds.ip(args));
  }
}
