import fs from 'node:fs';
// Bundles each executable into one ESM file under dist/ (fast start-up, and the agent must be one file in the guest).
import { build } from 'esbuild';

const entries = {
  'containerd-shim-kata-v2': 'src/shim/main.ts',
  'kata-ctl': 'src/ctl/main.ts',
  'kata-agent': 'src/agent/main.ts',
};
const only = process.argv.slice(2);
for (const [name, entry] of Object.entries(entries)) {
  if (only.length && !only.includes(name)) continue;
  if (!fs.existsSync(entry)) continue;
  await build({
    entryPoints: [entry],
    outfile: `dist/${name}.mjs`,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    sourcemap: 'linked',
    // koffi ships native prebuilds; it is loaded from node_modules on the host, or copied next to the agent in the guest.
    external: ['koffi'],
    banner: {
      js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);",
    },
    logLevel: 'warning',
  });
}
