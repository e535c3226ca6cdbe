// A VM template for the benchmarks: test/e2e/shim-fixtures.ts's makeTemplate (a configuration with [factory]
// enable_template under a private template_path, `kata-ctl factory init`), timed, with the size of its RAM file.
import fs from 'node:fs';
import path from 'node:path';
import { type KataSetup, makeTemplate } from '../test/e2e/shim-fixtures.js';

export interface BenchTemplate {
  /** The configuration file that enables the template (for `ctr run --runtime-config-path`). */
  config: string;
  initMs: number;
  /** Bytes of the template's RAM file actually allocated (it is sparse). */
  ramAllocated: number;
  destroy(): Promise<void>;
}

export async function benchTemplate(k: KataSetup): Promise<BenchTemplate> {
  const t0 = performance.now();
  const t = await makeTemplate(k.writeConfig, 'bench-template.toml');
  const initMs = performance.now() - t0;
  const ramAllocated = fs.statSync(path.join(t.dir, 'memory')).blocks * 512;
  return { config: t.config, initMs, ramAllocated, destroy: t.destroy };
}
