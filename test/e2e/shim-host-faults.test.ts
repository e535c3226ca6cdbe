// Faults of the host around running kata sandboxes. containerd crashes and comes back (an upgrade, an OOM kill
// of containerd): the shims keep their VMs, the new containerd reconnects to them from its state, and nothing is
// lost: a running task stays usable (exec, kill, delete), and a task that exited while containerd was away is
// reported with its real exit status. The host's state dir (/run/kata) is full during Create: a clear error and
// nothing half-made. After each test nothing is left (shim-suite's leftover check).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { PERSIST_ROOT } from '../../src/persist/index.js';
import { useKataSuite } from './shim-suite.js';

const suite = useKataSuite();

describe('containerd killed and restarted under running kata sandboxes', () => {
  it('leaves a running task usable: exec, kill and delete work through the new containerd', async () => {
    const cid = suite.id('ctrd-restart');
    const r = await suite.k.run(['-d', suite.k.image, cid, 'sleep', '300']);
    expect(r.code, suite.explain(r)).toBe(0);
    const before = suite.k.ctrd.pid;
    await suite.k.ctrd.restart();
    expect(suite.k.ctrd.pid).not.toBe(before);
    await suite.waitTaskStatus(cid, 'RUNNING', 30_000);
    const exec = await suite.k.ctrd.ctr(['task', 'exec', '--exec-id', 'after', cid, 'echo', 'still here']);
    expect(exec.code, suite.explain(exec)).toBe(0);
    expect(exec.stdout.trim()).toBe('still here');
    const kill = await suite.k.ctrd.ctr(['task', 'kill', '-s', 'SIGKILL', cid]);
    expect(kill.code, suite.explain(kill)).toBe(0);
    await suite.waitTaskStatus(cid, 'STOPPED', 20_000);
    const del = await suite.k.ctrd.ctr(['task', 'delete', cid]);
    expect(del.code, suite.explain(del)).toBe(0);
    expect(del.stdout + del.stderr).toMatch(/137/);
    expect((await suite.k.ctrd.ctr(['container', 'delete', cid])).code).toBe(0);
  });

  it('reports an exit that happened while containerd was down, with its status', async () => {
    const cid = suite.id('ctrd-away');
    // The process exits on its own a few seconds in; containerd is down from before then until after.
    const r = await suite.k.run(['-d', suite.k.image, cid, 'sh', '-c', 'sleep 4; exit 7']);
    expect(r.code, suite.explain(r)).toBe(0);
    await suite.k.ctrd.restart(8000);
    await suite.waitTaskStatus(cid, 'STOPPED', 30_000);
    const del = await suite.k.ctrd.ctr(['task', 'delete', cid]);
    expect(del.code, suite.explain(del)).toBe(0);
    expect(del.stdout + del.stderr).toMatch(/\b7\b/);
    expect((await suite.k.ctrd.ctr(['container', 'delete', cid])).code).toBe(0);
  });
});

describe('a full /run/kata (a small tmpfs mounted over it) during Create', () => {
  it('fails the run naming the state dir and the cause, and leaves nothing', async () => {
    const cid = suite.id('disk-full');
    fs.mkdirSync(PERSIST_ROOT, { recursive: true });
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'kata-ts-test-full', PERSIST_ROOT]);
    try {
      // Fill it: the sandbox's state cannot be written.
      const filler = path.join(PERSIST_ROOT, 'filler');
      try {
        fs.writeFileSync(filler, Buffer.alloc(1 << 20));
      } catch (e) {
        expect((e as NodeJS.ErrnoException).code).toBe('ENOSPC');
      }
      const r = await suite.k.run(['--rm', suite.k.image, cid, 'true'], { timeoutMs: 120_000 });
      await suite.k.ctrd.ctr(['container', 'delete', cid]);
      expect(r.code, suite.explain(r)).not.toBe(0);
      expect(r.stderr, suite.explain(r)).toMatch(/ENOSPC|no space left/i);
      expect(r.stderr, suite.explain(r)).toContain(PERSIST_ROOT);
      expect(fs.readdirSync(PERSIST_ROOT), 'only the filler is left in the state dir').toEqual(['filler']);
    } finally {
      execFileSync('umount', [PERSIST_ROOT]);
    }
  });
});
