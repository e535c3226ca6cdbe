// `kata-ctl check`: can this host run kata-ts sandboxes? Says which accelerator and agent channel will be used,
// and why (e.g. KVM present but unable to boot a guest → TCG).
import fs from 'node:fs';
import type { Command } from 'commander';
import { loadConfiguration } from '../config/index.js';
import type { KataConfig } from '../config/types.js';
import {
  VHOST_NET_DEVICE,
  checkQemuConfig,
  resolveAccelerator,
  vhostNetAvailable,
} from '../hypervisor/index.js';

export type CheckStatus = 'ok' | 'warn' | 'fail';
export interface CheckItem {
  name: string;
  status: CheckStatus;
  detail: string;
}

export async function runChecks(config: KataConfig, warnings: string[]): Promise<CheckItem[]> {
  const items: CheckItem[] = [
    {
      name: 'configuration',
      status: warnings.length ? 'warn' : 'ok',
      detail: [config.sources.join(', '), ...warnings].join('; '),
    },
  ];
  // The same rules the QEMU driver enforces before a boot, each reported.
  for (const c of checkQemuConfig(config)) {
    items.push({ name: c.name, status: c.ok ? 'ok' : 'fail', detail: c.detail });
  }
  const accel = await resolveAccelerator(config);
  items.push({
    name: 'accelerator',
    status: accel.accel === 'kvm' ? 'ok' : 'warn',
    detail: `${accel.accel}: ${accel.reason}${accel.cached ? ' (cached probe)' : ''}`,
  });
  const vhost = await vhostNetAvailable();
  items.push({
    name: 'vhost-net',
    status: vhost && !config.hypervisor.disable_vhost_net ? 'ok' : 'warn',
    detail: config.hypervisor.disable_vhost_net
      ? 'disabled by hypervisor.disable_vhost_net: NICs use a plain tap'
      : vhost
        ? `${VHOST_NET_DEVICE}: NICs use vhost-net`
        : `no ${VHOST_NET_DEVICE} (load vhost_net): NICs use a plain tap, packets go through QEMU`,
  });
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
