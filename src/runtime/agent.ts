// The host's connection to the guest agent: dial the endpoint the hypervisor gives, then ask Health.Check until
// the agent answers or the dial timeout passes (the guest is still booting until then).
import type { Logger } from '../common/log.js';
import { PollTimeoutError, pollUntil, sleep } from '../common/poll.js';
import type { AgentEndpoint } from '../hypervisor/hypervisor.js';
import { AgentService } from '../protocols/gen/agent_pb.js';
import { Health } from '../protocols/gen/health_pb.js';
import { type Client, TtrpcClient, createClient } from '../protocols/ttrpc/index.js';
import { RuntimeError, errorMessage } from './errors.js';

export type AgentClient = Client<typeof AgentService>;

const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;
/**
 * Calls that wait by design: a process's exit, its output, stdin under back-pressure, the OOM long poll. They end
 * when the connection drops (the VM died) or the sandbox stops (their AbortSignal); every other call has a deadline.
 */
export const UNBOUNDED_AGENT_CALLS = ['waitProcess', 'readStdout', 'readStderr', 'writeStdin', 'getOOMEvent'];

export interface AgentConnection {
  agent: AgentClient;
  close(): void;
  /** Called once when the connection drops (VM gone, agent crashed). */
  onClose(listener: (err: Error) => void): void;
  /** One Health.Check (the watchdog's probe). */
  check(timeoutMs: number, signal?: AbortSignal): Promise<void>;
}

export interface ConnectAgentOptions {
  /** Total time to wait for the agent (config agent.dial_timeout, in ms). */
  timeoutMs: number;
  log: Logger;
  /** Aborted when waiting makes no sense any more (the VMM exited); the reason is in the error. */
  signal?: AbortSignal;
  /** Deadline of every agent call that sets none (Kata's request_timeout_ms; default 30 s). */
  requestTimeoutMs?: number;
  /** Opens a raw connection for non-unix endpoints (vsock); injected so this module stays free of FFI. */
  dialVsock?: (cid: number, port: number) => Promise<TtrpcClient>;
}

function describe(ep: AgentEndpoint): string {
  return ep.kind === 'vsock'
    ? `vsock cid ${ep.cid} port ${ep.port}`
    : `virtio-serial socket ${ep.socketPath}`;
}

async function dial(ep: AgentEndpoint, opts: ConnectAgentOptions, timeoutMs: number): Promise<TtrpcClient> {
  if (ep.kind === 'vsock') {
    if (!opts.dialVsock) throw new RuntimeError('Unimplemented', 'no vsock dialer available on this host');
    return opts.dialVsock(ep.cid, ep.port);
  }
  return TtrpcClient.connect(ep.socketPath, { timeoutMs, peer: `agent (${describe(ep)})` });
}

export async function connectAgent(ep: AgentEndpoint, opts: ConnectAgentOptions): Promise<AgentConnection> {
  const deadline = Date.now() + opts.timeoutMs;
  let lastErr = 'no attempt made';
  let conn: TtrpcClient | undefined;
  // One try: dial when there is no live connection, then Health.Check. A guest still booting has not opened its
  // port: the request waits in QEMU's chardev until it does (or the call's timeout).
  const attempt = async (): Promise<TtrpcClient | undefined> => {
    const left = Math.max(deadline - Date.now(), 1);
    if (!conn || conn.closed) {
      try {
        conn = await dial(ep, opts, Math.min(left, 2000));
      } catch (e) {
        lastErr = errorMessage(e);
        return undefined;
      }
    }
    try {
      await createClient(Health, conn).check(
        { service: '' },
        { timeoutMs: Math.max(100, Math.min(left, 3000)), signal: opts.signal },
      );
      return conn;
    } catch (e) {
      lastErr = errorMessage(e);
      return undefined;
    }
  };
  let ready: TtrpcClient;
  try {
    ready = await pollUntil(attempt, {
      timeoutMs: opts.timeoutMs,
      intervalMs: 50,
      signal: opts.signal,
      what: `the agent on ${describe(ep)}`,
    });
  } catch (e) {
    conn?.close();
    if (opts.signal?.aborted) {
      throw new RuntimeError(
        'Unavailable',
        `waiting for the agent on ${describe(ep)}: ${errorMessage(opts.signal.reason)}`,
      );
    }
    if (!(e instanceof PollTimeoutError)) throw e;
    throw new RuntimeError(
      'DeadlineExceeded',
      `the agent did not answer on ${describe(ep)} within ${opts.timeoutMs} ms (last error: ${lastErr})`,
    );
  }
  opts.log.debug({ endpoint: describe(ep) }, 'agent answered Health.Check');
  return {
    agent: createClient(AgentService, ready, {
      timeoutMs: opts.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS,
      unbounded: UNBOUNDED_AGENT_CALLS,
    }),
    close: () => ready.close(),
    onClose: (l) => ready.onClose(l),
    check: async (timeoutMs, signal) => {
      await createClient(Health, ready).check({ service: '' }, { timeoutMs, signal });
    },
  };
}

/**
 * Forwards the agent's OOM events (GetOOMEvent, a long poll) until `signal` aborts; an agent without the call
 * ends the watch, other errors are retried after a pause.
 */
export async function watchOomEvents(
  agent: AgentClient,
  o: { signal: AbortSignal; onOom: (containerId: string) => void; log: Logger },
): Promise<void> {
  while (!o.signal.aborted) {
    try {
      const ev = await agent.getOOMEvent({});
      if (ev.containerId) o.onOom(ev.containerId);
    } catch (e) {
      const code = (e as { code?: number }).code;
      if (o.signal.aborted || code === 12 /* Unimplemented */) return;
      o.log.debug({ err: errorMessage(e) }, 'GetOOMEvent failed; retrying');
      const aborted = await sleep(1000, o.signal).then(
        () => false,
        () => true,
      );
      if (aborted) return;
    }
  }
}
