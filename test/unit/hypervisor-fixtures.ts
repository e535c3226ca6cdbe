// A KataConfig built by hand for hypervisor tests (independent of the config loader).
import type { KataConfig, QemuConfig } from '../../src/config/types.js';

export function testQemuConfig(over: Partial<QemuConfig> = {}): QemuConfig {
  return {
    path: '/usr/bin/qemu-system-x86_64',
    kernel: '/kata/vmlinuz.container',
    image: '',
    initrd: '/kata/kata-containers-initrd.img',
    kernel_params: '',
    machine_type: 'q35',
    machine_accelerators: '',
    cpu_features: '',
    default_vcpus: 1,
    default_maxvcpus: 4,
    default_memory: 512,
    default_maxmemory: 2048,
    memory_slots: 10,
    default_bridges: 1,
    shared_fs: 'virtio-fs',
    virtio_fs_daemon: '/usr/lib/qemu/virtiofsd',
    virtio_fs_extra_args: [],
    virtio_fs_cache: 'auto',
    virtio_fs_cache_size: 0,
    block_device_driver: 'virtio-blk',
    disable_block_device_use: false,
    enable_iothreads: false,
    file_mem_backend: '',
    enable_debug: false,
    disable_nesting_checks: true,
    disable_vhost_net: false,
    entropy_source: '/dev/urandom',
    valid_hypervisor_paths: [],
    valid_virtio_fs_daemon_paths: [],
    enable_annotations: [],
    guest_hook_path: '',
    accel: 'tcg',
    agent_channel: 'virtio-serial',
    ...over,
  };
}

export function testKataConfig(over: Partial<QemuConfig> = {}): KataConfig {
  return {
    sources: ['<test>'],
    hypervisorName: 'qemu',
    hypervisor: testQemuConfig(over),
    agentName: 'kata',
    agent: {
      debug_console_enabled: false,
      enable_debug: false,
      enable_tracing: false,
      dial_timeout: 30,
      kernel_modules: [],
      container_pipe_size: 0,
    },
    runtime: {
      enable_debug: false,
      internetworking_model: 'tcfilter',
      disable_new_netns: false,
      disable_guest_seccomp: true,
      sandbox_cgroup_only: false,
      static_sandbox_resource_mgmt: false,
      enable_pprof: false,
      experimental: [],
      sandbox_bind_mounts: [],
      vfio_mode: 'guest-kernel',
      disable_selinux: false,
      jaeger_endpoint: '',
      enable_tracing: false,
    },
  };
}
