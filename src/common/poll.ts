// One way to wait for a condition: poll with a deadline, cancellable. Replaces hand-rolled sleep loops.

export class PollTimeoutError extends Error {
  override name = 'PollTimeoutError';
}

export interface PollOptions {
  /** Give up after this many ms (measured from the call). */
  timeoutMs: number;
  /** Delay between tries, ms (default 20). */
  intervalMs?: number;
  /** Stops the wait early; the promise rejects with the signal's reason. */
  signal?: AbortSignal;
  /** What is being waited for, for the timeout error. */
  what: string;
}

/** Resolves after `ms`, or rejects when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * Calls `probe` until it returns a value other than undefined/false and resolves with it; rejects with
 * PollTimeoutError naming `what` at the deadline. An error thrown by `probe` ends the wait with that error.
 */
export async function pollUntil<T>(
  probe: () => T | undefined | false | Promise<T | undefined | false>,
  opts: PollOptions,
): Promise<T> {
  const deadline = Date.now() + opts.timeoutMs;
  const interval = opts.intervalMs ?? 20;
  for (;;) {
    if (opts.signal?.aborted) throw opts.signal.reason;
    const v = await probe();
    if (v !== undefined && v !== false) return v;
    const left = deadline - Date.now();
    if (left <= 0)
      throw new PollTimeoutError(`timed out after ${opts.timeoutMs} ms waiting for ${opts.what}`);
    await sleep(Math.min(interval, left), opts.signal);
  }
}
