// A VM whose agent stops answering is a dead VM: the QEMU process may still exist (stopped, livelocked, its guest
// hung), but no exit would ever reach containerd. Health.Check every interval with agent.kata's
// health_check_request_timeout_ms (90 s by default, as runtime-rs); a VM whose agent misses it is treated as
// gone (containers exit 255, the VM is killed), as when QEMU dies.
import type { Logger } from '../common/log.js';
import { sleep } from '../common/poll.js';
import { type AgentConnection, watchOomEvents } from './agent.js';
import { errorMessage } from './errors.js';

export interface AgentWatchdogOptions {
  /** One Health.Check with this deadline. */
  check(timeoutMs: number, signal: AbortSignal): Promise<void>;
  signal: AbortSignal;
  onDead(reason: string): void;
  log: Logger;
  /** The deadline of one check (config agent.kata health_check_request_timeout_ms). */
  timeoutMs: number;
  intervalMs?: number;
  failures?: number;
}

export const AGENT_WATCHDOG = { intervalMs: 5_000, failures: 1 };

export async function watchAgent(o: AgentWatchdogOptions): Promise<void> {
  const intervalMs = o.intervalMs ?? AGENT_WATCHDOG.intervalMs;
  const { timeoutMs } = o;
  const failures = o.failures ?? AGENT_WATCHDOG.failures;
  let missed = 0;
  let last = '';
  while (!o.signal.aborted) {
    const stopped = await sleep(intervalMs, o.signal).then(
      () => false,
      () => true,
    );
    if (stopped) return;
    try {
      await o.check(timeoutMs, o.signal);
      if (missed) o.log.info({ missed }, 'the agent answers again');
      missed = 0;
    } catch (e) {
      if (o.signal.aborted) return;
      missed++;
      last = errorMessage(e);
      o.log.warn({ missed, err: last }, 'the agent did not answer Health.Check');
      if (missed >= failures) {
        o.onDead(
          `the agent did not answer ${missed} health checks in a row (${Math.round(((intervalMs + timeoutMs) * missed) / 1000)} s; last: ${last}): the VM is hung`,
        );
        return;
      }
    }
  }
}

/** A running sandbox's two agent watches: OOM events to report, and the health check that tells a dead VM. */
export function watchSandboxAgent(
  conn: AgentConnection,
  o: Omit<AgentWatchdogOptions, 'check'> & { onOom: (containerId: string) => void },
): void {
  void watchOomEvents(conn.agent, { signal: o.signal, onOom: o.onOom, log: o.log });
  void watchAgent({ ...o, check: (t, signal) => conn.check(t, signal) });
}
