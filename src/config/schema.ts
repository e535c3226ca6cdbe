// Every key kata-ts reads from configuration.toml: its TOML type, allowed values and range. The same specs
// check each file as it is read (so an error names the file) and the final, merged config (so values set by
// annotations or by code get the same checks).
import type { AgentConfig, FactoryConfig, QemuConfig, RuntimeConfig } from './types.js';

export type SectionName = 'hypervisor' | 'agent' | 'runtime' | 'factory';
export type ValueKind = 'string' | 'bool' | 'int' | 'strings';

/** Kata's floor for guest memory with QEMU (runtime-rs MIN_QEMU_MEMORY_SIZE_MB). */
export const MIN_MEMORY_MIB = 64;
/** Kata's ceiling for QEMU vCPUs (runtime-rs MAX_QEMU_VCPUS). */
export const MAX_VCPUS = 256;
/** Kata caps cold-plugged PCI bridges at 5. */
export const MAX_BRIDGES = 5;
/** kata-ts's sanity cap on [factory] vm_cache_number (Kata has none; every cached VM is a booted guest). */
export const MAX_VM_CACHE_NUMBER = 64;

export const ACCELS = ['auto', 'kvm', 'tcg'] as const;
export const AGENT_CHANNELS = ['auto', 'vsock', 'virtio-serial'] as const;
export const SHARED_FS_TYPES = ['virtio-fs', 'virtio-fs-nydus', 'none'] as const;
export const VIRTIO_FS_CACHE_MODES = ['never', 'metadata', 'auto', 'always'] as const;
export const BLOCK_DEVICE_DRIVERS = ['virtio-scsi', 'virtio-blk-pci'] as const;
export const BLOCK_DEVICE_AIO_MODES = ['io_uring', 'threads', 'native'] as const;
export const ROOTFS_TYPES = ['ext4', 'xfs', 'erofs'] as const;
// Kata also knows l3forwarding; kata-ts's network layer does tcfilter, macvtap (as Kata Go) and none.
export const INTERNETWORKING_MODELS = ['tcfilter', 'macvtap', 'none'] as const;
export const VFIO_MODES = ['guest-kernel', 'vfio'] as const;

export interface KeySpec {
  kind: ValueKind;
  /** Where the value lands; default: same section, same name. null: checked but not stored. */
  target?: { section: SectionName; field: string } | null;
  enum?: readonly string[];
  /** Other spellings Kata accepts, rewritten to the canonical value. */
  aliases?: Readonly<Record<string, string>>;
  min?: number;
  max?: number;
  /** A further check on a well-typed value; returns what is wrong, or undefined. */
  check?: (value: string | number | boolean | string[]) => string | undefined;
}

const absoluteOrEmpty = (v: unknown): string | undefined =>
  typeof v === 'string' && v !== '' && !v.startsWith('/') ? 'must be an absolute path or ""' : undefined;

const absolute = (v: unknown): string | undefined =>
  typeof v === 'string' && !v.startsWith('/') ? 'must be an absolute path' : undefined;

/** Kata: 0 (hypervisor default) or a power of two in 512..65536. */
export function sectorSizeProblem(size: number): string | undefined {
  if (size === 0) return undefined;
  if (size < 512 || size > 65536 || (size & (size - 1)) !== 0) {
    return 'must be 0 or a power of two between 512 and 65536';
  }
  return undefined;
}

const sectorSize = (v: unknown): string | undefined =>
  typeof v === 'number' ? sectorSizeProblem(v) : undefined;

const regexList = (v: unknown): string | undefined => {
  if (!Array.isArray(v)) return undefined;
  for (const pattern of v) {
    try {
      new RegExp(String(pattern));
    } catch (err) {
      return `${JSON.stringify(pattern)} is not a valid regular expression (${(err as Error).message})`;
    }
  }
  return undefined;
};

const nonEmptyEntries = (v: unknown): string | undefined =>
  Array.isArray(v) && v.some((e) => typeof e === 'string' && e.trim() === '')
    ? 'entries must not be empty'
    : undefined;

const bindMounts = (v: unknown): string | undefined => {
  if (!Array.isArray(v)) return undefined;
  for (const entry of v as string[]) {
    const path = entry.replace(/:(ro|rw)$/, '');
    if (!path.startsWith('/'))
      return `${JSON.stringify(entry)} must be an absolute path, optionally ending ":ro" or ":rw"`;
  }
  return undefined;
};

type Keys<T, Omitted extends keyof T = never> = Record<Exclude<keyof T, Omitted>, KeySpec>;

// [hypervisor.qemu]: every QemuConfig field (the type makes sure none is forgotten) plus disable_selinux.
const qemuKeys: Keys<QemuConfig, 'shared_memory'> & { disable_selinux: KeySpec } = {
  path: { kind: 'string', check: absolute },
  kernel: { kind: 'string', check: absolute },
  image: { kind: 'string', check: absoluteOrEmpty },
  initrd: { kind: 'string', check: absoluteOrEmpty },
  kernel_params: { kind: 'string' },
  machine_type: { kind: 'string', check: (v) => (v === '' ? 'must not be empty' : undefined) },
  machine_accelerators: { kind: 'string' },
  cpu_features: { kind: 'string' },
  default_vcpus: { kind: 'int', min: 1, max: MAX_VCPUS },
  default_maxvcpus: { kind: 'int', min: 0, max: MAX_VCPUS },
  default_memory: { kind: 'int', min: MIN_MEMORY_MIB },
  default_maxmemory: { kind: 'int', min: 0 },
  memory_slots: { kind: 'int', min: 0, max: 256 },
  default_bridges: { kind: 'int', min: 0, max: MAX_BRIDGES },
  shared_fs: { kind: 'string', enum: SHARED_FS_TYPES },
  virtio_fs_daemon: { kind: 'string', check: absoluteOrEmpty },
  virtio_fs_extra_args: { kind: 'strings' },
  virtio_fs_cache: { kind: 'string', enum: VIRTIO_FS_CACHE_MODES, aliases: { none: 'never' } },
  virtio_fs_cache_size: { kind: 'int', min: 0 },
  block_device_driver: {
    kind: 'string',
    enum: BLOCK_DEVICE_DRIVERS,
    aliases: { 'virtio-blk': 'virtio-blk-pci' },
  },
  block_device_aio: { kind: 'string', enum: BLOCK_DEVICE_AIO_MODES },
  block_device_cache_set: { kind: 'bool' },
  block_device_cache_direct: { kind: 'bool' },
  block_device_cache_noflush: { kind: 'bool' },
  block_device_logical_sector_size: { kind: 'int', min: 0, check: sectorSize },
  block_device_physical_sector_size: { kind: 'int', min: 0, check: sectorSize },
  disable_block_device_use: { kind: 'bool' },
  enable_iothreads: { kind: 'bool' },
  file_mem_backend: { kind: 'string', check: absoluteOrEmpty },
  enable_debug: { kind: 'bool' },
  disable_nesting_checks: { kind: 'bool' },
  disable_vhost_net: { kind: 'bool' },
  entropy_source: { kind: 'string', check: absoluteOrEmpty },
  valid_hypervisor_paths: { kind: 'strings' },
  valid_virtio_fs_daemon_paths: { kind: 'strings' },
  valid_file_mem_backends: { kind: 'strings' },
  valid_entropy_sources: { kind: 'strings' },
  enable_annotations: { kind: 'strings', check: regexList },
  guest_hook_path: { kind: 'string', check: absoluteOrEmpty },
  rootfs_type: { kind: 'string', enum: ROOTFS_TYPES },
  accel: { kind: 'string', enum: ACCELS },
  agent_channel: { kind: 'string', enum: AGENT_CHANNELS },
  disable_selinux: { kind: 'bool', target: { section: 'runtime', field: 'disable_selinux' } },
};

const agentKeys: Keys<AgentConfig> = {
  debug_console_enabled: { kind: 'bool' },
  enable_debug: { kind: 'bool' },
  enable_tracing: { kind: 'bool' },
  dial_timeout: { kind: 'int', min: 1 },
  kernel_modules: { kind: 'strings', check: nonEmptyEntries },
  container_pipe_size: { kind: 'int', min: 0 },
  create_container_timeout: { kind: 'int', min: 1 },
  health_check_request_timeout_ms: { kind: 'int', min: 100 },
};

const runtimeKeys: Keys<RuntimeConfig, 'disable_selinux'> &
  Record<'name' | 'hypervisor_name' | 'agent_name', KeySpec> = {
  enable_debug: { kind: 'bool' },
  internetworking_model: { kind: 'string', enum: INTERNETWORKING_MODELS },
  disable_new_netns: { kind: 'bool' },
  disable_guest_seccomp: { kind: 'bool' },
  sandbox_cgroup_only: { kind: 'bool' },
  static_sandbox_resource_mgmt: { kind: 'bool' },
  enable_pprof: { kind: 'bool' },
  experimental: { kind: 'strings', check: nonEmptyEntries },
  sandbox_bind_mounts: { kind: 'strings', check: bindMounts },
  vfio_mode: { kind: 'string', enum: VFIO_MODES },
  jaeger_endpoint: { kind: 'string' },
  enable_tracing: { kind: 'bool' },
  // runtime-rs names the runtime, hypervisor and agent here; kata-ts has exactly one of each.
  name: { kind: 'string', enum: ['virt-container'], target: null },
  hypervisor_name: { kind: 'string', enum: ['qemu'], target: null },
  agent_name: { kind: 'string', enum: ['kata'], target: null },
};

// [factory]: Kata's Go runtime's top-level table (runtime-rs nests it as [hypervisor.qemu.factory]).
const factoryKeys: Keys<FactoryConfig> = {
  enable_template: { kind: 'bool' },
  template_path: { kind: 'string', check: absolute },
  vm_cache_number: {
    kind: 'int',
    min: 0,
    check: (v) =>
      typeof v === 'number' && v > MAX_VM_CACHE_NUMBER
        ? `${v} is more than ${MAX_VM_CACHE_NUMBER}, kata-ts's cap on cached VMs ` +
          '(Kata has no limit, but each cached VM is a running guest holding default_memory)'
        : undefined,
  },
  vm_cache_endpoint: { kind: 'string', check: absolute },
};

export interface SectionSpec {
  /** How the section is written in TOML. */
  title: string;
  keys: Readonly<Record<string, KeySpec>>;
  /** Keys Kata (Go runtime or runtime-rs) reads here that kata-ts does not implement. */
  upstreamOnly: ReadonlySet<string>;
  /** Keys kata-ts reads elsewhere or under another name. */
  moved: Readonly<Record<string, string>>;
}

export const SECTIONS: Readonly<Record<SectionName, SectionSpec>> = {
  hypervisor: {
    title: '[hypervisor.qemu]',
    keys: qemuKeys,
    upstreamOnly: new Set([
      'cold_plug_vfio',
      'disable_guest_selinux',
      'disable_image_nvdimm',
      'enable_guest_swap',
      'enable_hugepages',
      'enable_iommu',
      'enable_iommu_platform',
      'enable_mem_prealloc',
      'enable_numa',
      'enable_vhost_user_store',
      'enable_virtio_mem',
      'extra_monitor_socket',
      'factory',
      'firmware',
      'firmware_volume',
      'guest_memory_dump_paging',
      'guest_memory_dump_path',
      'hot_plug_vfio',
      'indep_iothreads',
      'memory_offset',
      'msize_9p',
      'network_queues',
      'num_queues',
      'numa_mapping',
      'overhead_memory',
      'overhead_vcpus',
      'pcie_root_port',
      'pcie_switch_port',
      'pflashes',
      'queue_size',
      'reclaim_guest_freed_memory',
      'rootless',
      'rx_rate_limiter_max_rate',
      'seccomp_sandbox',
      'seccompsandbox',
      'tdx_quote_generation_service_socket_port',
      'tx_rate_limiter_max_rate',
      'use_legacy_serial',
      'valid_vhost_user_store_paths',
      'vhost_user_reconnect_timeout_sec',
      'vhost_user_store_path',
      'virtio_fs_queue_size',
      'vm_rootfs_driver',
    ]),
    // runtime-rs's [hypervisor.qemu.factory]; the message below wins over the upstreamOnly one.
    moved: { factory: "kata-ts reads [factory] (Kata's Go runtime's table)" },
  },
  agent: {
    title: '[agent.kata]',
    keys: agentKeys,
    upstreamOnly: new Set(['cdh_api_timeout', 'reconnect_timeout_ms', 'mem_agent']),
    moved: { dial_timeout_ms: 'kata-ts reads dial_timeout, in seconds' },
  },
  runtime: {
    title: '[runtime]',
    keys: runtimeKeys,
    upstreamOnly: new Set([
      'dan_conf',
      'disable_guest_empty_dir',
      'emptydir_mode',
      'enable_vcpus_pinning',
      'guest_selinux_label',
      'jaeger_password',
      'jaeger_user',
      'kubelet_root_dir',
      'pod_resource_api_sock',
    ]),
    moved: {
      create_container_timeout:
        'kata-ts reads it from [agent.kata] create_container_timeout, as runtime-rs does',
      disable_selinux: 'kata-ts reads it from [hypervisor.qemu] disable_selinux, as Kata does',
    },
  },
  factory: {
    title: '[factory]',
    keys: factoryKeys,
    upstreamOnly: new Set(),
    moved: {},
  },
};

/** Top-level tables Kata has that kata-ts ignores. */
export const UPSTREAM_ONLY_SECTIONS: ReadonlySet<string> = new Set(['image']);

export function targetOf(section: SectionName, key: string): { section: SectionName; field: string } | null {
  const spec = SECTIONS[section].keys[key];
  if (!spec) return null;
  if (spec.target === undefined) return { section, field: key };
  return spec.target;
}

/** The TOML key (and section) a stored field is read from; the inverse of targetOf. */
export function keyOf(section: SectionName, field: string): { section: SectionName; key: string } {
  for (const name of Object.keys(SECTIONS) as SectionName[]) {
    for (const [key, spec] of Object.entries(SECTIONS[name].keys)) {
      const t = spec.target === undefined ? { section: name, field: key } : spec.target;
      if (t && t.section === section && t.field === field) return { section: name, key };
    }
  }
  return { section, key: field };
}

export type Checked =
  | { ok: true; value: string | number | boolean | string[] }
  | { ok: false; problem: string; allowed?: readonly string[] };

function kindText(kind: ValueKind): string {
  switch (kind) {
    case 'string':
      return 'a string';
    case 'bool':
      return 'true or false';
    case 'int':
      return 'an integer';
    case 'strings':
      return 'an array of strings';
  }
}

function typeOfValue(v: unknown, fromToml: boolean): string {
  if (typeof v === 'string') return 'a string';
  if (typeof v === 'boolean') return 'a boolean';
  if (typeof v === 'bigint') return 'an integer';
  if (typeof v === 'number') return fromToml || !Number.isInteger(v) ? 'a float' : 'an integer';
  if (Array.isArray(v)) return 'an array';
  if (v !== null && typeof v === 'object') return v.constructor?.name === 'TomlDate' ? 'a date' : 'a table';
  return typeof v;
}

/**
 * Checks one value against its spec. `fromToml`: the value comes straight from smol-toml (integers are
 * bigint there, so 2.0 is told apart from 2); otherwise it comes from a KataConfig object.
 * Returns the value converted to its stored form (bigint → number, aliases resolved).
 */
export function checkValue(spec: KeySpec, raw: unknown, fromToml: boolean): Checked {
  const wrongType = (): Checked => ({
    ok: false,
    problem: `must be ${kindText(spec.kind)}, got ${typeOfValue(raw, fromToml)}`,
    allowed: spec.kind === 'bool' ? ['true', 'false'] : spec.enum,
  });
  let value: string | number | boolean | string[];
  switch (spec.kind) {
    case 'string':
      if (typeof raw !== 'string') return wrongType();
      value = spec.aliases?.[raw] ?? raw;
      if (spec.enum && !spec.enum.includes(value)) {
        return { ok: false, problem: `${JSON.stringify(raw)} is not allowed`, allowed: spec.enum };
      }
      break;
    case 'bool':
      if (typeof raw !== 'boolean') return wrongType();
      value = raw;
      break;
    case 'int': {
      let n: number;
      if (typeof raw === 'bigint') n = Number(raw);
      else if (typeof raw === 'number' && !fromToml && Number.isInteger(raw)) n = raw;
      else return wrongType();
      if (!Number.isSafeInteger(n)) return { ok: false, problem: `${String(raw)} is out of range` };
      const { min, max } = spec;
      if ((min !== undefined && n < min) || (max !== undefined && n > max)) {
        const range =
          max === undefined ? `at least ${min}` : min === undefined ? `at most ${max}` : `${min}..${max}`;
        return { ok: false, problem: `${n} is out of range (allowed: ${range})` };
      }
      value = n;
      break;
    }
    case 'strings':
      if (!Array.isArray(raw) || raw.some((e) => typeof e !== 'string')) {
        return {
          ok: false,
          problem: Array.isArray(raw)
            ? 'must be an array of strings, but has a non-string entry'
            : `must be an array of strings, got ${typeOfValue(raw, fromToml)}`,
        };
      }
      value = [...(raw as string[])];
      break;
  }
  const problem = spec.check?.(value);
  if (problem) return { ok: false, problem };
  return { ok: true, value };
}

/** Edit distance, for "did you mean" on misspelt keys. */
function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cur = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = cur;
    }
  }
  return row[b.length]!;
}

/** Why a key kata-ts does not read is ignored: moved, a Kata option we lack, or likely a typo. */
export function unknownKeyReason(section: SectionName, key: string): string {
  const spec = SECTIONS[section];
  const moved = spec.moved[key];
  if (moved) return `is ignored: ${moved}`;
  if (spec.upstreamOnly.has(key)) return 'is a Kata option kata-ts does not implement; ignored';
  const near = Object.keys(spec.keys)
    .map((k) => ({ k, d: distance(key, k) }))
    .filter(({ d }) => d <= 2)
    .sort((a, b) => a.d - b.d)[0];
  return near ? `is not a known key; ignored (did you mean ${near.k}?)` : 'is not a known key; ignored';
}
