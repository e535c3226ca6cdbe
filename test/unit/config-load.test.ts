// Lookup order, KATA_CONF_FILE, config.d drop-ins, config_body, unknown keys, wrong types, syntax errors.
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ConfigError, DEFAULT_SEARCH_PATHS, loadConfiguration } from '../../src/config/index.js';

const host = { cpus: 4, memoryMiB: 8192 };
let dir: string;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'kata-ts-config-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

function write(rel: string, text: string): string {
  const p = join(dir, rel);
  mkdirSync(join(p, '..'), { recursive: true });
  writeFileSync(p, text);
  return p;
}

function vcpus(n: number): string {
  return `[hypervisor.qemu]\ndefault_vcpus = ${n}\n`;
}

/** Runs fn, expects a ConfigError, returns it. */
function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

describe('lookup order', () => {
  it('has Kata default search paths', () => {
    expect(DEFAULT_SEARCH_PATHS).toEqual([
      '/etc/kata-containers/configuration.toml',
      '/usr/share/defaults/kata-containers/configuration.toml',
      '/opt/kata/share/defaults/kata-containers/configuration.toml',
    ]);
  });

  it('takes the first search path that exists', () => {
    const a = join(dir, 'a/configuration.toml');
    const b = write('b/configuration.toml', vcpus(2));
    const c = write('c/configuration.toml', vcpus(3));
    const { config } = loadConfiguration({ searchPaths: [a, b, c], env: {}, host });
    expect(config.hypervisor.default_vcpus).toBe(2);
    expect(config.sources).toEqual([b]);
  });

  it('prefers an earlier search path when it exists', () => {
    const a = write('a/configuration.toml', vcpus(1));
    const b = write('b/configuration.toml', vcpus(2));
    expect(loadConfiguration({ searchPaths: [a, b], env: {}, host }).config.hypervisor.default_vcpus).toBe(1);
  });

  it('KATA_CONF_FILE wins over the search paths', () => {
    const a = write('a/configuration.toml', vcpus(1));
    const e = write('env/configuration.toml', vcpus(3));
    const { config } = loadConfiguration({ searchPaths: [a], env: { KATA_CONF_FILE: e }, host });
    expect(config.hypervisor.default_vcpus).toBe(3);
    expect(config.sources).toEqual([e]);
  });

  it('an explicit configPath wins over KATA_CONF_FILE and search paths', () => {
    const a = write('a/configuration.toml', vcpus(1));
    const e = write('env/configuration.toml', vcpus(3));
    const p = write('explicit.toml', vcpus(4));
    const { config } = loadConfiguration({
      configPath: p,
      searchPaths: [a],
      env: { KATA_CONF_FILE: e },
      host,
    });
    expect(config.hypervisor.default_vcpus).toBe(4);
  });

  it('a missing explicit configPath is an error, not a fallback', () => {
    const a = write('a/configuration.toml', vcpus(1));
    const missing = join(dir, 'missing.toml');
    const err = configError(() =>
      loadConfiguration({ configPath: missing, searchPaths: [a], env: {}, host }),
    );
    expect(err.message).toContain(missing);
    expect(err.message).toContain('ConfigPath');
  });

  it('a missing KATA_CONF_FILE is an error naming the variable', () => {
    const a = write('a/configuration.toml', vcpus(1));
    const missing = join(dir, 'nope.toml');
    const err = configError(() =>
      loadConfiguration({ searchPaths: [a], env: { KATA_CONF_FILE: missing }, host }),
    );
    expect(err.message).toContain('KATA_CONF_FILE');
    expect(err.file).toBe(missing);
  });

  it('reads KATA_CONF_FILE from process.env by default', () => {
    const e = write('env/configuration.toml', vcpus(2));
    vi.stubEnv('KATA_CONF_FILE', e);
    try {
      expect(loadConfiguration({ searchPaths: [], host }).config.hypervisor.default_vcpus).toBe(2);
    } finally {
      vi.unstubAllEnvs();
    }
  });

  it('no file at all: the error lists every path tried', () => {
    const paths = [join(dir, 'x.toml'), join(dir, 'y.toml'), join(dir, 'z.toml')];
    const err = configError(() => loadConfiguration({ searchPaths: paths, env: {}, host }));
    for (const p of paths) expect(err.message).toContain(p);
    expect(err.tried).toEqual(paths);
  });

  it('a directory where the file should be is an error', () => {
    mkdirSync(join(dir, 'configuration.toml'));
    const err = configError(() =>
      loadConfiguration({ searchPaths: [join(dir, 'configuration.toml')], env: {}, host }),
    );
    expect(err.message).toContain('not a regular file');
  });

  it('an empty file gives the defaults', () => {
    const p = write('configuration.toml', '');
    const { config, warnings } = loadConfiguration({ configPath: p, host });
    expect(warnings).toEqual([]);
    expect(config.hypervisor.default_vcpus).toBe(1);
    expect(config.hypervisor.default_maxvcpus).toBe(4);
    expect(config.hypervisor.default_maxmemory).toBe(8192);
    expect(config.hypervisor.path).toBe('/usr/bin/qemu-system-x86_64');
    expect(config.hypervisor.virtio_fs_daemon).toBe('/usr/lib/qemu/virtiofsd');
    expect(config.hypervisor.initrd).toBe('/usr/share/kata-containers/kata-containers-initrd.img');
    expect(config.hypervisor.image).toBe('');
  });
});

describe('config.d drop-ins', () => {
  it('merges *.toml beside the chosen file in name order, later wins, deep merge', () => {
    const base = write(
      'configuration.toml',
      '[hypervisor.qemu]\ndefault_vcpus = 1\ndefault_memory = 1024\n[runtime]\nenable_debug = false\n',
    );
    write('config.d/20-b.toml', '[hypervisor.qemu]\ndefault_vcpus = 3\n');
    write('config.d/10-a.toml', '[hypervisor.qemu]\ndefault_vcpus = 2\nkernel_params = "quiet"\n');
    write('config.d/30-c.toml', '[runtime]\nenable_debug = true\n');
    write('config.d/99-ignored.txt', 'not toml at all [');
    const { config } = loadConfiguration({ configPath: base, host });
    expect(config.hypervisor.default_vcpus).toBe(3);
    expect(config.hypervisor.kernel_params).toBe('quiet');
    expect(config.hypervisor.default_memory).toBe(1024);
    expect(config.runtime.enable_debug).toBe(true);
    expect(config.sources).toEqual([
      base,
      join(dir, 'config.d/10-a.toml'),
      join(dir, 'config.d/20-b.toml'),
      join(dir, 'config.d/30-c.toml'),
    ]);
  });

  it('applies to search-path and KATA_CONF_FILE lookups too', () => {
    const base = write('s/configuration.toml', vcpus(1));
    write('s/config.d/50.toml', vcpus(2));
    expect(loadConfiguration({ searchPaths: [base], env: {}, host }).config.hypervisor.default_vcpus).toBe(2);
    expect(loadConfiguration({ env: { KATA_CONF_FILE: base }, host }).config.hypervisor.default_vcpus).toBe(
      2,
    );
  });

  it('arrays in a drop-in replace, not append', () => {
    const base = write('configuration.toml', '[agent.kata]\nkernel_modules = ["a", "b"]\n');
    write('config.d/1.toml', '[agent.kata]\nkernel_modules = ["c"]\n');
    expect(loadConfiguration({ configPath: base, host }).config.agent.kernel_modules).toEqual(['c']);
  });

  it('uses config.d beside the real file when the config is a symlink', () => {
    const real = write('real/configuration-qemu.toml', vcpus(1));
    write('real/config.d/1.toml', vcpus(2));
    const link = join(dir, 'link.toml');
    symlinkSync(real, link);
    const { config } = loadConfiguration({ configPath: link, host });
    expect(config.hypervisor.default_vcpus).toBe(2);
    expect(config.sources[0]).toBe(real);
  });

  it('a broken drop-in fails with its own name and line', () => {
    const base = write('configuration.toml', vcpus(1));
    const bad = write('config.d/10-bad.toml', '[hypervisor.qemu]\ndefault_vcpus = \n');
    const err = configError(() => loadConfiguration({ configPath: base, host }));
    expect(err.file).toBe(bad);
    expect(err.line).toBe(2);
    expect(err.message).toContain(`${bad}:2`);
  });

  it('a wrong type in a drop-in names the drop-in', () => {
    const base = write('configuration.toml', vcpus(1));
    const bad = write('config.d/10-bad.toml', '[hypervisor.qemu]\n\ndefault_memory = "lots"\n');
    const err = configError(() => loadConfiguration({ configPath: base, host }));
    expect(err.file).toBe(bad);
    expect(err.line).toBe(3);
    expect(err.key).toBe('[hypervisor.qemu] default_memory');
  });

  it('a cross-field error names the file that set the value', () => {
    const base = write('configuration.toml', '[hypervisor.qemu]\ndefault_maxvcpus = 2\n');
    const dropIn = write('config.d/10.toml', '[hypervisor.qemu]\ndefault_vcpus = 3\n');
    const err = configError(() => loadConfiguration({ configPath: base, host }));
    expect(err.file).toBe(dropIn);
    expect(err.message).toContain('default_vcpus (3) is greater than default_maxvcpus (2)');
  });

  it('a directory named *.toml in config.d is an error', () => {
    const base = write('configuration.toml', '');
    mkdirSync(join(dir, 'config.d/10.toml'), { recursive: true });
    const err = configError(() => loadConfiguration({ configPath: base, host }));
    expect(err.message).toContain('regular file');
  });

  it('no config.d is fine', () => {
    const base = write('configuration.toml', vcpus(2));
    expect(loadConfiguration({ configPath: base, host }).config.sources).toEqual([base]);
  });
});

describe('config_body', () => {
  it('parses a TOML body from memory and reads no file', () => {
    const p = write('configuration.toml', vcpus(1));
    write('config.d/1.toml', vcpus(2));
    const { config, warnings } = loadConfiguration({ configBody: vcpus(3), configPath: p, host });
    expect(config.hypervisor.default_vcpus).toBe(3);
    expect(config.sources).toEqual(['<config_body>']);
    expect(warnings.join('\n')).toContain('ConfigPath');
  });

  it('does not need any file to exist', () => {
    const { config } = loadConfiguration({
      configBody: '[runtime]\nenable_debug = true\n',
      searchPaths: [],
      env: {},
      host,
    });
    expect(config.runtime.enable_debug).toBe(true);
  });

  it('an empty body counts as not given (protobuf default)', () => {
    const p = write('configuration.toml', vcpus(2));
    expect(loadConfiguration({ configBody: '', configPath: p, host }).config.hypervisor.default_vcpus).toBe(
      2,
    );
  });

  it('errors in the body name <config_body>', () => {
    const err = configError(() =>
      loadConfiguration({ configBody: '[runtime]\nenable_debug = "yes"\n', host }),
    );
    expect(err.file).toBe('<config_body>');
    expect(err.line).toBe(2);
  });
});

describe('unknown keys', () => {
  it('are warned, with file, line and a hint, and ignored', () => {
    const p = write(
      'configuration.toml',
      [
        '[hypervisor.qemu]',
        'default_vcpu = 2',
        'rootless = true',
        'frobnicate = 1',
        '[hypervisor.qemu.factory]',
        'enable_template = false',
        '[agent.kata]',
        'dial_timeout_ms = 10',
        '[runtime]',
        'create_container_timeout = 60',
        '[factory]',
        'enable_template = false',
        '[something]',
        'x = 1',
      ].join('\n'),
    );
    const { config, warnings } = loadConfiguration({ configPath: p, host });
    expect(config.hypervisor.default_vcpus).toBe(1);
    expect(config.factory.enable_template).toBe(false);
    // [factory] is read now; its enable_template = false is a known key, so it gives no warning.
    expect(warnings).toHaveLength(7);
    expect(warnings[0]).toBe(
      `${p}:2: [hypervisor.qemu] default_vcpu is not a known key; ignored (did you mean default_vcpus?)`,
    );
    expect(warnings[1]).toContain(
      `${p}:3: [hypervisor.qemu] rootless is a Kata option kata-ts does not implement`,
    );
    expect(warnings[2]).toBe(`${p}:4: [hypervisor.qemu] frobnicate is not a known key; ignored`);
    expect(warnings[3]).toBe(
      `${p}:5: [hypervisor.qemu] factory is ignored: kata-ts reads [factory] (Kata's Go runtime's table)`,
    );
    expect(warnings[4]).toContain('[agent.kata] dial_timeout_ms is ignored: kata-ts reads dial_timeout');
    expect(warnings[5]).toContain(
      '[runtime] create_container_timeout is ignored: kata-ts reads it from [agent.kata]',
    );
    expect(warnings.some((w) => w.includes('[factory] is a Kata section'))).toBe(false);
    expect(warnings[6]).toBe(`${p}:13: something is not a known section or key; ignored`);
  });

  it('reports an unknown top-level section', () => {
    const { warnings } = loadConfiguration({ configBody: '[something]\nx = 1\n', host });
    expect(warnings).toEqual(['<config_body>:1: something is not a known section or key; ignored']);
  });
});

describe('wrong types', () => {
  const cases: Array<[string, string, RegExp]> = [
    [
      '[hypervisor.qemu]\ndefault_vcpus = "2"',
      '[hypervisor.qemu] default_vcpus',
      /must be an integer, got a string/,
    ],
    [
      '[hypervisor.qemu]\ndefault_vcpus = 2.0',
      '[hypervisor.qemu] default_vcpus',
      /must be an integer, got a float/,
    ],
    [
      '[hypervisor.qemu]\ndefault_vcpus = 2.5',
      '[hypervisor.qemu] default_vcpus',
      /must be an integer, got a float/,
    ],
    [
      '[hypervisor.qemu]\nenable_debug = "true"',
      '[hypervisor.qemu] enable_debug',
      /must be true or false, got a string/,
    ],
    [
      '[hypervisor.qemu]\nenable_debug = 1',
      '[hypervisor.qemu] enable_debug',
      /must be true or false, got an integer/,
    ],
    ['[hypervisor.qemu]\npath = 1', '[hypervisor.qemu] path', /must be a string, got an integer/],
    ['[hypervisor.qemu]\npath = ["/a"]', '[hypervisor.qemu] path', /must be a string, got an array/],
    ['[hypervisor.qemu]\npath = 1979-05-27', '[hypervisor.qemu] path', /must be a string, got a date/],
    ['[hypervisor.qemu]\nkernel = { a = 1 }', '[hypervisor.qemu] kernel', /must be a string, got a table/],
    [
      '[hypervisor.qemu]\nvirtio_fs_extra_args = "--x"',
      '[hypervisor.qemu] virtio_fs_extra_args',
      /must be an array of strings, got a string/,
    ],
    [
      '[hypervisor.qemu]\nenable_annotations = ["a", 1]',
      '[hypervisor.qemu] enable_annotations',
      /non-string entry/,
    ],
    ['[agent.kata]\ndial_timeout = true', '[agent.kata] dial_timeout', /must be an integer, got a boolean/],
    ['[agent.kata]\nkernel_modules = "e1000"', '[agent.kata] kernel_modules', /must be an array of strings/],
    ['[runtime]\nexperimental = [1]', '[runtime] experimental', /non-string entry/],
    ['[runtime]\nsandbox_cgroup_only = "no"', '[runtime] sandbox_cgroup_only', /must be true or false/],
    [
      '[factory]\nenable_template = "yes"',
      '[factory] enable_template',
      /must be true or false, got a string/,
    ],
    [
      '[factory]\ntemplate_path = "run/vc/vm/template"',
      '[factory] template_path',
      /must be an absolute path/,
    ],
    [
      '[factory]\nvm_cache_endpoint = "cache.sock"',
      '[factory] vm_cache_endpoint',
      /must be an absolute path/,
    ],
    ['[factory]\nvm_cache_number = "2"', '[factory] vm_cache_number', /must be an integer, got a string/],
    [
      '[factory]\nvm_cache_number = -1',
      '[factory] vm_cache_number',
      /-1 is out of range \(allowed: at least 0\)/,
    ],
    [
      '[hypervisor.qemu]\ndefault_memory = 99999999999999999999',
      '[hypervisor.qemu] default_memory',
      /out of range/,
    ],
  ];
  it.each(cases)('%s', (body, key, message) => {
    const p = write('configuration.toml', `# header\n${body}\n`);
    const err = configError(() => loadConfiguration({ configPath: p, host }));
    expect(err.file).toBe(p);
    expect(err.key).toBe(key);
    expect(err.line).toBe(3);
    expect(err.message).toMatch(message);
    expect(err.message.startsWith(`${p}:3: ${key}: `)).toBe(true);
  });

  it('a section that is not a table is an error', () => {
    expect(configError(() => loadConfiguration({ configBody: 'runtime = 1\n', host })).message).toContain(
      'runtime must be a table',
    );
    expect(
      configError(() => loadConfiguration({ configBody: 'hypervisor = "qemu"\n', host })).message,
    ).toContain('hypervisor must be a table');
    expect(
      configError(() => loadConfiguration({ configBody: '[hypervisor]\nqemu = 1\n', host })).message,
    ).toContain('hypervisor.qemu must be a table');
    const factory = configError(() => loadConfiguration({ configBody: 'factory = true\n', host }));
    expect(factory.message).toBe('<config_body>:1: factory must be a table ([factory])');
    expect(factory.key).toBe('factory');
  });
});

describe('[factory]', () => {
  const defaults = {
    enable_template: false,
    template_path: '/run/vc/vm/template',
    vm_cache_number: 0,
    vm_cache_endpoint: '/var/run/kata-containers/cache.sock',
  };

  it("has Kata's defaults when the table is absent", () => {
    const { config, warnings } = loadConfiguration({ configBody: '[runtime]\nenable_debug = false\n', host });
    expect(config.factory).toEqual(defaults);
    expect(warnings).toEqual([]);
  });

  it('keeps the defaults of keys an empty or partial table leaves out', () => {
    expect(loadConfiguration({ configBody: '[factory]\n', host }).config.factory).toEqual(defaults);
    const { config, warnings } = loadConfiguration({
      configBody: '[factory]\nvm_cache_number = 3\n',
      host,
    });
    expect(config.factory).toEqual({ ...defaults, vm_cache_number: 3 });
    expect(warnings).toEqual([]);
  });

  it('reads every key', () => {
    const p = write(
      'configuration.toml',
      [
        '[factory]',
        'enable_template = true',
        'template_path = "/run/kata/template"',
        'vm_cache_number = 4',
        'vm_cache_endpoint = "/run/kata/cache.sock"',
      ].join('\n'),
    );
    const { config, warnings } = loadConfiguration({ configPath: p, host });
    expect(config.factory).toEqual({
      enable_template: true,
      template_path: '/run/kata/template',
      vm_cache_number: 4,
      vm_cache_endpoint: '/run/kata/cache.sock',
    });
    expect(warnings).toEqual([]);
  });

  it('is merged key by key from config.d drop-ins', () => {
    const main = write('configuration.toml', '[factory]\nenable_template = true\nvm_cache_number = 2\n');
    write('config.d/10-factory.toml', '[factory]\nvm_cache_number = 5\n');
    const { config } = loadConfiguration({ configPath: main, host });
    expect(config.factory.enable_template).toBe(true);
    expect(config.factory.vm_cache_number).toBe(5);
  });

  it('warns about unknown keys in [factory], with a hint', () => {
    const { warnings } = loadConfiguration({ configBody: '[factory]\nenable_templates = true\n', host });
    expect(warnings).toEqual([
      '<config_body>:2: [factory] enable_templates is not a known key; ignored (did you mean enable_template?)',
    ]);
  });

  it('caps vm_cache_number at 64 with a message saying why', () => {
    expect(
      loadConfiguration({ configBody: '[factory]\nvm_cache_number = 64\n', host }).config.factory
        .vm_cache_number,
    ).toBe(64);
    const p = write('configuration.toml', '[factory]\nvm_cache_number = 65\n');
    const err = configError(() => loadConfiguration({ configPath: p, host }));
    expect(err.file).toBe(p);
    expect(err.line).toBe(2);
    expect(err.key).toBe('[factory] vm_cache_number');
    expect(err.message).toMatch(/^.*:2: \[factory\] vm_cache_number: 65 is more than 64, kata-ts's cap/);
    expect(err.message).toContain('Kata has no limit');
  });

  it('rejects vm_cache_number = -1 naming file, key and line', () => {
    const p = write(
      'configuration.toml',
      '# factory\n[factory]\nenable_template = false\nvm_cache_number = -1\n',
    );
    const err = configError(() => loadConfiguration({ configPath: p, host }));
    expect(err.file).toBe(p);
    expect(err.line).toBe(4);
    expect(err.key).toBe('[factory] vm_cache_number');
    expect(err.value).toBe('-1');
    expect(err.message).toBe(`${p}:4: [factory] vm_cache_number: -1 is out of range (allowed: at least 0)`);
  });
});

describe('syntax errors', () => {
  it('name the file, line and column', () => {
    const p = write('configuration.toml', '[hypervisor.qemu]\npath = "/usr/bin/qemu\n');
    const err = configError(() => loadConfiguration({ configPath: p, host }));
    expect(err.file).toBe(p);
    expect(err.line).toBe(2);
    expect(err.column).toBeGreaterThan(0);
    expect(err.message).toContain(`${p}:2:`);
    expect(err.message).toContain('invalid TOML');
  });

  it('reject duplicate keys', () => {
    const err = configError(() =>
      loadConfiguration({ configBody: '[runtime]\nenable_debug = true\nenable_debug = false\n', host }),
    );
    expect(err.line).toBe(3);
  });

  it('reject prototype-polluting keys', () => {
    const err = configError(() => loadConfiguration({ configBody: '[runtime]\n__proto__ = 1\n', host }));
    expect(err.message).toContain('invalid TOML');
  });
});

describe('only qemu and the kata agent', () => {
  it.each(['clh', 'firecracker', 'dragonball', 'remote'])('[hypervisor.%s] is a clear error', (name) => {
    const err = configError(() =>
      loadConfiguration({ configBody: `[hypervisor.qemu]\n\n[hypervisor.${name}]\npath = "/x"\n`, host }),
    );
    expect(err.message).toContain(`[hypervisor.${name}]`);
    expect(err.message).toContain(`hypervisor "${name}" is not supported`);
    expect(err.line).toBe(3);
    expect(err.allowed).toEqual(['qemu']);
  });

  it('[agent.other] is a clear error', () => {
    const err = configError(() => loadConfiguration({ configBody: '[agent.other]\n', host }));
    expect(err.message).toContain('agent "other" is not supported');
  });

  it('runtime-rs names must be qemu / kata / virt-container', () => {
    const ok = loadConfiguration({
      configBody: '[runtime]\nname = "virt-container"\nhypervisor_name = "qemu"\nagent_name = "kata"\n',
      host,
    });
    expect(ok.warnings).toEqual([]);
    const err = configError(() =>
      loadConfiguration({ configBody: '[runtime]\nhypervisor_name = "dragonball"\n', host }),
    );
    expect(err.message).toContain('"dragonball" is not allowed; allowed: "qemu"');
  });
});

describe('values that move between sections', () => {
  it('[hypervisor.qemu] disable_selinux lands in runtime.disable_selinux', () => {
    const { config } = loadConfiguration({ configBody: '[hypervisor.qemu]\ndisable_selinux = true\n', host });
    expect(config.runtime.disable_selinux).toBe(true);
  });
});
