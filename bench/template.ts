// A VM template for the benchmarks: a configuration with [factory] enable_template under a private
// template_path, `kata-ctl factory init` timed, and `factory destroy` at the end.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import type { KataSetup } from '../test/e2e/shim-fixtures.js';
import { REPO } from '../test/helpers/containerd.js';

const run = promisify(execFile);

export interface BenchTemplate {
  /** The configuration file that enables the template (for `ctr run --runtime-config-path`). */
  config: string;
  initMs: number;
  /** Bytes of the template's RAM file actually allocated (it is sparse). */
  ramAllocated: number;
  destroy(): Promise<void>;
}

export async function makeTemplate(k: KataSetup): Promise<BenchTemplate> {
  const dir = fs.mkdtempSync('/run/kata-ts-bench-template-');
  const config = k.writeConfig('bench-template.toml', {
    factory: { enable_template: true, template_path: dir },
  });
  const ctl = (...a: string[]) =>
    run(process.execPath, [path.join(REPO, 'dist/kata-ctl.mjs'), ...a, '--config', config], {
      timeout: 300_000,
    });
  const t0 = performance.now();
  try {
    await ctl('factory', 'init');
  } catch (e) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw new Error(`kata-ctl factory init (${dir}): ${(e as Error).message}`);
  }
  const initMs = performance.now() - t0;
  const ramAllocated = fs.statSync(path.join(dir, 'memory')).blocks * 512;
  return {
    config,
    initMs,
    ramAllocated,
    destroy: async () => {
      await ctl('factory', 'destroy');
    },
  };
}
