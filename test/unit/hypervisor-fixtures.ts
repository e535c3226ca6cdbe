// Configs for hypervisor tests: the config layer's defaults with test paths and small sizes.
import { defaultConfig } from '../../src/config/index.js';
import type { KataConfig, QemuConfig } from '../../src/config/types.js';

export function testQemuConfig(over: Partial<QemuConfig> = {}): QemuConfig {
  return {
    ...defaultConfig().hypervisor,
    kernel: '/kata/vmlinuz.container',
    initrd: '/kata/kata-containers-initrd.img',
    image: '',
    kernel_params: '',
    cpu_features: '',
    default_vcpus: 1,
    default_maxvcpus: 4,
    default_memory: 512,
    default_maxmemory: 2048,
    block_device_driver: 'virtio-blk-pci',
    block_device_aio: 'threads',
    valid_hypervisor_paths: [],
    valid_virtio_fs_daemon_paths: [],
    entropy_source: '/dev/urandom',
    accel: 'tcg',
    agent_channel: 'virtio-serial',
    ...over,
  };
}

export function testKataConfig(over: Partial<QemuConfig> = {}): KataConfig {
  return { ...defaultConfig(), sources: ['<test>'], hypervisor: testQemuConfig(over) };
}
