// Exits under load (issue 10): four sandboxes started in parallel while both cores are busy with synthetic load.
// Every exec must return with its output and status, every SIGKILL must end its task, and Delete must work.
// Before the fix some guests stopped reporting exits in this situation (an exec printed its output but never
// returned; a killed task stayed RUNNING).
import { type ChildProcess, spawn } from 'node:child_process';
import os from 'node:os';
import { afterEach, describe, expect, it } from 'vitest';
import { pollUntil } from '../../src/common/poll.js';
import { useKataSuite } from './shim-suite.js';

const suite = useKataSuite();
const SANDBOXES = Number(process.env.KATA_TS_LOAD_SANDBOXES ?? 4);

/** One busy loop per core, each in its own process, until stopped. */
function burnCpus(): ChildProcess[] {
  return os.cpus().map(() => spawn(process.execPath, ['-e', 'for(;;){}'], { stdio: 'ignore' }));
}

let burners: ChildProcess[] = [];
afterEach(() => {
  for (const b of burners) b.kill('SIGKILL');
  burners = [];
});

function explain(what: string, r: { code: number | null; stdout: string; stderr: string }): string {
  return `${what}: ctr exit ${r.code}\nstdout: ${r.stdout.slice(-1000)}\nstderr: ${r.stderr.slice(-1000)}`;
}

describe('sandboxes started in parallel on a loaded host', () => {
  it('report every exec exit and every kill', async () => {
    burners = burnCpus();
    const ids = Array.from({ length: SANDBOXES }, (_, i) => suite.id(`load${i}`));
    const runs = await Promise.all(
      ids.map((cid) => suite.k.run(['-d', suite.k.image, cid, 'sleep', '600'], { timeoutMs: 300_000 })),
    );
    runs.forEach((r, i) => expect(r.code, explain(`run ${ids[i]}`, r)).toBe(0));

    // Several short execs per sandbox, all in flight at once: each returns its output and status.
    const execs = ids.flatMap((cid) =>
      [0, 1, 2].map(async (n) => {
        const r = await suite.k.ctrd.ctr(
          ['task', 'exec', '--exec-id', `e${n}`, cid, 'sh', '-c', `echo out-${n}; exit ${n + 3}`],
          { timeoutMs: 120_000 },
        );
        return { cid, n, r };
      }),
    );
    for (const { cid, n, r } of await Promise.all(execs)) {
      expect(r.stdout, explain(`exec e${n} in ${cid}`, r)).toContain(`out-${n}`);
      expect(r.code, explain(`exec e${n} in ${cid}`, r)).toBe(n + 3);
    }

    // SIGKILL ends every task; Delete reports 137 (128 + SIGKILL).
    await Promise.all(ids.map((cid) => suite.k.ctrd.ctr(['task', 'kill', '-s', 'SIGKILL', cid])));
    await Promise.all(
      ids.map((cid) =>
        pollUntil(
          async () => {
            const ls = await suite.k.ctrd.ctr(['task', 'ls']);
            return new RegExp(`^${cid}\\s+\\d+\\s+STOPPED`, 'm').test(ls.stdout) || undefined;
          },
          { timeoutMs: 60_000, intervalMs: 250, what: `${cid} to show STOPPED after SIGKILL` },
        ),
      ),
    );
    for (const cid of ids) {
      const del = await suite.k.ctrd.ctr(['task', 'delete', cid]);
      expect(del.code, explain(`task delete ${cid}`, del)).toBe(0);
      expect(del.stdout + del.stderr).toMatch(/137/);
      expect((await suite.k.ctrd.ctr(['container', 'delete', cid])).code).toBe(0);
    }
  });

  it('report the exit of containers that end on their own right after start', async () => {
    burners = burnCpus();
    const ids = Array.from({ length: SANDBOXES }, (_, i) => suite.id(`short${i}`));
    const runs = await Promise.all(
      ids.map((cid, i) =>
        suite.k.run(['--rm', suite.k.image, cid, 'sh', '-c', `echo short-${i}; exit ${i + 10}`], {
          timeoutMs: 300_000,
        }),
      ),
    );
    runs.forEach((r, i) => {
      expect(r.stdout, explain(`run ${ids[i]}`, r)).toContain(`short-${i}`);
      expect(r.code, explain(`run ${ids[i]}`, r)).toBe(i + 10);
    });
  });
});
