import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  decodeWaitStatus,
  runTracked,
  startReaper,
  stopReaper,
  waitForExit,
} from '../../src/agent/reaper.js';

/** Starts an orphan: a shell backgrounds `script` and exits, so the orphan is reparented to us. */
async function orphan(script: string): Promise<number> {
  const r = await runTracked('sh', ['-c', `sh -c '${script}' </dev/null >/dev/null 2>&1 & echo $!`]);
  return Number(r.stdout.trim());
}

describe('reaper', () => {
  beforeAll(() => startReaper({ pollMs: 50 }));
  afterAll(() => stopReaper());

  it('decodes wait statuses like a shell does', () => {
    expect(decodeWaitStatus(7 << 8)).toEqual({ exitCode: 7, signal: null });
    expect(decodeWaitStatus(9)).toEqual({ exitCode: 137, signal: 9 });
  });

  it('collects the exit code of a reparented process', async () => {
    const pid = await orphan('sleep 0.2; exit 9');
    expect(await waitForExit(pid)).toEqual({ exitCode: 9, signal: null });
  });

  it('reports 128+signal for a killed orphan', async () => {
    const pid = await orphan('exec sleep 30'); // exec: the pid killed is sleep's, so nothing outlives the test
    const waiting = waitForExit(pid);
    process.kill(pid, 'SIGKILL');
    expect(await waiting).toEqual({ exitCode: 137, signal: 9 });
  });

  it('keeps the status of an orphan nobody waited for yet', async () => {
    // It outlives its parent sh a moment: one that exits first can be reaped by that sh, never reaching us.
    const pid = await orphan('sleep 0.1; exit 3');
    await new Promise((r) => setTimeout(r, 500)); // reaped meanwhile as an unknown orphan
    expect(await waitForExit(pid)).toEqual({ exitCode: 3, signal: null });
  });

  it('never steals the status of children spawned by child_process, even untracked ones', async () => {
    const codes = await Promise.all(
      Array.from({ length: 25 }, (_, i) => {
        void orphan(`exit ${i}`); // orphans exiting at the same time
        return new Promise<number | null>((resolve) => {
          const c = spawn('sh', ['-c', `exit ${i}`]);
          c.on('exit', (code) => resolve(code));
        });
      }),
    );
    expect(codes).toEqual(Array.from({ length: 25 }, (_, i) => i));
  });

  it('refuses to wait for a process that is not its child', async () => {
    await expect(waitForExit(1)).rejects.toThrow(/not a child/);
  });
});
