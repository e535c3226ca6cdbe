import { describe, expect, it } from 'vitest';
import { parseKernelCmdline } from '../../src/agent/init/cmdline.js';

describe('agent kernel command line', () => {
  it('has defaults without agent options', () => {
    const { config, warnings } = parseKernelCmdline('console=ttyS0 quiet panic=1\n');
    expect(config).toEqual({ logLevel: 'info', debugConsole: false, hostname: 'kata', vsockPort: 1024 });
    expect(warnings).toEqual([]);
  });

  it('reads Kata-style agent options', () => {
    const { config, warnings } = parseKernelCmdline(
      'console=ttyS0 agent.log=debug agent.debug_console agent.hostname=pod-1 agent.server_addr=unix:///run/a.sock agent.vsock_port=2048',
    );
    expect(config).toEqual({
      logLevel: 'debug',
      debugConsole: true,
      hostname: 'pod-1',
      serverAddr: 'unix:///run/a.sock',
      vsockPort: 2048,
    });
    expect(warnings).toEqual([]);
  });

  it('reports bad or unsupported options and keeps the defaults', () => {
    const { config, warnings } = parseKernelCmdline(
      'agent.log=loud agent.hostname=-bad agent.vsock_port=x agent.trace agent.server_addr=tcp://1',
    );
    expect(config.logLevel).toBe('info');
    expect(config.hostname).toBe('kata');
    expect(config.vsockPort).toBe(1024);
    expect(config.serverAddr).toBeUndefined();
    expect(warnings).toHaveLength(5);
    expect(warnings.join('\n')).toMatch(/agent\.log: unknown level "loud"/);
    expect(warnings.join('\n')).toMatch(/ignoring unsupported option agent\.trace/);
  });

  it('maps Kata log level names', () => {
    expect(parseKernelCmdline('agent.log=warning').config.logLevel).toBe('warn');
    expect(parseKernelCmdline('agent.log=critical').config.logLevel).toBe('error');
    expect(parseKernelCmdline('agent.debug_console=0').config.debugConsole).toBe(false);
  });
});
