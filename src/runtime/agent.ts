// The host's connection to the guest agent: dial the endpoint the hypervisor gives, then ask Health.Check until
// the agent answers or the dial timeout passes (the guest is still booting until then).
import type { Logger } from '../common/log.js';
import type { AgentEndpoint } from '../hypervisor/hypervisor.js';
import { AgentService } from '../protocols/gen/agent_pb.js';
import { Health } from '../protocols/gen/health_pb.js';
import { type Client, TtrpcClient, createClient } from '../protocols/ttrpc/index.js';
import { RuntimeError, errorMessage } from './errors.js';

export type AgentClient = Client<typeof AgentService>;

export interface AgentConnection {
  agent: AgentClient;
  close(): void;
  /** Called once when the connection drops (VM gone, agent crashed). */
  onClose(listener: (err: Error) => void): void;
}

export interface ConnectAgentOptions {
  /** Total time to wait for the agent (config agent.dial_timeout, in ms). */
  timeoutMs: number;
  log: Logger;
  /** Aborted when waiting makes no sense any more (the VMM exited); the reason is in the error. */
  signal?: AbortSignal;
  /** Opens a raw connection for non-unix endpoints (vsock); injected so this module stays free of FFI. */
  dialVsock?: (cid: number, port: number) => Promise<TtrpcClient>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

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
  const aborted = () => {
    if (opts.signal?.aborted) {
      conn?.close();
      throw new RuntimeError(
        'Unavailable',
        `waiting for the agent on ${describe(ep)}: ${errorMessage(opts.signal.reason)}`,
      );
    }
  };
  while (Date.now() < deadline) {
    aborted();
    const left = deadline - Date.now();
    if (!conn || conn.closed) {
      try {
        conn = await dial(ep, opts, Math.min(left, 2000));
      } catch (e) {
        lastErr = errorMessage(e);
        await sleep(50);
        continue;
      }
    }
    try {
      // A guest still booting has not opened its port: the request waits in QEMU's chardev until it does.
      await createClient(Health, conn).check(
        { service: '' },
        { timeoutMs: Math.max(100, Math.min(left, 3000)), signal: opts.signal },
      );
      opts.log.debug({ endpoint: describe(ep) }, 'agent answered Health.Check');
      const c = conn;
      return {
        agent: createClient(AgentService, c),
        close: () => c.close(),
        onClose: (l) => c.onClose(l),
      };
    } catch (e) {
      lastErr = errorMessage(e);
      aborted();
      if (conn.closed) await sleep(50);
    }
  }
  conn?.close();
  throw new RuntimeError(
    'DeadlineExceeded',
    `the agent did not answer on ${describe(ep)} within ${opts.timeoutMs} ms (last error: ${lastErr})`,
  );
}
