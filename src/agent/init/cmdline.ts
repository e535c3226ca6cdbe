// The agent's options, read from the guest kernel's command line as Kata's agent does (`agent.<key>[=value]`).

export type AgentLogLevel = 'debug' | 'info' | 'warn' | 'error';

/** The agent's options, from the kernel command line (as Kata's agent: `agent.<key>[=value]`). */
export interface AgentConfig {
  logLevel: AgentLogLevel;
  /** `agent.debug_console`: a shell on the virtio console hvc0 (or ttyS1). */
  debugConsole: boolean;
  /** `agent.hostname=NAME` (until CreateSandbox sets the sandbox's). */
  hostname: string;
  /** `agent.server_addr=unix:///path`: an extra listener, used when the agent runs on a host for tests. */
  serverAddr?: string;
  /** `agent.vsock_port=N` (default 1024, Kata's agent port). */
  vsockPort: number;
}

const LOG_LEVELS: Record<string, AgentLogLevel> = {
  trace: 'debug',
  debug: 'debug',
  info: 'info',
  warn: 'warn',
  warning: 'warn',
  error: 'error',
  critical: 'error',
  fatal: 'error',
};

/** Parses the `agent.*` options out of a kernel command line; unknown or malformed ones are reported. */
export function parseKernelCmdline(cmdline: string): { config: AgentConfig; warnings: string[] } {
  const config: AgentConfig = { logLevel: 'info', debugConsole: false, hostname: 'kata', vsockPort: 1024 };
  const warnings: string[] = [];
  for (const param of cmdline.trim().split(/\s+/)) {
    if (!param.startsWith('agent.')) continue;
    const eq = param.indexOf('=');
    const key = eq < 0 ? param.slice(6) : param.slice(6, eq);
    const value = eq < 0 ? undefined : param.slice(eq + 1);
    switch (key) {
      case 'log': {
        const level = value ? LOG_LEVELS[value.toLowerCase()] : undefined;
        if (level) config.logLevel = level;
        else warnings.push(`agent.log: unknown level ${JSON.stringify(value)}`);
        break;
      }
      case 'debug_console':
        config.debugConsole = value === undefined || value === '1' || value === 'true';
        break;
      case 'hostname':
        if (value && /^[A-Za-z0-9][A-Za-z0-9.-]{0,63}$/.test(value)) config.hostname = value;
        else warnings.push(`agent.hostname: not a valid host name: ${JSON.stringify(value)}`);
        break;
      case 'server_addr':
        if (value?.startsWith('unix://') || value?.startsWith('vsock://')) config.serverAddr = value;
        else warnings.push(`agent.server_addr: expected unix:// or vsock://, got ${JSON.stringify(value)}`);
        break;
      case 'vsock_port': {
        const port = Number(value);
        if (Number.isInteger(port) && port > 0 && port < 2 ** 32) config.vsockPort = port;
        else warnings.push(`agent.vsock_port: not a port number: ${JSON.stringify(value)}`);
        break;
      }
      default:
        // Kata has many more agent.* options (timeouts, tracing, ...); they do not apply here.
        warnings.push(`ignoring unsupported option ${param}`);
    }
  }
  return { config, warnings };
}
