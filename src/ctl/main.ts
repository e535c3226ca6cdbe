// kata-ctl: the admin CLI. Each subcommand lives in its own module and registers itself here.
import { Command } from 'commander';
import { registerImage } from './image.js';

const program = new Command('kata-ctl').description('kata-ts admin tool').showHelpAfterError();
registerImage(program);

program.parseAsync(process.argv).catch((e: unknown) => {
  process.stderr.write(`kata-ctl: ${(e as Error)?.message ?? String(e)}\n`);
  process.exit(1);
});
