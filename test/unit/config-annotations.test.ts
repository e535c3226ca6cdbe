// io.katacontainers.config.* annotations: allow-list, path lists, parsing, ranges, agent/runtime rules.
import { describe, expect, it } from 'vitest';
import { ConfigError, type KataConfig, applyAnnotations, loadConfiguration } from '../../src/config/index.js';

const host = { cpus: 4, memoryMiB: 8192 };
const HV = 'io.katacontainers.config.hypervisor.';
const AG = 'io.katacontainers.config.agent.';
const RT = 'io.katacontainers.config.runtime.';

function base(qemuLines = ''): KataConfig {
  return loadConfiguration({ configBody: `[hypervisor.qemu]\n${qemuLines}\n`, host }).config;
}

/** A config that allows every hypervisor annotation. */
function open(qemuLines = ''): KataConfig {
  return base(`enable_annotations = [".*"]\n${qemuLines}`);
}

function apply(config: KataConfig, annotations: Record<string, string>): KataConfig {
  return applyAnnotations(config, annotations, { host });
}

function rejected(config: KataConfig, annotations: Record<string, string>): ConfigError {
  try {
    apply(config, annotations);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    const e = err as ConfigError;
    const [key, value] = Object.entries(annotations).at(-1)!;
    // Every rejection names the annotation and its value.
    expect(e.annotation).toBe(key);
    expect(e.value).toBe(value.trim());
    expect(e.message).toContain(`annotation ${key}=${JSON.stringify(value.trim())}`);
    return e;
  }
  throw new Error(`expected ${JSON.stringify(annotations)} to be rejected`);
}

describe('general', () => {
  it('returns a new object and leaves the input alone', () => {
    const cfg = base();
    const before = structuredClone(cfg);
    const out = apply(cfg, { [`${HV}default_vcpus`]: '2', [`${AG}kernel_modules`]: 'e1000' });
    expect(out).not.toBe(cfg);
    expect(out.hypervisor.default_vcpus).toBe(2);
    expect(out.agent.kernel_modules).toEqual(['e1000']);
    expect(cfg).toEqual(before);
  });

  it('ignores annotations outside io.katacontainers.config.', () => {
    const cfg = base();
    expect(
      apply(cfg, {
        'io.kubernetes.cri.container-type': 'sandbox',
        'io.katacontainers.pkg.oci.bundle_path': '/x',
      }),
    ).toEqual(cfg);
  });

  it('trims values, as Kata does', () => {
    expect(apply(base(), { [`${HV}default_vcpus`]: ' 3 ' }).hypervisor.default_vcpus).toBe(3);
  });
});

describe('hypervisor allow-list (enable_annotations)', () => {
  it('the default list allows kernel_params, default_vcpus and default_memory only', () => {
    const out = apply(base(), {
      [`${HV}kernel_params`]: 'quiet',
      [`${HV}default_vcpus`]: '2',
      [`${HV}default_memory`]: '1024',
    });
    expect(out.hypervisor.default_memory).toBe(1024);
    const err = rejected(base(), { [`${HV}path`]: '/usr/bin/qemu-system-x86_64' });
    expect(err.message).toContain('is not enabled');
    expect(err.message).toContain('"kernel_params", "default_vcpus", "default_memory"');
  });

  it('an empty list allows none', () => {
    const err = rejected(base('enable_annotations = []'), { [`${HV}default_vcpus`]: '2' });
    expect(err.message).toContain('allows no hypervisor annotations');
  });

  it('entries are regular expressions matched against the whole name', () => {
    const cfg = base('enable_annotations = ["default_.*", "path"]');
    expect(apply(cfg, { [`${HV}default_memory`]: '512' }).hypervisor.default_memory).toBe(512);
    expect(apply(cfg, { [`${HV}path`]: '/usr/bin/qemu-system-x86_64' }).hypervisor.path).toBe(
      '/usr/bin/qemu-system-x86_64',
    );
    // "path" must not also enable guest_hook_path or virtio_fs_daemon.
    rejected(cfg, { [`${HV}guest_hook_path`]: '/hooks' });
    rejected(cfg, { [`${HV}kernel_params`]: 'quiet' });
  });

  it('an allowed name kata-ts does not implement is an error', () => {
    const err = rejected(open(), { [`${HV}enable_iommu`]: 'true' });
    expect(err.message).toContain('is not supported by kata-ts');
    expect(err.allowed).toContain(`${HV}default_vcpus`);
  });
});

describe('path annotations', () => {
  it('path must match valid_hypervisor_paths', () => {
    const cfg = open('valid_hypervisor_paths = ["/usr/bin/qemu-system-*", "/opt/qemu/bin/qemu"]');
    expect(apply(cfg, { [`${HV}path`]: '/opt/qemu/bin/qemu' }).hypervisor.path).toBe('/opt/qemu/bin/qemu');
    expect(apply(cfg, { [`${HV}path`]: '/usr/bin/qemu-system-aarch64' }).hypervisor.path).toBe(
      '/usr/bin/qemu-system-aarch64',
    );
    const err = rejected(cfg, { [`${HV}path`]: '/bin/sh' });
    expect(err.message).toContain('is not allowed by [hypervisor.qemu] valid_hypervisor_paths');
    expect(err.allowed).toEqual(['/usr/bin/qemu-system-*', '/opt/qemu/bin/qemu']);
  });

  it('"*" does not cross "/"', () => {
    const cfg = open('valid_hypervisor_paths = ["/usr/bin/*"]');
    rejected(cfg, { [`${HV}path`]: '/usr/bin/sub/qemu' });
  });

  it('an empty list accepts nothing', () => {
    const err = rejected(open('valid_hypervisor_paths = []'), {
      [`${HV}path`]: '/usr/bin/qemu-system-x86_64',
    });
    expect(err.message).toContain('valid_hypervisor_paths is empty');
  });

  it('paths must be absolute and normalised', () => {
    const cfg = open('valid_hypervisor_paths = ["/usr/bin/*"]');
    for (const bad of ['qemu', '/usr/bin/../../tmp/qemu', '/usr/bin/./qemu', '//usr/bin/qemu']) {
      expect(rejected(cfg, { [`${HV}path`]: bad }).message).toContain('absolute, normalised path');
    }
  });

  it('virtio_fs_daemon must match valid_virtio_fs_daemon_paths', () => {
    const cfg = open();
    expect(
      apply(cfg, { [`${HV}virtio_fs_daemon`]: '/usr/lib/qemu/virtiofsd' }).hypervisor.virtio_fs_daemon,
    ).toBe('/usr/lib/qemu/virtiofsd');
    const err = rejected(cfg, { [`${HV}virtio_fs_daemon`]: '/tmp/virtiofsd' });
    expect(err.message).toContain('valid_virtio_fs_daemon_paths');
  });

  it('entropy_source and file_mem_backend use their lists', () => {
    const cfg = open();
    expect(apply(cfg, { [`${HV}entropy_source`]: '/dev/random' }).hypervisor.entropy_source).toBe(
      '/dev/random',
    );
    expect(apply(cfg, { [`${HV}entropy_source`]: '' }).hypervisor.entropy_source).toBe('');
    rejected(cfg, { [`${HV}entropy_source`]: '/dev/zero' });
    rejected(cfg, { [`${HV}file_mem_backend`]: '/dev/shm' });
  });

  it('kernel, initrd and image; image replaces initrd only if initrd is cleared', () => {
    const cfg = open();
    expect(apply(cfg, { [`${HV}kernel`]: '/k/vmlinuz' }).hypervisor.kernel).toBe('/k/vmlinuz');
    const err = rejected(cfg, { [`${HV}image`]: '/k/rootfs.img' });
    expect(err.message).toContain('set exactly one of them');
    const out = apply(cfg, { [`${HV}image`]: '/k/rootfs.img', [`${HV}initrd`]: '' });
    expect(out.hypervisor.image).toBe('/k/rootfs.img');
    expect(out.hypervisor.initrd).toBe('');
    rejected(cfg, { [`${HV}kernel`]: '' });
  });
});

describe('numbers and ranges', () => {
  it('default_vcpus: integer, at least 1, at most default_maxvcpus', () => {
    const cfg = base();
    expect(apply(cfg, { [`${HV}default_vcpus`]: '4' }).hypervisor.default_vcpus).toBe(4);
    expect(rejected(cfg, { [`${HV}default_vcpus`]: '5' }).message).toContain(
      'default_vcpus (5) is greater than default_maxvcpus (4)',
    );
    expect(rejected(cfg, { [`${HV}default_vcpus`]: '0' }).message).toContain(
      'out of range (allowed: 1..256)',
    );
    for (const bad of ['-1', 'two', '1.5', '', '0x2']) {
      expect(rejected(cfg, { [`${HV}default_vcpus`]: bad }).message).toContain(
        'must be a non-negative integer',
      );
    }
  });

  it('default_max_vcpus (Kata name): 0 = host CPUs, above the host is an error, checked with default_vcpus', () => {
    const cfg = open('default_maxvcpus = 2');
    expect(apply(cfg, { [`${HV}default_max_vcpus`]: '0' }).hypervisor.default_maxvcpus).toBe(4);
    expect(rejected(cfg, { [`${HV}default_max_vcpus`]: '8' }).message).toContain(
      "greater than this host's 4 CPUs",
    );
    const both = apply(cfg, { [`${HV}default_vcpus`]: '3', [`${HV}default_max_vcpus`]: '3' });
    expect(both.hypervisor.default_vcpus).toBe(3);
    expect(both.hypervisor.default_maxvcpus).toBe(3);
    const err = rejected(cfg, { [`${HV}default_max_vcpus`]: '1', [`${HV}default_vcpus`]: '2' });
    expect(err.message).toContain('default_vcpus (2) is greater than default_maxvcpus (1)');
  });

  it('default_memory: MiB or a size with unit, at least 64 MiB', () => {
    const cfg = base();
    expect(apply(cfg, { [`${HV}default_memory`]: '1024' }).hypervisor.default_memory).toBe(1024);
    expect(apply(cfg, { [`${HV}default_memory`]: '2GiB' }).hypervisor.default_memory).toBe(2048);
    expect(apply(cfg, { [`${HV}default_memory`]: '512 Mi' }).hypervisor.default_memory).toBe(512);
    expect(apply(cfg, { [`${HV}default_memory`]: '1G' }).hypervisor.default_memory).toBe(953);
    expect(rejected(cfg, { [`${HV}default_memory`]: '63' }).message).toContain('allowed: at least 64');
    expect(rejected(cfg, { [`${HV}default_memory`]: '32MiB' }).message).toContain('allowed: at least 64');
    for (const bad of ['lots', '-5', '1.5', '2 parsecs', '']) {
      expect(rejected(cfg, { [`${HV}default_memory`]: bad }).message).toContain('whole number of MiB');
    }
    expect(rejected(cfg, { [`${HV}default_memory`]: '16384' }).message).toContain(
      'default_memory (16384 MiB) is greater than default_maxmemory (8192 MiB)',
    );
  });

  it('unsigned fields reject negatives and words', () => {
    const cfg = open();
    expect(apply(cfg, { [`${HV}memory_slots`]: '20' }).hypervisor.memory_slots).toBe(20);
    expect(apply(cfg, { [`${HV}virtio_fs_cache_size`]: '1024' }).hypervisor.virtio_fs_cache_size).toBe(1024);
    rejected(cfg, { [`${HV}memory_slots`]: '-1' });
    rejected(cfg, { [`${HV}virtio_fs_cache_size`]: 'big' });
    rejected(cfg, { [`${HV}memory_slots`]: '99999999999999999999' });
  });

  it('block sector sizes: 0 or a power of two in 512..65536, logical <= physical', () => {
    const cfg = open();
    const out = apply(cfg, {
      [`${HV}blk_logical_sector_size`]: '512',
      [`${HV}blk_physical_sector_size`]: '4096',
    });
    expect(out.hypervisor.block_device_logical_sector_size).toBe(512);
    expect(out.hypervisor.block_device_physical_sector_size).toBe(4096);
    expect(
      apply(cfg, { [`${HV}blk_logical_sector_size`]: '0' }).hypervisor.block_device_logical_sector_size,
    ).toBe(0);
    for (const bad of ['256', '1000', '131072', '4095']) {
      expect(rejected(cfg, { [`${HV}blk_logical_sector_size`]: bad }).message).toContain(
        'must be 0 or a power of two between 512 and 65536',
      );
    }
    rejected(cfg, { [`${HV}blk_physical_sector_size`]: 'x' });
    const err = rejected(cfg, {
      [`${HV}blk_physical_sector_size`]: '512',
      [`${HV}blk_logical_sector_size`]: '4096',
    });
    expect(err.message).toContain('must not be larger than physical');
  });
});

describe('booleans and enums', () => {
  it('booleans are exactly "true" or "false"', () => {
    const cfg = open();
    expect(apply(cfg, { [`${HV}enable_iothreads`]: 'true' }).hypervisor.enable_iothreads).toBe(true);
    expect(
      apply(cfg, { [`${HV}disable_block_device_use`]: 'false' }).hypervisor.disable_block_device_use,
    ).toBe(false);
    for (const bad of ['1', 'True', 'yes', 'on', '']) {
      const err = rejected(cfg, { [`${HV}enable_iothreads`]: bad });
      expect(err.message).toContain('must be a boolean; allowed: "true", "false"');
    }
  });

  it('enums list the allowed values', () => {
    const cfg = open();
    expect(apply(cfg, { [`${HV}shared_fs`]: 'none' }).hypervisor.shared_fs).toBe('none');
    expect(apply(cfg, { [`${HV}block_device_driver`]: 'virtio-blk' }).hypervisor.block_device_driver).toBe(
      'virtio-blk-pci',
    );
    expect(apply(cfg, { [`${HV}accel`]: 'tcg' }).hypervisor.accel).toBe('tcg');
    expect(rejected(cfg, { [`${HV}shared_fs`]: 'virtio-9p' }).allowed).toEqual([
      'virtio-fs',
      'virtio-fs-nydus',
      'none',
    ]);
    expect(rejected(cfg, { [`${HV}virtio_fs_cache`]: 'sometimes' }).allowed).toEqual([
      'never',
      'metadata',
      'auto',
      'always',
    ]);
    expect(rejected(cfg, { [`${HV}accel`]: 'hvf' }).allowed).toEqual(['auto', 'kvm', 'tcg']);
    expect(rejected(cfg, { [`${HV}agent_channel`]: 'tcp' }).allowed).toEqual([
      'auto',
      'vsock',
      'virtio-serial',
    ]);
    expect(rejected(cfg, { [`${HV}block_device_aio`]: 'posix' }).allowed).toEqual([
      'io_uring',
      'threads',
      'native',
    ]);
  });

  it('our own keys (accel, agent_channel) obey the allow-list too', () => {
    rejected(base(), { [`${HV}accel`]: 'tcg' });
  });
});

describe('lists', () => {
  it('kernel_params replace same-named parameters and keep the others', () => {
    const cfg = base('kernel_params = "quiet console=hvc0 foo=1"');
    const out = apply(cfg, { [`${HV}kernel_params`]: 'console=ttyS0 bar' });
    expect(out.hypervisor.kernel_params).toBe('quiet foo=1 console=ttyS0 bar');
    expect(apply(cfg, { [`${HV}kernel_params`]: '' }).hypervisor.kernel_params).toBe(
      'quiet console=hvc0 foo=1',
    );
  });

  it('virtio_fs_extra_args: JSON array or comma list, appended', () => {
    const cfg = open('virtio_fs_extra_args = ["--a"]');
    expect(
      apply(cfg, { [`${HV}virtio_fs_extra_args`]: '["-o", "cache=auto,xattr"]' }).hypervisor
        .virtio_fs_extra_args,
    ).toEqual(['--a', '-o', 'cache=auto,xattr']);
    expect(apply(cfg, { [`${HV}virtio_fs_extra_args`]: '--b,--c' }).hypervisor.virtio_fs_extra_args).toEqual([
      '--a',
      '--b',
      '--c',
    ]);
    rejected(cfg, { [`${HV}virtio_fs_extra_args`]: '["--x", 1]' });
    rejected(cfg, { [`${HV}virtio_fs_extra_args`]: '[not json' });
    rejected(cfg, { [`${HV}virtio_fs_extra_args`]: '--a,,--b' });
  });
});

describe('agent annotations (always allowed)', () => {
  it('apply even with an empty hypervisor allow-list', () => {
    const cfg = base('enable_annotations = []\n[agent.kata]\nkernel_modules = ["a"]');
    const out = apply(cfg, {
      [`${AG}kernel_modules`]: 'e1000e InterruptThrottleRate=3000,3000,3000 EEE=1; i915 enable_ppgtt=0',
      [`${AG}enable_tracing`]: 'true',
      [`${AG}container_pipe_size`]: '65536',
    });
    expect(out.agent.kernel_modules).toEqual([
      'a',
      'e1000e InterruptThrottleRate=3000,3000,3000 EEE=1',
      'i915 enable_ppgtt=0',
    ]);
    expect(out.agent.enable_tracing).toBe(true);
    expect(out.agent.container_pipe_size).toBe(65536);
  });

  it('are type-checked', () => {
    rejected(base(), { [`${AG}enable_tracing`]: 'yes' });
    rejected(base(), { [`${AG}container_pipe_size`]: '-1' });
  });

  it('unknown or unimplemented ones are ignored', () => {
    const cfg = base();
    expect(apply(cfg, { [`${AG}cdh_api_timeout_ms`]: '5', [`${AG}no_such_thing`]: 'x' })).toEqual(cfg);
  });
});

describe('runtime annotations (always allowed)', () => {
  it('apply and are type-checked', () => {
    const cfg = base('enable_annotations = []');
    const out = apply(cfg, {
      [`${RT}disable_guest_seccomp`]: 'false',
      [`${RT}enable_pprof`]: 'true',
      [`${RT}sandbox_cgroup_only`]: 'false',
      [`${RT}experimental`]: 'a, b',
      [`${RT}internetworking_model`]: 'none',
      [`${RT}disable_new_netns`]: 'true',
      [`${RT}vfio_mode`]: 'vfio',
      [`${RT}create_container_timeout`]: '120',
    });
    expect(out.runtime).toMatchObject({
      disable_guest_seccomp: false,
      enable_pprof: true,
      sandbox_cgroup_only: false,
      experimental: ['a', 'b'],
      internetworking_model: 'none',
      disable_new_netns: true,
      vfio_mode: 'vfio',
    });
    expect(out.agent.create_container_timeout).toBe(120);
    rejected(cfg, { [`${RT}enable_pprof`]: 'maybe' });
    expect(rejected(cfg, { [`${RT}internetworking_model`]: 'bridged' }).allowed).toEqual([
      'tcfilter',
      'macvtap',
      'none',
    ]);
    rejected(cfg, { [`${RT}create_container_timeout`]: '0' });
  });

  it('disable_new_netns still needs internetworking_model none', () => {
    expect(rejected(base(), { [`${RT}disable_new_netns`]: 'true' }).message).toContain(
      'only works with internetworking_model',
    );
  });

  it('sandbox_bind_mounts is refused', () => {
    expect(rejected(base(), { [`${RT}sandbox_bind_mounts`]: '/etc' }).message).toContain(
      'cannot be set by annotation',
    );
  });

  it('hypervisor, agent and runtime names must be ours', () => {
    const cfg = base();
    expect(
      apply(cfg, {
        [`${RT}hypervisor_name`]: 'qemu',
        [`${RT}agent_name`]: 'kata',
        [`${RT}name`]: 'virt-container',
      }),
    ).toEqual(cfg);
    expect(rejected(cfg, { [`${RT}hypervisor_name`]: 'clh' }).allowed).toEqual(['qemu']);
    rejected(cfg, { [`${RT}agent_name`]: 'other' });
    rejected(cfg, { [`${RT}name`]: 'linux-container' });
  });

  it('unknown ones are ignored', () => {
    const cfg = base();
    expect(
      apply(cfg, { [`${RT}enable_vcpus_pinning`]: 'true', 'io.katacontainers.config.other.x': '1' }),
    ).toEqual(cfg);
  });
});
