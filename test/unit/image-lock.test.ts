import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { withLock } from '../../src/image/lock.js';

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kata-lock-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

/** withLock with nobody told about the wait: for the holders a test only times. */
const tryLock = <T>(file: string, timeoutMs: number, fn: () => Promise<T>) =>
  withLock(file, timeoutMs, () => {}, fn);

describe('image build lock (flock)', () => {
  it('makes a second holder wait until the first is done, telling it once', async () => {
    const file = path.join(dir, '.build.lock');
    const order: string[] = [];
    let release!: () => void;
    const held = new Promise<void>((r) => {
      release = r;
    });
    const first = withLock(
      file,
      5000,
      () => order.push('first waited'),
      async () => {
        order.push('first in');
        await held;
        order.push('first out');
      },
    );
    await new Promise((r) => setTimeout(r, 50));
    let waits = 0;
    const second = withLock(
      file,
      5000,
      () => waits++,
      async () => {
        order.push('second in');
      },
    );
    await new Promise((r) => setTimeout(r, 300));
    expect(order).toEqual(['first in']);
    release();
    await Promise.all([first, second]);
    expect(order).toEqual(['first in', 'first out', 'second in']);
    expect(waits).toBe(1);
    expect(fs.existsSync(file), 'the lock file goes with the last holder').toBe(false);
  });

  it('gives up at the deadline naming the lock, and releases it on error', async () => {
    const file = path.join(dir, '.build.lock');
    let release!: () => void;
    const first = withLock(
      file,
      5000,
      () => {},
      () =>
        new Promise<void>((r) => {
          release = r;
        }),
    );
    await new Promise((r) => setTimeout(r, 50));
    await expect(tryLock(file, 300, async () => 1)).rejects.toThrow(/lock .*\.build\.lock/);
    release();
    await first;
    await expect(
      tryLock(file, 300, async () => {
        throw new Error('build failed');
      }),
    ).rejects.toThrow('build failed');
    expect(await tryLock(file, 300, async () => 'free again')).toBe('free again');
  });

  it('is free again once a holder process is killed (no stale lock to take over)', async () => {
    const file = path.join(dir, '.build.lock');
    // -o: only flock itself holds the lock (sleep does not inherit it), so killing flock frees it.
    const holder = spawn('flock', ['-o', file, 'sleep', '30'], { stdio: 'ignore', detached: true });
    const killAll = () => {
      try {
        process.kill(-(holder.pid ?? 0), 'SIGKILL');
      } catch {
        // already gone
      }
    };
    try {
      await new Promise((r) => setTimeout(r, 300));
      await expect(tryLock(file, 300, async () => 1)).rejects.toThrow(/timed out/);
      const exited = new Promise((r) => holder.once('exit', r));
      killAll();
      await exited;
      expect(await tryLock(file, 2000, async () => 'taken')).toBe('taken');
    } finally {
      killAll();
    }
  });
});
