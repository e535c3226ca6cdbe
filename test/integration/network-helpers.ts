// Test netns helpers: every netns made here is named kt-<random> and removed by destroyAll, even on failure,
// together with the servers started in them.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';

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
