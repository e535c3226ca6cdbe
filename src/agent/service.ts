// PLACEHOLDER (being replaced by the agent-RPC work): the agent's ttrpc services.
import type { AgentService } from '../protocols/gen/agent_pb.js';
import type { Health } from '../protocols/gen/health_pb.js';
import type { ServiceImpl } from '../protocols/ttrpc/index.js';

export interface AgentServiceOptions {
  /** Called when DestroySandbox asks the VM to power off (after containers are stopped). */
  onDestroySandbox?: () => void;
  /** Root under which the agent keeps container state (default /run/kata-agent). */
  stateDir?: string;
}

export interface AgentServices {
  agent: ServiceImpl<typeof AgentService>;
  health: ServiceImpl<typeof Health>;
  /** Stops every container and process (SIGTERM to the agent, DestroySandbox). */
  shutdown(): Promise<void>;
}

export function createAgentService(_opts: AgentServiceOptions = {}): AgentServices {
  return {
    agent: {},
    health: { check: () => ({ status: 1 }), version: () => ({ grpcVersion: 'ttrpc', agentVersion: '0.1.0' }) },
    shutdown: async () => {},
  };
}
