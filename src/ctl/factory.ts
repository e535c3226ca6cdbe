// `kata-ctl factory init | status | destroy`: the VM template (Kata's `kata-runtime factory`). init boots the
// template VM once and saves it under [factory] template_path; sandboxes clone it when enable_template = true.
import os from 'node:os';
import type { Command } from 'commander';
import { logger } from '../common/log.js';
import { loadConfiguration } from '../config/index.js';
import { createHypervisor } from '../hypervisor/index.js';
import { connectAgent } from '../runtime/agent.js';
import { destroyTemplate, fillVmCache, initTemplate, templateStatus } from '../runtime/factory.js';

interface FactoryOpts {
  config?: string;
  nice?: boolean;
}

/** A filler's niceness: it restores VMs while sandboxes start, and must not slow them. */
const FILLER_NICE = 10;

export function registerFactory(program: Command): void {
  const factory = program.command('factory').description('manage the VM template sandboxes are cloned from');
  const withConfig = (c: Command) =>
    c.option('--config <file>', 'configuration file (default: Kata lookup order)');

  withConfig(factory.command('init'))
    .description('boot the template VM and save it under [factory] template_path (replaces an existing one)')
    .action(async (opts: FactoryOpts) => {
      const { config } = loadConfiguration({ configPath: opts.config });
      const log = logger('factory');
      const t0 = Date.now();
      const deps = { createHypervisor, connectAgent };
      const meta = await initTemplate(config, deps, log);
      const seconds = (Date.now() - t0) / 1000;
      const cached = await fillVmCache(config, deps, log);
      const out = { path: config.factory.template_path, seconds, ...meta, cached };
      process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
      if (!config.factory.enable_template)
        process.stderr.write(
          'kata-ctl: note: [factory] enable_template is false; sandboxes will not use it\n',
        );
    });

  withConfig(factory.command('fill'))
    .description('park clones of the template in the VM cache up to [factory] vm_cache_number')
    .option('--nice', `run at niceness ${FILLER_NICE} (as the shim's background refill does)`)
    .action(async (opts: FactoryOpts) => {
      if (opts.nice) os.setPriority(FILLER_NICE);
      const { config } = loadConfiguration({ configPath: opts.config });
      const filled = await fillVmCache(config, { createHypervisor, connectAgent }, logger('factory'));
      process.stdout.write(`${JSON.stringify({ filled }, null, 2)}\n`);
    });

  withConfig(factory.command('status'))
    .description('show the VM template (and whether sandboxes use it)')
    .action(async (opts: FactoryOpts) => {
      const { config } = loadConfiguration({ configPath: opts.config });
      const st = await templateStatus(config);
      const out = {
        enable_template: config.factory.enable_template,
        vm_cache_number: config.factory.vm_cache_number,
        ...st,
      };
      process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
    });

  withConfig(factory.command('destroy'))
    .description('remove the VM template and stop every cached VM')
    .action(async (opts: FactoryOpts) => {
      const { config } = loadConfiguration({ configPath: opts.config });
      await destroyTemplate(config, logger('factory'));
      process.stdout.write(`removed the VM template at ${config.factory.template_path}\n`);
    });
}
