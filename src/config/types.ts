// The typed shape of Kata's configuration.toml as kata-ts uses it. Keys keep Kata's TOML names
// (snake_case) so a config file, an annotation and this type read the same.

export type Accel = 'auto' | 'kvm' | 'tcg';

export interface QemuConfig {
  path: string;
  kernel: string;
  /** A guest rootfs image attached as a block device; exclusive with initrd. */
  image: string;
  initrd: string;
  kernel_params: string;
  machine_type: string;
  machine_accelerators: string;
  cpu_features: string;
  default_vcpus: number;
  default_maxvcpus: number;
  default_memory: number;
  default_maxmemory: number;
  memory_slots: number;
  default_bridges: number;
  /** "virtio-fs" | "virtio-fs-nydus" | "none" */
  shared_fs: string;
  virtio_fs_daemon: string;
  virtio_fs_extra_args: string[];
  virtio_fs_cache: string;
  virtio_fs_cache_size: number;
  /** "virtio-scsi" | "virtio-blk-pci" ("virtio-blk" in a file is read as virtio-blk-pci). */
  block_device_driver: string;
  /** QEMU aio= for block devices: "io_uring" | "threads" | "native". */
  block_device_aio: string;
  block_device_cache_set: boolean;
  block_device_cache_direct: boolean;
  block_device_cache_noflush: boolean;
  /** Bytes; 0 = QEMU's default, else a power of two in 512..65536. */
  block_device_logical_sector_size: number;
  block_device_physical_sector_size: number;
  disable_block_device_use: boolean;
  enable_iothreads: boolean;
  file_mem_backend: string;
  shared_memory?: never;
  enable_debug: boolean;
  disable_nesting_checks: boolean;
  disable_vhost_net: boolean;
  entropy_source: string;
  valid_hypervisor_paths: string[];
  valid_virtio_fs_daemon_paths: string[];
  valid_file_mem_backends: string[];
  valid_entropy_sources: string[];
  /** Filesystem of `image` when an image is used: "ext4" | "xfs" | "erofs". */
  rootfs_type: string;
  enable_annotations: string[];
  guest_hook_path: string;
  /** kata-ts: which accelerator to use; auto probes whether KVM can really boot a guest. */
  accel: Accel;
  /** kata-ts: the agent channel; auto picks vsock where the host has /dev/vhost-vsock. */
  agent_channel: 'auto' | 'vsock' | 'virtio-serial';
}

export interface AgentConfig {
  debug_console_enabled: boolean;
  enable_debug: boolean;
  enable_tracing: boolean;
  /** Seconds to wait for the agent to answer after the VM starts. */
  dial_timeout: number;
  kernel_modules: string[];
  container_pipe_size: number;
  /** Seconds the agent may take for CreateContainer (runtime-rs keeps it in [agent.kata]). */
  create_container_timeout: number;
  /** Deadline of a Health.Check (runtime-rs [agent.kata]); a running VM whose agent misses it is hung. */
  health_check_request_timeout_ms: number;
}

export interface RuntimeConfig {
  enable_debug: boolean;
  internetworking_model: string;
  disable_new_netns: boolean;
  disable_guest_seccomp: boolean;
  sandbox_cgroup_only: boolean;
  static_sandbox_resource_mgmt: boolean;
  enable_pprof: boolean;
  experimental: string[];
  sandbox_bind_mounts: string[];
  vfio_mode: string;
  /** Read from [hypervisor.qemu] disable_selinux, where Kata keeps it. */
  disable_selinux: boolean;
  jaeger_endpoint: string;
  enable_tracing: boolean;
}

/**
 * Kata's Go runtime's top-level [factory] table: VM templating and a cache of pre-booted VMs
 * (runtime-rs instead nests these under [hypervisor.qemu.factory], which kata-ts does not read).
 */
export interface FactoryConfig {
  /** Boot new VMs from a template VM's saved memory and device state. */
  enable_template: boolean;
  /** Where the template VM's memory and state live (a tmpfs made by `factory init`). */
  template_path: string;
  /** How many pre-booted VMs the cache keeps; 0 = no cache. */
  vm_cache_number: number;
  /** The VM cache server's gRPC socket. */
  vm_cache_endpoint: string;
}

export interface KataConfig {
  /** The file the configuration was read from (plus drop-ins), for error messages and `kata-ctl env`. */
  sources: string[];
  hypervisorName: 'qemu';
  hypervisor: QemuConfig;
  agentName: 'kata';
  agent: AgentConfig;
  runtime: RuntimeConfig;
  /** [factory]: VM templating and the VM cache (Kata's Go runtime's table). */
  factory: FactoryConfig;
}
