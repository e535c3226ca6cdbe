// Kata's defaults (the values its build writes into configuration-qemu.toml for x86_64, runtime-rs where
// the two runtimes differ), with paths as installed on Debian / by `kata-ctl install`.
import { availableParallelism, totalmem } from 'node:os';
import type { KataConfig } from './types.js';

/** Where Kata's Go runtime looks for configuration.toml, in order (runtime-rs adds a runtime-rs/ level). */
export const DEFAULT_SEARCH_PATHS: readonly string[] = Object.freeze([
  '/etc/kata-containers/configuration.toml',
  '/usr/share/defaults/kata-containers/configuration.toml',
  '/opt/kata/share/defaults/kata-containers/configuration.toml',
]);

export const DEFAULT_QEMU_PATH = '/usr/bin/qemu-system-x86_64';
export const DEFAULT_VIRTIOFSD_PATH = '/usr/lib/qemu/virtiofsd';
export const DEFAULT_KERNEL_PATH = '/usr/share/kata-containers/vmlinuz.container';
export const DEFAULT_INITRD_PATH = '/usr/share/kata-containers/kata-containers-initrd.img';
/** Kata's Go runtime defaults for [factory] (pkg/katautils defaultTemplatePath, defaultVMCacheEndpoint). */
export const DEFAULT_TEMPLATE_PATH = '/run/vc/vm/template';
export const DEFAULT_VM_CACHE_ENDPOINT = '/var/run/kata-containers/cache.sock';

/** What "0 = the host's" resolves against; injectable so tests do not depend on the machine. */
export interface HostLimits {
  cpus: number;
  memoryMiB: number;
}

export function hostLimits(): HostLimits {
  return { cpus: availableParallelism(), memoryMiB: Math.floor(totalmem() / (1024 * 1024)) };
}

/** The defaults exactly as written in the shipped file (default_maxvcpus / default_maxmemory still 0). */
export function unresolvedDefaults(): KataConfig {
  return {
    sources: [],
    hypervisorName: 'qemu',
    hypervisor: {
      path: DEFAULT_QEMU_PATH,
      kernel: DEFAULT_KERNEL_PATH,
      image: '',
      initrd: DEFAULT_INITRD_PATH,
      kernel_params: 'cgroup_no_v1=all systemd.unified_cgroup_hierarchy=1',
      machine_type: 'q35',
      machine_accelerators: '',
      cpu_features: 'pmu=off',
      default_vcpus: 1,
      default_maxvcpus: 0,
      default_memory: 2048,
      default_maxmemory: 0,
      memory_slots: 10,
      default_bridges: 1,
      shared_fs: 'virtio-fs',
      virtio_fs_daemon: DEFAULT_VIRTIOFSD_PATH,
      virtio_fs_extra_args: ['--thread-pool-size=1', '-o', 'announce_submounts'],
      virtio_fs_cache: 'auto',
      virtio_fs_cache_size: 0,
      block_device_driver: 'virtio-scsi',
      block_device_aio: 'io_uring',
      block_device_cache_set: false,
      block_device_cache_direct: false,
      block_device_cache_noflush: false,
      block_device_logical_sector_size: 0,
      block_device_physical_sector_size: 0,
      disable_block_device_use: false,
      enable_iothreads: false,
      file_mem_backend: '',
      enable_debug: false,
      disable_nesting_checks: false,
      disable_vhost_net: false,
      entropy_source: '/dev/urandom',
      valid_hypervisor_paths: [DEFAULT_QEMU_PATH],
      valid_virtio_fs_daemon_paths: [DEFAULT_VIRTIOFSD_PATH],
      valid_file_mem_backends: [],
      valid_entropy_sources: ['/dev/urandom', '/dev/random', ''],
      enable_annotations: ['kernel_params', 'default_vcpus', 'default_memory'],
      guest_hook_path: '',
      rootfs_type: 'ext4',
      accel: 'auto',
      agent_channel: 'auto',
    },
    agentName: 'kata',
    agent: {
      debug_console_enabled: false,
      enable_debug: false,
      enable_tracing: false,
      dial_timeout: 45,
      kernel_modules: [],
      container_pipe_size: 0,
      create_container_timeout: 60,
      health_check_request_timeout_ms: 90_000,
    },
    runtime: {
      enable_debug: false,
      internetworking_model: 'tcfilter',
      disable_new_netns: false,
      disable_guest_seccomp: true,
      sandbox_cgroup_only: true,
      static_sandbox_resource_mgmt: true,
      enable_pprof: false,
      experimental: [],
      sandbox_bind_mounts: [],
      vfio_mode: 'guest-kernel',
      disable_selinux: false,
      jaeger_endpoint: '',
      enable_tracing: false,
    },
    factory: {
      enable_template: false,
      template_path: DEFAULT_TEMPLATE_PATH,
      vm_cache_number: 0,
      vm_cache_endpoint: DEFAULT_VM_CACHE_ENDPOINT,
    },
  };
}
