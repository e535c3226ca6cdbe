// The one "nothing left on the host" check of the e2e tests, as vitest hooks, over host-snapshot.ts.
import { afterAll, afterEach, beforeAll, beforeEach, expect } from 'vitest';
import { emptySnapshot, snapshotHost, waitNoLeftovers } from './host-snapshot.js';

export * from './host-snapshot.js';

export interface LeftoverCheckOptions {
  /** `test`: a snapshot before each test, checked after it; `file`: before the file's first hook, after its last. */
  per: 'test' | 'file';
  /** The ids the tests used (sandbox and container ids), read at check time. */
  ids?: () => readonly string[];
  timeoutMs?: number;
  /** Called with what was left, before the check fails (force-clean, dump logs). */
  onLeft?: (left: string[]) => Promise<void> | void;
}

/**
 * Registers the leftover check as vitest hooks. Call it first in the file (before other hooks): after-hooks
 * run in reverse order, so the check then runs after the file's own clean-up.
 */
export function useLeftoverCheck(opts: LeftoverCheckOptions): void {
  let before = emptySnapshot();
  const take = () => {
    before = snapshotHost();
  };
  const check = async () => {
    const ids = opts.ids?.() ?? [];
    const left = await waitNoLeftovers(ids, { before, timeoutMs: opts.timeoutMs });
    if (left.length) await opts.onLeft?.(left);
    expect(left.join('\n'), 'left on the host after the test').toBe('');
  };
  if (opts.per === 'test') {
    beforeEach(take);
    afterEach(check);
  } else {
    beforeAll(take);
    afterAll(check);
  }
}
