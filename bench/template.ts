// A VM template for the benchmarks: test/e2e/shim-fixtures.ts's makeTemplate (a configuration with [factory]
// enable_template under a private template_path, `kata-ctl factory init`), timed, with the size of its RAM file.
import fs from 'node:fs';
import path from 'node:path';
import { pollUntil } from '../src/common/poll.js';
import { type KataSetup, kataCtl, makeTemplate } from '../test/e2e/shim-fixtures.js';

export interface BenchTemplate {
  /** The configuration file that enables the template (for `ctr run --runtime-config-path`). */
  config: string;
  /** Its template_path. */
  dir: string;
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
  return { config: t.config, dir: t.dir, initMs, ramAllocated, destroy: t.destroy };
}

export interface BenchCache {
  /** A configuration with the template and [factory] vm_cache_number. */
  config: string;
  /** Fills the cache (kata-ctl factory fill) and waits until it holds its number of ready VMs. */
  waitFull(): Promise<void>;
}

/** A VM cache of `n` on the template (the template's `factory destroy` removes it too). */
export function benchCache(k: KataSetup, tpl: BenchTemplate, n: number): BenchCache {
  const config = k.writeConfig('bench-cache.toml', {
    factory: { enable_template: true, template_path: tpl.dir, vm_cache_number: n },
  });
  const ctl = (verb: string) => kataCtl(['factory', verb, '--config', config]);
  return {
    config,
    waitFull: async () => {
      await ctl('fill'); // returns at once when a background refill holds the lock
      await pollUntil(
        async () => {
          const st = JSON.parse(await ctl('status')) as { cache: { slots: { state: string }[] } };
          return st.cache.slots.filter((s) => s.state === 'ready').length >= n;
        },
        { timeoutMs: 300_000, intervalMs: 200, what: `${n} ready VMs in the cache` },
      );
    },
  };
}
