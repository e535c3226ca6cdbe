// `kata-ctl env`: the configuration in effect (after lookup and drop-ins), as JSON, like `kata-runtime env`.
import type { Command } from 'commander';
import { loadConfiguration } from '../config/index.js';

export function registerEnv(program: Command): void {
  program
    .command('env')
    .description('print the configuration in effect and where it came from')
    .option('--config <file>', 'configuration file (default: Kata lookup order)')
    .action((opts: { config?: string }) => {
      const { config, warnings } = loadConfiguration({ configPath: opts.config });
      process.stdout.write(`${JSON.stringify({ ...config, warnings }, null, 2)}\n`);
    });
}
