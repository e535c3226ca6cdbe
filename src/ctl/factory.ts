// `kata-ctl factory init | status | destroy`: the VM template (Kata's `kata-runtime factory`). init boots the
// template VM once and saves it under [factory] template_path; sandboxes clone it when enable_template = true.
import type { Command } from 'commander';
import { logger } from '../common/log.js';
import { loadConfiguration } from '../config/index.js';
import { createHypervisor } from '../hypervisor/index.js';
import { connectAgent } from '../runtime/agent.js';
import { destroyTemplate, initTemplate, templateStatus } from '../runtime/factory.js';

interface FactoryOpts {
  config?: string;
}

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
      const meta = await initTemplate(config, { createHypervisor, connectAgent }, log);
      process.stdout.write(
        `${JSON.stringify({ path: config.factory.template_path, seconds: (Date.now() - t0) / 1000, ...meta }, null, 2)}\n`,
      );
      if (!config.factory.enable_template)
        process.stderr.write(
          'kata-ctl: note: [factory] enable_template is false; sandboxes will not use it\n',
        );
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
    .description('remove the VM template')
    .action(async (opts: FactoryOpts) => {
      const { config } = loadConfiguration({ configPath: opts.config });
      await destroyTemplate(config);
      process.stdout.write(`removed the VM template at ${config.factory.template_path}\n`);
    });
}
