// Runs a TypeScript benchmark: bundles bench/<name>.ts with esbuild into build/bench/<name>.mjs, then runs it
// in a fresh node with the remaining arguments. Usage: node bench/run.mjs ttrpc [--calls N] [--rounds N]
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { build } from 'esbuild';

const [name, ...args] = process.argv.slice(2);
if (!name || !fs.existsSync(`bench/${name}.ts`)) {
  console.error(
    `usage: node bench/run.mjs <name> [args]  (bench/<name>.ts must exist; got ${name ?? 'nothing'})`,
  );
  process.exit(2);
}
const outfile = `build/bench/${name}.mjs`;
await build({
  entryPoints: [`bench/${name}.ts`],
  outfile,
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  sourcemap: 'linked',
  external: ['koffi'],
  banner: {
    js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);",
  },
  logLevel: 'warning',
});
const res = spawnSync(process.execPath, ['--enable-source-maps', outfile, ...args], { stdio: 'inherit' });
process.exit(res.status ?? 1);
