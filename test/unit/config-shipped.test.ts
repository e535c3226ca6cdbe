// The shipped config/configuration-qemu.toml: parses cleanly, equals the built-in defaults, lists every key.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parse } from 'smol-toml';
import { describe, expect, it } from 'vitest';
import { hostLimits, unresolvedDefaults } from '../../src/config/defaults.js';
import { defaultConfig, loadConfiguration } from '../../src/config/index.js';
import { SECTIONS, type SectionName } from '../../src/config/schema.js';
import { resolveHostLimits, validateConfig } from '../../src/config/validate.js';

const shipped = fileURLToPath(new URL('../../config/configuration-qemu.toml', import.meta.url));

describe('config/configuration-qemu.toml', () => {
  it('parses with no warnings', () => {
    const { warnings, config } = loadConfiguration({
      configPath: shipped,
      host: { cpus: 4, memoryMiB: 8192 },
    });
    expect(warnings).toEqual([]);
    expect(config.sources).toEqual([shipped]);
  });

  it('holds exactly the built-in defaults', () => {
    const host = { cpus: 3, memoryMiB: 5000 };
    const { config } = loadConfiguration({ configPath: shipped, host });
    const expected = unresolvedDefaults();
    resolveHostLimits(expected, host, []);
    expected.sources = [shipped];
    expect(config).toEqual(expected);
  });

  it('writes every key kata-ts reads', () => {
    const tree = parse(readFileSync(shipped, 'utf8')) as Record<
      string,
      Record<string, Record<string, unknown>>
    >;
    const tables: Record<SectionName, Record<string, unknown>> = {
      hypervisor: tree.hypervisor!.qemu!,
      agent: tree.agent!.kata!,
      runtime: tree.runtime as unknown as Record<string, unknown>,
      factory: (tree.factory ?? {}) as unknown as Record<string, unknown>,
    };
    // name/hypervisor_name/agent_name are runtime-rs's; kata-ts has one of each, so they are left out.
    const implicit = new Set(['runtime.name', 'runtime.hypervisor_name', 'runtime.agent_name']);
    for (const section of Object.keys(SECTIONS) as SectionName[]) {
      const missing = Object.keys(SECTIONS[section].keys).filter(
        (k) => !(k in tables[section]) && !implicit.has(`${section}.${k}`),
      );
      expect(missing, `${SECTIONS[section].title} keys missing from the shipped file`).toEqual([]);
    }
  });
});

describe('defaultConfig()', () => {
  it('is valid and resolved for this host', () => {
    const config = defaultConfig();
    const host = hostLimits();
    expect(config.hypervisor.default_maxvcpus).toBe(Math.min(host.cpus, 256));
    expect(config.hypervisor.default_maxmemory).toBe(host.memoryMiB);
    expect(config.sources).toEqual([]);
    expect(() => validateConfig(structuredClone(config))).not.toThrow();
  });

  it('returns a fresh object each time', () => {
    const a = defaultConfig();
    a.hypervisor.virtio_fs_extra_args.push('--x');
    expect(defaultConfig().hypervisor.virtio_fs_extra_args).not.toContain('--x');
  });
});
