import { describe, expect, it } from 'vitest';
import { PollTimeoutError, pollUntil, sleep } from '../../src/common/poll.js';
import { checkId, idProblem } from '../../src/contract/index.js';

describe('pollUntil', () => {
  it('resolves with the first truthy value', async () => {
    let n = 0;
    await expect(
      pollUntil(() => (++n >= 3 ? n : undefined), { timeoutMs: 1000, intervalMs: 1, what: 'n' }),
    ).resolves.toBe(3);
  });
  it('rejects at the deadline naming what it waited for', async () => {
    await expect(pollUntil(() => false, { timeoutMs: 30, intervalMs: 5, what: 'the moon' })).rejects.toThrow(
      /waiting for the moon/,
    );
    await expect(pollUntil(() => false, { timeoutMs: 10, what: 'x' })).rejects.toBeInstanceOf(
      PollTimeoutError,
    );
  });
  it('stops when the signal aborts', async () => {
    const ac = new AbortController();
    setTimeout(() => ac.abort(new Error('cancelled')), 10);
    await expect(pollUntil(() => false, { timeoutMs: 5000, signal: ac.signal, what: 'x' })).rejects.toThrow(
      'cancelled',
    );
    await expect(sleep(10_000, AbortSignal.abort(new Error('now')))).rejects.toThrow('now');
  });
  it('passes a probe error through', async () => {
    await expect(
      pollUntil(
        () => {
          throw new Error('probe broke');
        },
        { timeoutMs: 100, what: 'x' },
      ),
    ).rejects.toThrow('probe broke');
  });
});

describe('id grammar', () => {
  it('accepts what containerd accepts', () => {
    for (const id of ['a', 'abc-1.2_3', 'f'.repeat(64), 'x'.repeat(76)])
      expect(idProblem(id)).toBeUndefined();
  });
  it('rejects the rest with a reason', () => {
    for (const id of ['', '-a', 'a-', 'a..b', '../x', 'a/b', 'x'.repeat(77), 'a b']) {
      expect(() => checkId('container', id)).toThrow(/invalid container id/);
    }
  });
});
