// One esbuild set-up for every Node bundle (executables, benchmarks): ESM, node20, koffi left outside because
// it ships a native module that is loaded from node_modules at run time.
import { build } from 'esbuild';

export function bundleForNode(entry, outfile) {
  return build({
    entryPoints: [entry],
    outfile,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    sourcemap: 'linked',
    external: ['koffi'],
    // Bundled CommonJS dependencies call require(); ESM output has none, so give them one.
    banner: {
      js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);",
    },
    logLevel: 'warning',
  });
}
