// `kata-ctl check`: can this host run kata-ts sandboxes? Says which accelerator and agent channel will be used,
// and why (e.g. KVM present but unable to boot a guest → TCG).
import fs from 'node:fs';
import type { Command } from 'commander';
import { loadConfiguration } from '../config/index.js';
import type { KataConfig } from '../config/types.js';
import { chooseAgentChannel, hostHasVhostVsock, resolveAccelerator } from '../hypervisor/index.js';

export type CheckStatus = 'ok' | 'warn' | 'fail';
export interface CheckItem {
  name: string;
  status: CheckStatus;
  detail: string;
}

function file(name: string, p: string, exec = false): CheckItem {
  try {
    fs.accessSync(p, exec ? fs.constants.X_OK : fs.constants.R_OK);
    return { name, status: 'ok', detail: p };
  } catch (e) {
    return {
      name,
      status: 'fail',
      detail: `${p}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
    };
  }
}

export async function runChecks(config: KataConfig, warnings: string[]): Promise<CheckItem[]> {
  const h = config.hypervisor;
  const items: CheckItem[] = [
    {
      name: 'configuration',
      status: warnings.length ? 'warn' : 'ok',
      detail: [config.sources.join(', '), ...warnings].join('; '),
    },
    file('hypervisor', h.path, true),
    file('kernel', h.kernel),
    h.initrd ? file('initrd', h.initrd) : file('image', h.image),
  ];
  if (h.shared_fs !== 'none') items.push(file('virtio-fs daemon', h.virtio_fs_daemon, true));
  const accel = await resolveAccelerator(config);
  items.push({
    name: 'accelerator',
    status: accel.accel === 'kvm' ? 'ok' : 'warn',
    detail: `${accel.accel}: ${accel.reason}${accel.cached ? ' (cached probe)' : ''}`,
  });
  const vsock = hostHasVhostVsock();
  try {
    const channel = chooseAgentChannel(h.agent_channel, vsock);
    items.push({
      name: 'agent channel',
      status: 'ok',
      detail: `${channel}${vsock ? '' : ' (no /dev/vhost-vsock on this host)'}`,
    });
  } catch (e) {
    items.push({ name: 'agent channel', status: 'fail', detail: (e as Error).message });
  }
  const cg2 = fs.existsSync('/sys/fs/cgroup/cgroup.controllers');
  items.push({ name: 'host cgroups', status: 'ok', detail: cg2 ? 'v2 (unified)' : 'v1 / hybrid' });
  return items;
}

export function registerCheck(program: Command): void {
  program
    .command('check')
    .description('check that this host can run kata-ts sandboxes (binaries, kernel, image, accelerator)')
    .option('--config <file>', 'configuration file (default: Kata lookup order)')
    .option('--json', 'print JSON')
    .action(async (opts: { config?: string; json?: boolean }) => {
      const { config, warnings } = loadConfiguration({ configPath: opts.config });
      const items = await runChecks(config, warnings);
      if (opts.json) process.stdout.write(`${JSON.stringify(items, null, 2)}\n`);
      else for (const i of items) process.stdout.write(`${i.status.padEnd(4)} ${i.name}: ${i.detail}\n`);
      if (items.some((i) => i.status === 'fail')) process.exitCode = 1;
    });
}
