// Bundles each executable into one ESM file under dist/ (fast start-up, and the agent must be one file in the guest).
import fs from 'node:fs';
import { bundleForNode } from './esbuild-node.mjs';

const entries = {
  'containerd-shim-kata-v2': 'src/shim/main.ts',
  'kata-ctl': 'src/ctl/main.ts',
  'kata-agent': 'src/agent/main.ts',
};
const only = process.argv.slice(2);
for (const [name, entry] of Object.entries(entries)) {
  if (only.length && !only.includes(name)) continue;
  if (!fs.existsSync(entry)) continue;
  await bundleForNode(entry, `dist/${name}.mjs`);
}
