// Hermetic: the agent watchdog declares a VM hung when Health.Check misses its deadline, not before; a stopping
// sandbox ends it quietly.
import { describe, expect, it } from 'vitest';
import { logger } from '../../src/common/log.js';
import { watchAgent } from '../../src/runtime/agent-watchdog.js';

describe('agent watchdog', () => {
  it('reports a hung VM after the first missed check, with the deadline and the error', async () => {
    let n = 0;
    const dead: string[] = [];
    const ac = new AbortController();
    await watchAgent({
      check: async (t) => {
        n++;
        expect(t).toBe(50);
        if (n === 3) throw new Error('DeadlineExceeded: Health.Check');
      },
      timeoutMs: 50,
      intervalMs: 5,
      signal: ac.signal,
      onDead: (r) => dead.push(r),
      log: logger('test'),
    });
    expect(n).toBe(3);
    expect(dead).toHaveLength(1);
    expect(dead[0]).toMatch(/did not answer 1 health checks in a row.*DeadlineExceeded: Health.Check.*hung/);
  });

  it('tolerates misses below the threshold and stops when the sandbox stops', async () => {
    let n = 0;
    const ac = new AbortController();
    const dead: string[] = [];
    const done = watchAgent({
      check: async () => {
        n++;
        if (n % 2) throw new Error('slow');
        if (n >= 6) ac.abort();
      },
      timeoutMs: 50,
      intervalMs: 5,
      failures: 2,
      signal: ac.signal,
      onDead: (r) => dead.push(r),
      log: logger('test'),
    });
    await done;
    expect(n).toBe(6);
    expect(dead).toEqual([]);
  });
});
