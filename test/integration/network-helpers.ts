// Test netns helpers: every netns made here is named kt-<random> and removed by destroyAll, even on failure.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';

export function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', timeout: 10_000 });
}

export class TestNetns {
  readonly made: string[] = [];
  add(): { name: string; path: string } {
    const name = `kt-${randomBytes(4).toString('hex')}`;
    sh('ip', ['netns', 'add', name]);
    this.made.push(name);
    return { name, path: `/var/run/netns/${name}` };
  }
  exec(ns: string, cmd: string[]): string {
    return sh('ip', ['netns', 'exec', ns, ...cmd]);
  }
  /** Deleting a netns deletes the veths, taps, qdiscs and filters inside it. */
  destroyAll(): void {
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
