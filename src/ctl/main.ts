import path from 'node:path';
import { fileURLToPath } from 'node:url';
// kata-ctl: the admin CLI. Each subcommand lives in its own module and registers itself here.
import { Command } from 'commander';
import { registerCheck } from './check.js';
import { registerEnv } from './env.js';
import { registerFactory } from './factory.js';
import { registerImage } from './image.js';
import { registerInstall } from './install.js';

const program = new Command('kata-ctl').description('kata-ts admin tool').showHelpAfterError();
registerImage(program);
registerCheck(program);
registerEnv(program);
registerFactory(program);
// The bundle runs from <repo>/dist, so the repo (dist/, config/, build/guest) is one level up.
registerInstall(program, path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..'));

program.parseAsync(process.argv).catch((e: unknown) => {
  process.stderr.write(`kata-ctl: ${(e as Error)?.message ?? String(e)}\n`);
  process.exit(1);
});
