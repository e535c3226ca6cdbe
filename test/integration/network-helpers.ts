// Test netns helpers: every netns made here is named kt-<random> and removed by destroyAll, even on failure,
// together with the servers started in them.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { logger } from '../../src/common/log.js';
import {
  type Endpoint,
  type InternetworkingModel,
  type NetworkRecord,
  createEndpoints,
  emptyRecord,
  netnsCommands,
  scanNetns,
} from '../../src/resource/network/index.js';

export function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', timeout: 10_000 });
}

export class TestNetns {
  readonly made: string[] = [];
  private servers: ChildProcess[] = [];
  add(): { name: string; path: string } {
    const name = `kt-${randomBytes(4).toString('hex')}`;
    sh('ip', ['netns', 'add', name]);
    this.made.push(name);
    return { name, path: `/var/run/netns/${name}` };
  }
  exec(ns: string, cmd: string[]): string {
    return sh('ip', ['netns', 'exec', ns, ...cmd]);
  }
  /** `ip -n <ns> <args>` */
  ip(ns: string, args: string[]): string {
    return sh('ip', ['-n', ns, ...args]);
  }
  /** A veth pair: `name` in `ns` (with `mac`/`mtu` if given), `peerName` in `peerNs`. */
  veth(
    ns: string,
    name: string,
    peerNs: string,
    peerName: string,
    o: { mac?: string; mtu?: number } = {},
  ): void {
    const extra = [...(o.mtu ? ['mtu', String(o.mtu)] : []), ...(o.mac ? ['address', o.mac] : [])];
    this.ip(ns, ['link', 'add', name, ...extra, 'type', 'veth', 'peer', 'name', peerName, 'netns', peerNs]);
  }
  /**
   * Runs Node code in `ns` (under `ip netns exec`) until destroyAll; resolves once it prints its first line
   * (its "listening"), rejects if it exits first.
   */
  async serve(ns: string, code: string, what: string): Promise<void> {
    const s = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', code], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    this.servers.push(s);
    await new Promise<void>((resolve, reject) => {
      s.stdout?.once('data', () => resolve());
      s.once('exit', (c) => reject(new Error(`${what} exited (${c}) before listening`)));
    });
  }
  /** Deleting a netns deletes the veths, taps, qdiscs and filters inside it. */
  destroyAll(): void {
    for (const s of this.servers.splice(0)) s.kill('SIGKILL');
    for (const n of this.made.splice(0)) {
      try {
        sh('ip', ['netns', 'del', n]);
      } catch {
        // already gone
      }
    }
  }
}

export const isRoot = process.getuid?.() === 0;

/**
 * The first frame read from a tap/macvtap fd (what QEMU would read) after `trigger` runs (a ping from a peer
 * netns; its failure is ignored: nothing answers inside the "VM", only the frame matters). Rejects after 5 s.
 */
export function readFrameAfter(fd: number, trigger: () => void): Promise<Buffer> {
  return new Promise<Buffer>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('no frame on the tap within 5 s')), 5000);
    const buf = Buffer.alloc(65536);
    fs.read(fd, buf, 0, buf.length, null, (e, n) => {
      clearTimeout(t);
      if (e) reject(e);
      else resolve(buf.subarray(0, n));
    });
    try {
      trigger();
    } catch {
      // see above
    }
  });
}

/**
 * The first endpoint of the netns at `netnsPath` under `model`, prepared, with the record it persisted last
 * (what `shim delete` would read after a crash).
 */
export async function preparedEndpoint(
  netnsPath: string,
  model: InternetworkingModel,
): Promise<{ ep: Endpoint; saved: () => NetworkRecord }> {
  const cmds = netnsCommands(netnsPath);
  const scan = await scanNetns(cmds);
  let saved: NetworkRecord | undefined;
  const [ep] = createEndpoints(scan.interfaces, model, {
    cmds,
    log: logger(`test-${model}`),
    record: emptyRecord(netnsPath),
    persist: async (r) => {
      saved = structuredClone(r);
    },
  });
  if (!ep) throw new Error(`no endpoint in ${netnsPath} under ${model}`);
  await ep.prepare();
  return {
    ep,
    saved: () => {
      if (!saved) throw new Error('the endpoint persisted no record');
      return saved;
    },
  };
}
