// Runs a TypeScript benchmark: bundles bench/<name>.ts with esbuild into build/bench/<name>.mjs, then runs it
// in a fresh node with the remaining arguments. Usage: node bench/run.mjs ttrpc [--calls N] [--rounds N]
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { bundleForNode } from '../scripts/esbuild-node.mjs';

const [name, ...args] = process.argv.slice(2);
if (!name || !fs.existsSync(`bench/${name}.ts`)) {
  console.error(
    `usage: node bench/run.mjs <name> [args]  (bench/<name>.ts must exist; got ${name ?? 'nothing'})`,
  );
  process.exit(2);
}
const outfile = `build/bench/${name}.mjs`;
await bundleForNode(`bench/${name}.ts`, outfile);
const res = spawnSync(process.execPath, ['--enable-source-maps', outfile, ...args], { stdio: 'inherit' });
process.exit(res.status ?? 1);
