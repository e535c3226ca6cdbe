// Checks on the finished configuration (after files, drop-ins and annotations are merged): every field
// against its spec again, then the rules that span fields. Errors point at where the value came from.
import type { HostLimits } from './defaults.js';
import { ConfigError, allowedList, show, where } from './errors.js';
import { MAX_VCPUS, SECTIONS, type SectionName, checkValue, keyOf } from './schema.js';
import type { KataConfig } from './types.js';

export interface FieldRef {
  section: SectionName;
  field: string;
}

export type OriginInfo =
  | { kind: 'file'; file: string; line?: number }
  | { kind: 'annotation'; annotation: string; value: string };

/** Tells where a field's current value came from; undefined = a default. */
export type Origin = (ref: FieldRef) => OriginInfo | undefined;

const noOrigin: Origin = () => undefined;

export function keyText(ref: FieldRef): string {
  const { section, key } = keyOf(ref.section, ref.field);
  return `${SECTIONS[section].title} ${key}`;
}

/** Builds the ConfigError for a problem with one or more fields, blaming the first one with a known origin. */
export function fieldError(
  refs: readonly FieldRef[],
  problem: string,
  origin: Origin,
  allowed?: readonly string[],
  value?: unknown,
): ConfigError {
  const blamed = refs.find((r) => origin(r)) ?? refs[0]!;
  const from = origin(blamed);
  const key = keyText(blamed);
  const tail = allowed ? `; allowed: ${allowedList(allowed)}` : '';
  if (from?.kind === 'annotation') {
    return new ConfigError(
      `annotation ${from.annotation}=${JSON.stringify(from.value)}: ${key}: ${problem}${tail}`,
      {
        annotation: from.annotation,
        value: from.value,
        key,
        allowed,
      },
    );
  }
  const file = from?.file;
  const line = from?.line;
  return new ConfigError(`${where(file, line)}${key}: ${problem}${tail}`, {
    file,
    line,
    key,
    allowed,
    value: value === undefined ? undefined : show(value),
  });
}

function get(config: KataConfig, ref: FieldRef): unknown {
  return (config[ref.section] as unknown as Record<string, unknown>)[ref.field];
}

function set(config: KataConfig, ref: FieldRef, value: unknown): void {
  (config[ref.section] as unknown as Record<string, unknown>)[ref.field] = value;
}

/**
 * Turns Kata's "0 = the host's" into numbers and caps values above what the host has (Kata does the same;
 * we also say so). Mutates `config`.
 */
export function resolveHostLimits(config: KataConfig, host: HostLimits, warnings: string[]): void {
  const hv = config.hypervisor;
  if (hv.default_maxvcpus === 0) {
    hv.default_maxvcpus = Math.min(host.cpus, MAX_VCPUS);
  } else if (hv.default_maxvcpus > host.cpus) {
    warnings.push(
      `[hypervisor.qemu] default_maxvcpus = ${hv.default_maxvcpus} is more than this host's ${host.cpus} CPUs; using ${host.cpus}`,
    );
    hv.default_maxvcpus = host.cpus;
  }
  if (hv.default_maxmemory === 0) {
    hv.default_maxmemory = host.memoryMiB;
  } else if (hv.default_maxmemory > host.memoryMiB) {
    warnings.push(
      `[hypervisor.qemu] default_maxmemory = ${hv.default_maxmemory} MiB is more than this host's ${host.memoryMiB} MiB; using ${host.memoryMiB}`,
    );
    hv.default_maxmemory = host.memoryMiB;
  }
  // Kata: "unspecified or 0 → 1 bridge".
  if (hv.default_bridges === 0) hv.default_bridges = 1;
}

/** Throws a ConfigError for the first thing wrong with `config`. Normalises aliases in place. */
export function validateConfig(config: KataConfig, origin: Origin = noOrigin): void {
  if (config.hypervisorName !== 'qemu') {
    throw new ConfigError(
      `hypervisor ${JSON.stringify(config.hypervisorName)} is not supported; allowed: "qemu"`,
      {
        allowed: ['qemu'],
      },
    );
  }
  if (config.agentName !== 'kata') {
    throw new ConfigError(`agent ${JSON.stringify(config.agentName)} is not supported; allowed: "kata"`, {
      allowed: ['kata'],
    });
  }

  for (const section of Object.keys(SECTIONS) as SectionName[]) {
    for (const [key, spec] of Object.entries(SECTIONS[section].keys)) {
      const target = spec.target === undefined ? { section, field: key } : spec.target;
      if (!target) continue;
      const checked = checkValue(spec, get(config, target), false);
      if (!checked.ok)
        throw fieldError([target], checked.problem, origin, checked.allowed, get(config, target));
      set(config, target, checked.value);
    }
  }

  const hv = config.hypervisor;
  const ref = (field: string): FieldRef => ({ section: 'hypervisor', field });

  if (hv.default_vcpus > hv.default_maxvcpus) {
    throw fieldError(
      [ref('default_vcpus'), ref('default_maxvcpus')],
      `default_vcpus (${hv.default_vcpus}) is greater than default_maxvcpus (${hv.default_maxvcpus}); ` +
        'default_maxvcpus = 0 means the number of host CPUs',
      origin,
    );
  }
  if (hv.default_memory > hv.default_maxmemory) {
    throw fieldError(
      [ref('default_memory'), ref('default_maxmemory')],
      `default_memory (${hv.default_memory} MiB) is greater than default_maxmemory (${hv.default_maxmemory} MiB); ` +
        'default_maxmemory = 0 means the host memory',
      origin,
    );
  }
  if ((hv.initrd === '') === (hv.image === '')) {
    throw fieldError(
      [ref('initrd'), ref('image')],
      hv.initrd === ''
        ? 'neither initrd nor image is set; set exactly one of them'
        : `both initrd (${JSON.stringify(hv.initrd)}) and image (${JSON.stringify(hv.image)}) are set; set exactly one of them`,
      origin,
    );
  }
  if (hv.shared_fs !== 'none' && hv.virtio_fs_daemon === '') {
    throw fieldError(
      [ref('virtio_fs_daemon'), ref('shared_fs')],
      `shared_fs = ${JSON.stringify(hv.shared_fs)} needs virtio_fs_daemon (the virtiofsd path)`,
      origin,
    );
  }
  const logical = hv.block_device_logical_sector_size;
  const physical = hv.block_device_physical_sector_size;
  if (logical !== 0 && physical !== 0 && logical > physical) {
    throw fieldError(
      [ref('block_device_logical_sector_size'), ref('block_device_physical_sector_size')],
      `logical sector size (${logical}) must not be larger than physical sector size (${physical})`,
      origin,
    );
  }
  if (config.runtime.disable_new_netns && config.runtime.internetworking_model !== 'none') {
    throw fieldError(
      [
        { section: 'runtime', field: 'disable_new_netns' },
        { section: 'runtime', field: 'internetworking_model' },
      ],
      `disable_new_netns = true only works with internetworking_model = "none" (it is ${JSON.stringify(config.runtime.internetworking_model)})`,
      origin,
    );
  }
}
