// The per-file harness of the shim e2e tests: one private containerd for the file, ids for the containers a test
// makes, and after each test the check that nothing is left on the host (test/helpers/leftovers.ts: nothing
// naming those ids, nothing new since the test began). When something is, it is force-cleaned too, so that one
// failure does not leak into the next test.
import { afterAll, beforeAll, beforeEach } from 'vitest';
import { pollUntil } from '../../src/common/poll.js';
import { useLeftoverCheck } from '../helpers/leftovers.js';
import { type KataSetup, newId, setupKata } from './shim-fixtures.js';

export interface KataSuite {
  /** The file's containerd and guest image (set up in beforeAll). */
  readonly k: KataSetup;
  /** A fresh container id, checked for leftovers after the test. */
  id(prefix: string): string;
  /** A failed ctr call explained for an assertion message: exit, output tails and containerd's log tail. */
  explain(r: CtrOutcome): string;
  explain(what: string, r: CtrOutcome): string;
  /** Waits until `ctr task ls` shows the task in `status` (RUNNING, STOPPED, ...); fails with the list. */
  waitTaskStatus(cid: string, status: string, timeoutMs: number): Promise<void>;
}

interface CtrOutcome {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function useKataSuite(): KataSuite {
  let setup: KataSetup | undefined;
  let used: string[] = [];
  beforeAll(async () => {
    setup = await setupKata();
  });
  beforeEach(() => {
    used = [];
  });
  useLeftoverCheck({
    per: 'test',
    ids: () => used,
    onLeft: async () => {
      if (!setup) return;
      console.error(setup.ctrd.readLog().slice(-20_000));
      for (const i of used) {
        await setup.ctrd.ctr(['task', 'kill', '-s', 'SIGKILL', i]);
        await setup.ctrd.ctr(['task', 'delete', '--force', i]);
        await setup.ctrd.ctr(['container', 'delete', i]);
      }
    },
  });
  afterAll(async () => {
    await setup?.close();
  });
  return {
    get k() {
      if (!setup) throw new Error('the kata suite is not set up yet (use it inside tests)');
      return setup;
    },
    id(prefix: string) {
      const i = newId(prefix);
      used.push(i);
      return i;
    },
    explain(whatOrR: string | CtrOutcome, maybeR?: CtrOutcome) {
      const [what, r] = typeof whatOrR === 'string' ? [`${whatOrR}: `, maybeR!] : ['', whatOrR];
      const log = setup?.ctrd.readLog().slice(-8000) ?? '';
      return `${what}ctr exit ${r.code}\nstdout: ${r.stdout.slice(-2000)}\nstderr: ${r.stderr.slice(-2000)}\n--- containerd log ---\n${log}`;
    },
    async waitTaskStatus(cid: string, status: string, timeoutMs: number) {
      if (!setup) throw new Error('the kata suite is not set up yet (use it inside tests)');
      const { ctrd } = setup;
      let ls: CtrOutcome = { code: null, stdout: '', stderr: '' };
      await pollUntil(
        async () => {
          ls = await ctrd.ctr(['task', 'ls']);
          return new RegExp(`^${cid}\\s+\\d+\\s+${status}\\b`, 'm').test(ls.stdout) || undefined;
        },
        { timeoutMs, intervalMs: 250, what: `${cid} to show ${status}` },
      ).catch((e: Error) => {
        throw new Error(`${e.message}\n${this.explain('task ls', ls)}`);
      });
    },
  };
}
