// Validation after merge: ranges, host-dependent values, enums, boot assets and cross-field rules.
import { describe, expect, it } from 'vitest';
import { ConfigError, type KataConfig, loadConfiguration } from '../../src/config/index.js';

const host = { cpus: 4, memoryMiB: 8192 };

function load(body: string): { config: KataConfig; warnings: string[] } {
  return loadConfiguration({ configBody: body, host });
}

function qemu(lines: string): { config: KataConfig; warnings: string[] } {
  return load(`[hypervisor.qemu]\n${lines}\n`);
}

function error(body: string): ConfigError {
  try {
    load(body);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error(`expected a ConfigError for:\n${body}`);
}

const qemuError = (lines: string) => error(`[hypervisor.qemu]\n${lines}\n`);

describe('vCPUs', () => {
  it('default_vcpus must be at least 1', () => {
    for (const v of [0, -1]) {
      const err = qemuError(`default_vcpus = ${v}`);
      expect(err.key).toBe('[hypervisor.qemu] default_vcpus');
      expect(err.message).toContain(`${v} is out of range (allowed: 1..256)`);
    }
  });

  it('default_maxvcpus = 0 means the host CPUs', () => {
    expect(qemu('default_maxvcpus = 0').config.hypervisor.default_maxvcpus).toBe(4);
  });

  it('default_maxvcpus above the host is capped, with a warning', () => {
    const { config, warnings } = qemu('default_maxvcpus = 16');
    expect(config.hypervisor.default_maxvcpus).toBe(4);
    expect(warnings.join('\n')).toContain("default_maxvcpus = 16 is more than this host's 4 CPUs");
  });

  it('default_maxvcpus above Kata ceiling is an error', () => {
    expect(qemuError('default_maxvcpus = 257').message).toContain('out of range (allowed: 0..256)');
  });

  it('default_vcpus must not exceed default_maxvcpus', () => {
    expect(qemu('default_vcpus = 2\ndefault_maxvcpus = 2').config.hypervisor.default_vcpus).toBe(2);
    const err = qemuError('default_vcpus = 3\ndefault_maxvcpus = 2');
    expect(err.message).toContain('default_vcpus (3) is greater than default_maxvcpus (2)');
    expect(err.file).toBe('<config_body>');
    expect(err.line).toBe(2);
  });

  it('default_vcpus above the host CPUs (maxvcpus 0) is an error', () => {
    expect(qemuError('default_vcpus = 5').message).toContain(
      'default_vcpus (5) is greater than default_maxvcpus (4)',
    );
  });
});

describe('memory', () => {
  it('default_memory must be at least Kata minimum (64 MiB)', () => {
    expect(qemu('default_memory = 64').config.hypervisor.default_memory).toBe(64);
    const err = qemuError('default_memory = 63');
    expect(err.message).toContain('63 is out of range (allowed: at least 64)');
  });

  it('default_maxmemory = 0 means the host memory; above it is capped', () => {
    expect(qemu('default_maxmemory = 0').config.hypervisor.default_maxmemory).toBe(8192);
    const { config, warnings } = qemu('default_maxmemory = 100000');
    expect(config.hypervisor.default_maxmemory).toBe(8192);
    expect(warnings).toHaveLength(1);
  });

  it('default_memory must not exceed default_maxmemory', () => {
    const err = qemuError('default_memory = 4096\ndefault_maxmemory = 2048');
    expect(err.message).toContain('default_memory (4096 MiB) is greater than default_maxmemory (2048 MiB)');
  });

  it('negative sizes are rejected', () => {
    expect(qemuError('default_maxmemory = -1').key).toBe('[hypervisor.qemu] default_maxmemory');
    expect(qemuError('memory_slots = -1').key).toBe('[hypervisor.qemu] memory_slots');
    expect(qemuError('virtio_fs_cache_size = -1').key).toBe('[hypervisor.qemu] virtio_fs_cache_size');
  });
});

describe('PCI bridges', () => {
  it('0 means 1, at most 5', () => {
    expect(qemu('default_bridges = 0').config.hypervisor.default_bridges).toBe(1);
    expect(qemu('default_bridges = 5').config.hypervisor.default_bridges).toBe(5);
    expect(qemuError('default_bridges = 6').message).toContain('allowed: 0..5');
  });
});

describe('enums list what is allowed', () => {
  const cases: Array<[string, string, string[]]> = [
    ['shared_fs', 'virtio-9p', ['virtio-fs', 'virtio-fs-nydus', 'none']],
    ['block_device_driver', 'nvdimm', ['virtio-scsi', 'virtio-blk-pci']],
    ['block_device_aio', 'posix', ['io_uring', 'threads', 'native']],
    ['accel', 'hvf', ['auto', 'kvm', 'tcg']],
    ['agent_channel', 'tcp', ['auto', 'vsock', 'virtio-serial']],
    ['virtio_fs_cache', 'sometimes', ['never', 'metadata', 'auto', 'always']],
    ['rootfs_type', 'btrfs', ['ext4', 'xfs', 'erofs']],
  ];
  it.each(cases)('%s = %s', (key, bad, allowed) => {
    const err = qemuError(`${key} = "${bad}"`);
    expect(err.key).toBe(`[hypervisor.qemu] ${key}`);
    expect(err.allowed).toEqual(allowed);
    expect(err.message).toContain(
      `"${bad}" is not allowed; allowed: ${allowed.map((a) => `"${a}"`).join(', ')}`,
    );
  });

  it.each([
    ['internetworking_model', 'l3forwarding', ['tcfilter', 'macvtap', 'none']],
    ['vfio_mode', 'passthrough', ['guest-kernel', 'vfio']],
  ])('[runtime] %s = %s', (key, bad, allowed) => {
    const err = error(`[runtime]\n${key} = "${bad}"\n`);
    expect(err.allowed).toEqual(allowed);
  });

  it('accepts every allowed value', () => {
    for (const a of ['auto', 'kvm', 'tcg']) expect(qemu(`accel = "${a}"`).config.hypervisor.accel).toBe(a);
    for (const a of ['auto', 'vsock', 'virtio-serial']) {
      expect(qemu(`agent_channel = "${a}"`).config.hypervisor.agent_channel).toBe(a);
    }
    expect(qemu('shared_fs = "none"').config.hypervisor.shared_fs).toBe('none');
  });

  it("accepts Kata's other spellings and stores the canonical one", () => {
    expect(qemu('block_device_driver = "virtio-blk"').config.hypervisor.block_device_driver).toBe(
      'virtio-blk-pci',
    );
    expect(qemu('virtio_fs_cache = "none"').config.hypervisor.virtio_fs_cache).toBe('never');
  });
});

describe('kernel, initrd and image', () => {
  it('exactly one of initrd or image', () => {
    const both = qemuError('image = "/usr/share/kata-containers/kata-containers.img"');
    expect(both.message).toContain('both initrd');
    expect(both.message).toContain('set exactly one of them');
    const neither = qemuError('initrd = ""');
    expect(neither.message).toContain('neither initrd nor image is set');
    const image = qemu('initrd = ""\nimage = "/img"').config.hypervisor;
    expect(image.image).toBe('/img');
    expect(image.initrd).toBe('');
  });

  it('kernel must be an absolute path', () => {
    expect(qemuError('kernel = ""').message).toContain('must be an absolute path');
    expect(qemuError('kernel = "vmlinuz"').message).toContain('must be an absolute path');
  });

  it('other paths must be absolute too', () => {
    for (const key of [
      'path',
      'initrd',
      'virtio_fs_daemon',
      'guest_hook_path',
      'entropy_source',
      'file_mem_backend',
    ]) {
      expect(qemuError(`${key} = "relative/x"`).key).toBe(`[hypervisor.qemu] ${key}`);
    }
  });
});

describe('shared filesystem', () => {
  it('virtio-fs needs a daemon path', () => {
    expect(qemuError('virtio_fs_daemon = ""').message).toContain('needs virtio_fs_daemon');
    expect(qemu('virtio_fs_daemon = ""\nshared_fs = "none"').config.hypervisor.shared_fs).toBe('none');
  });
});

describe('block sector sizes', () => {
  it('0 or a power of two in 512..65536', () => {
    for (const ok of [0, 512, 4096, 65536]) {
      expect(
        qemu(`block_device_logical_sector_size = ${ok}\nblock_device_physical_sector_size = 65536`).config,
      ).toBeTruthy();
    }
    for (const bad of [256, 1000, 131072, 513]) {
      const err = qemuError(`block_device_physical_sector_size = ${bad}`);
      expect(err.message).toContain('must be 0 or a power of two between 512 and 65536');
    }
  });

  it('logical must not exceed physical', () => {
    const err = qemuError('block_device_logical_sector_size = 4096\nblock_device_physical_sector_size = 512');
    expect(err.message).toContain(
      'logical sector size (4096) must not be larger than physical sector size (512)',
    );
  });
});

describe('other rules', () => {
  it('disable_new_netns only with internetworking_model = "none"', () => {
    expect(error('[runtime]\ndisable_new_netns = true\n').message).toContain(
      'only works with internetworking_model = "none"',
    );
    expect(
      load('[runtime]\ndisable_new_netns = true\ninternetworking_model = "none"\n').config.runtime
        .disable_new_netns,
    ).toBe(true);
  });

  it('enable_annotations must be valid regular expressions', () => {
    expect(qemuError('enable_annotations = ["("]').message).toContain('is not a valid regular expression');
  });

  it('agent timeouts must be positive, modules non-empty', () => {
    expect(error('[agent.kata]\ndial_timeout = 0\n').message).toContain('allowed: at least 1');
    expect(error('[agent.kata]\ncreate_container_timeout = 0\n').message).toContain('allowed: at least 1');
    expect(error('[agent.kata]\nkernel_modules = [" "]\n').message).toContain('entries must not be empty');
  });

  it('sandbox_bind_mounts must be absolute, with an optional :ro/:rw', () => {
    expect(
      load('[runtime]\nsandbox_bind_mounts = ["/a", "/b:ro", "/c:rw"]\n').config.runtime.sandbox_bind_mounts,
    ).toHaveLength(3);
    expect(error('[runtime]\nsandbox_bind_mounts = ["a:ro"]\n').message).toContain(
      'must be an absolute path',
    );
  });

  it('machine_type must not be empty', () => {
    expect(qemuError('machine_type = ""').message).toContain('must not be empty');
  });
});
