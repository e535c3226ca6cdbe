// io.katacontainers.config.* annotations: per-pod overrides of the configuration. Hypervisor ones only where
// [hypervisor.qemu] enable_annotations allows them (Kata's rule; a pod must not pick its own QEMU binary unless
// the operator said so); agent and runtime ones are always allowed, as in Kata. Every value is parsed strictly
// and range-checked; the result is validated like a loaded config.
import { isAbsolute, posix } from 'node:path';
import { logger } from '../common/log.js';
import { type HostLimits, hostLimits } from './defaults.js';
import { ConfigError, allowedList } from './errors.js';
import { matchesAny } from './glob.js';
import { SECTIONS, checkValue } from './schema.js';
import type { KataConfig, QemuConfig } from './types.js';
import { type FieldRef, type OriginInfo, resolveHostLimits, validateConfig } from './validate.js';

export const ANNOTATION_PREFIX = 'io.katacontainers.config.';
export const HYPERVISOR_ANNOTATION_PREFIX = `${ANNOTATION_PREFIX}hypervisor.`;
export const AGENT_ANNOTATION_PREFIX = `${ANNOTATION_PREFIX}agent.`;
export const RUNTIME_ANNOTATION_PREFIX = `${ANNOTATION_PREFIX}runtime.`;

const log = logger('config');

type Parser = 'string' | 'bool' | 'uint' | 'memory' | 'path' | 'path-or-empty';

type PathList =
  | 'valid_hypervisor_paths'
  | 'valid_virtio_fs_daemon_paths'
  | 'valid_entropy_sources'
  | 'valid_file_mem_backends';

interface Ctx {
  config: KataConfig;
  annotation: string;
  value: string;
  host: HostLimits;
  /** Records that `ref` now holds a value from this annotation. */
  setBy(ref: FieldRef): void;
  fail(problem: string, allowed?: readonly string[]): ConfigError;
}

interface Rule {
  /** The field the annotation sets (plain rules). */
  field?: FieldRef;
  parse?: Parser;
  /** Paths must also match one of these glob lists from [hypervisor.qemu]. */
  pathList?: PathList;
  /** A rule that does its own parsing and merging. */
  apply?: (ctx: Ctx) => void;
}

const hv = (field: keyof QemuConfig, parse: Parser, pathList?: PathList): Rule => ({
  field: { section: 'hypervisor', field },
  parse,
  pathList,
});

/** Hypervisor annotations kata-ts implements, by Kata's annotation name (note blk_* and default_max_vcpus). */
const HYPERVISOR_RULES: Readonly<Record<string, Rule>> = {
  path: hv('path', 'path', 'valid_hypervisor_paths'),
  kernel: hv('kernel', 'path'),
  image: hv('image', 'path-or-empty'),
  initrd: hv('initrd', 'path-or-empty'),
  kernel_params: { apply: applyKernelParams },
  machine_type: hv('machine_type', 'string'),
  machine_accelerators: hv('machine_accelerators', 'string'),
  cpu_features: hv('cpu_features', 'string'),
  default_vcpus: hv('default_vcpus', 'uint'),
  default_max_vcpus: { apply: applyMaxVcpus },
  default_memory: hv('default_memory', 'memory'),
  memory_slots: hv('memory_slots', 'uint'),
  shared_fs: hv('shared_fs', 'string'),
  virtio_fs_daemon: hv('virtio_fs_daemon', 'path', 'valid_virtio_fs_daemon_paths'),
  virtio_fs_extra_args: { apply: applyVirtioFsExtraArgs },
  virtio_fs_cache: hv('virtio_fs_cache', 'string'),
  virtio_fs_cache_size: hv('virtio_fs_cache_size', 'uint'),
  block_device_driver: hv('block_device_driver', 'string'),
  block_device_aio: hv('block_device_aio', 'string'),
  disable_block_device_use: hv('disable_block_device_use', 'bool'),
  block_device_cache_set: hv('block_device_cache_set', 'bool'),
  block_device_cache_direct: hv('block_device_cache_direct', 'bool'),
  block_device_cache_noflush: hv('block_device_cache_noflush', 'bool'),
  blk_logical_sector_size: hv('block_device_logical_sector_size', 'uint'),
  blk_physical_sector_size: hv('block_device_physical_sector_size', 'uint'),
  enable_iothreads: hv('enable_iothreads', 'bool'),
  disable_vhost_net: hv('disable_vhost_net', 'bool'),
  entropy_source: hv('entropy_source', 'string', 'valid_entropy_sources'),
  file_mem_backend: hv('file_mem_backend', 'path', 'valid_file_mem_backends'),
  guest_hook_path: hv('guest_hook_path', 'path-or-empty'),
  // kata-ts's own keys, settable per pod when enable_annotations allows them.
  accel: hv('accel', 'string'),
  agent_channel: hv('agent_channel', 'string'),
};

const agentField = (field: string, parse: Parser): Rule => ({ field: { section: 'agent', field }, parse });
const runtimeField = (field: string, parse: Parser): Rule => ({
  field: { section: 'runtime', field },
  parse,
});

const AGENT_RULES: Readonly<Record<string, Rule>> = {
  kernel_modules: { apply: applyKernelModules },
  enable_tracing: agentField('enable_tracing', 'bool'),
  container_pipe_size: agentField('container_pipe_size', 'uint'),
};

const RUNTIME_RULES: Readonly<Record<string, Rule>> = {
  name: { apply: fixedName('virt-container') },
  hypervisor_name: { apply: fixedName('qemu') },
  agent_name: { apply: fixedName('kata') },
  disable_guest_seccomp: runtimeField('disable_guest_seccomp', 'bool'),
  enable_pprof: runtimeField('enable_pprof', 'bool'),
  experimental: { apply: applyExperimental },
  internetworking_model: runtimeField('internetworking_model', 'string'),
  sandbox_cgroup_only: runtimeField('sandbox_cgroup_only', 'bool'),
  disable_new_netns: runtimeField('disable_new_netns', 'bool'),
  vfio_mode: runtimeField('vfio_mode', 'string'),
  // runtime-rs maps this runtime annotation onto the agent's request timeout.
  create_container_timeout: agentField('create_container_timeout', 'uint'),
  sandbox_bind_mounts: {
    apply: (ctx) => {
      // Host bind mounts are the operator's decision (Kata refuses them from workloads too).
      throw ctx.fail(
        'host bind mounts cannot be set by annotation; set [runtime] sandbox_bind_mounts in the configuration file',
      );
    },
  },
};

/** Kata agent/runtime annotations kata-ts does not implement: ignored with a warning, as runtime-rs does. */
const IGNORED = new Set([
  `${AGENT_ANNOTATION_PREFIX}cdh_api_timeout_ms`,
  `${AGENT_ANNOTATION_PREFIX}policy`,
  `${RUNTIME_ANNOTATION_PREFIX}enable_vcpus_pinning`,
  `${RUNTIME_ANNOTATION_PREFIX}shared_mounts`,
  `${RUNTIME_ANNOTATION_PREFIX}force_guest_pull`,
]);

function parseValue(ctx: Ctx, parser: Parser): string | number | boolean {
  const v = ctx.value;
  switch (parser) {
    case 'string':
      return v;
    case 'bool':
      if (v === 'true') return true;
      if (v === 'false') return false;
      throw ctx.fail('must be a boolean', ['true', 'false']);
    case 'uint': {
      if (!/^\d+$/.test(v)) throw ctx.fail('must be a non-negative integer');
      const n = Number(v);
      if (!Number.isSafeInteger(n)) throw ctx.fail('is out of range');
      return n;
    }
    case 'memory':
      return parseMemoryMiB(ctx);
    case 'path':
    case 'path-or-empty':
      if (v === '' && parser === 'path-or-empty') return v;
      if (!isAbsolute(v) || posix.normalize(v) !== v) {
        throw ctx.fail('must be an absolute, normalised path (no "..", "." or "//")');
      }
      return v;
  }
}

const UNIT_BYTES: Readonly<Record<string, number>> = {
  b: 1,
  k: 1e3,
  kb: 1e3,
  ki: 2 ** 10,
  kib: 2 ** 10,
  m: 1e6,
  mb: 1e6,
  mi: 2 ** 20,
  mib: 2 ** 20,
  g: 1e9,
  gb: 1e9,
  gi: 2 ** 30,
  gib: 2 ** 30,
  t: 1e12,
  tb: 1e12,
  ti: 2 ** 40,
  tib: 2 ** 40,
};

/** Plain numbers are MiB (Kata); "2GiB", "512Mi", "1G" etc. are converted and rounded down to whole MiB. */
function parseMemoryMiB(ctx: Ctx): number {
  const m = /^(\d+(?:\.\d+)?)\s*([A-Za-z]*)$/.exec(ctx.value);
  const unit = m?.[2]?.toLowerCase() ?? '';
  if (!m || (unit === '' && m[1]!.includes('.')) || (unit !== '' && UNIT_BYTES[unit] === undefined)) {
    throw ctx.fail('must be a whole number of MiB, or a size with a unit such as "2GiB" or "512Mi"');
  }
  const mib = unit === '' ? Number(m[1]) : Math.floor((Number(m[1]) * UNIT_BYTES[unit]!) / 2 ** 20);
  if (!Number.isSafeInteger(mib)) throw ctx.fail('is out of range');
  return mib;
}

function applyKernelParams(ctx: Ctx): void {
  // Kata: a parameter from the annotation replaces any existing one with the same key, others are kept.
  const added = ctx.value.split(/\s+/).filter(Boolean);
  if (added.length === 0) return;
  const keyOfParam = (p: string) => p.split('=', 1)[0]!;
  const replaced = new Set(added.map(keyOfParam));
  const hvc = ctx.config.hypervisor;
  const kept = hvc.kernel_params.split(/\s+/).filter((p) => p && !replaced.has(keyOfParam(p)));
  hvc.kernel_params = [...kept, ...added].join(' ');
  ctx.setBy({ section: 'hypervisor', field: 'kernel_params' });
}

function applyMaxVcpus(ctx: Ctx): void {
  let n = parseValue(ctx, 'uint') as number;
  if (n === 0) n = ctx.host.cpus;
  if (n > ctx.host.cpus) throw ctx.fail(`is greater than this host's ${ctx.host.cpus} CPUs`);
  setChecked(ctx, { section: 'hypervisor', field: 'default_maxvcpus' }, n);
}

function applyVirtioFsExtraArgs(ctx: Ctx): void {
  // Kata's Go runtime takes a JSON array, runtime-rs a comma-separated list; both append.
  let args: string[];
  if (ctx.value.trimStart().startsWith('[')) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(ctx.value);
    } catch (err) {
      throw ctx.fail(`is not a valid JSON array (${(err as Error).message})`);
    }
    if (!Array.isArray(parsed) || parsed.some((a) => typeof a !== 'string')) {
      throw ctx.fail('must be a JSON array of strings or a comma-separated list');
    }
    args = parsed as string[];
  } else {
    args = ctx.value.split(',').map((a) => a.trim());
  }
  if (args.some((a) => a === '')) throw ctx.fail('must not contain empty arguments');
  ctx.config.hypervisor.virtio_fs_extra_args = [...ctx.config.hypervisor.virtio_fs_extra_args, ...args];
  ctx.setBy({ section: 'hypervisor', field: 'virtio_fs_extra_args' });
}

function applyKernelModules(ctx: Ctx): void {
  // "e1000e InterruptThrottleRate=3000; i915 enable_ppgtt=0": ';'-separated, appended as runtime-rs does.
  const modules = ctx.value
    .split(';')
    .map((m) => m.trim())
    .filter(Boolean);
  ctx.config.agent.kernel_modules = [...ctx.config.agent.kernel_modules, ...modules];
  ctx.setBy({ section: 'agent', field: 'kernel_modules' });
}

function applyExperimental(ctx: Ctx): void {
  const features = ctx.value.split(/[\s,]+/).filter(Boolean);
  const rt = ctx.config.runtime;
  rt.experimental = [...new Set([...rt.experimental, ...features])];
  ctx.setBy({ section: 'runtime', field: 'experimental' });
}

function fixedName(only: string): (ctx: Ctx) => void {
  return (ctx) => {
    if (ctx.value !== only) throw ctx.fail('is not supported by kata-ts', [only]);
  };
}

/** Range/enum-checks a typed value against the field's schema, then stores it. */
function setChecked(ctx: Ctx, ref: FieldRef, value: string | number | boolean): void {
  const spec = Object.entries(SECTIONS[ref.section].keys).find(
    ([key, s]) => (s.target === undefined && key === ref.field) || (s.target && s.target.field === ref.field),
  )?.[1];
  let stored: unknown = value;
  if (spec) {
    const checked = checkValue(spec, value, false);
    if (!checked.ok) throw ctx.fail(checked.problem, checked.allowed);
    stored = checked.value;
  }
  (ctx.config[ref.section] as unknown as Record<string, unknown>)[ref.field] = stored;
  ctx.setBy(ref);
}

function applyRule(ctx: Ctx, rule: Rule): void {
  if (rule.apply) {
    rule.apply(ctx);
    return;
  }
  const ref = rule.field!;
  const value = parseValue(ctx, rule.parse ?? 'string');
  if (rule.pathList) {
    const patterns = ctx.config.hypervisor[rule.pathList];
    if (!matchesAny(patterns, String(value))) {
      throw ctx.fail(
        patterns.length === 0
          ? `is not allowed: [hypervisor.qemu] ${rule.pathList} is empty, so no value is accepted`
          : `is not allowed by [hypervisor.qemu] ${rule.pathList}`,
        patterns,
      );
    }
  }
  setChecked(ctx, ref, value);
}

/** Kata's allow-list check, but anchored: "path" enables exactly `...hypervisor.path`, not `guest_hook_path`. */
export function isHypervisorAnnotationEnabled(config: KataConfig, name: string): boolean {
  return config.hypervisor.enable_annotations.some((re) => {
    try {
      return new RegExp(`^(?:${re})$`).test(name);
    } catch {
      return false;
    }
  });
}

export interface ApplyAnnotationsOptions {
  /** What default_max_vcpus = 0 means and its ceiling; default: this machine. */
  host?: HostLimits;
}

/**
 * Returns a copy of `config` with the io.katacontainers.config.* annotations applied, validated as a whole.
 * Throws a ConfigError naming the annotation, its value and what is allowed. Other annotations are ignored.
 */
export function applyAnnotations(
  config: KataConfig,
  annotations: Record<string, string>,
  opts: ApplyAnnotationsOptions = {},
): KataConfig {
  const out = structuredClone(config);
  const host = opts.host ?? hostLimits();
  const origins = new Map<string, OriginInfo>();

  for (const annotation of Object.keys(annotations).sort()) {
    if (!annotation.startsWith(ANNOTATION_PREFIX)) continue;
    const value = (annotations[annotation] ?? '').trim();
    const ctx: Ctx = {
      config: out,
      annotation,
      value,
      host,
      setBy: (ref) => origins.set(`${ref.section}.${ref.field}`, { kind: 'annotation', annotation, value }),
      fail: (problem, allowed) =>
        new ConfigError(
          `annotation ${annotation}=${JSON.stringify(value)}: ${problem}${allowed ? `; allowed: ${allowedList(allowed)}` : ''}`,
          { annotation, value, allowed },
        ),
    };

    let rules: Readonly<Record<string, Rule>>;
    let name: string;
    if (annotation.startsWith(HYPERVISOR_ANNOTATION_PREFIX)) {
      name = annotation.slice(HYPERVISOR_ANNOTATION_PREFIX.length);
      if (!isHypervisorAnnotationEnabled(out, name)) {
        throw ctx.fail(
          `is not enabled: [hypervisor.qemu] enable_annotations allows ${
            out.hypervisor.enable_annotations.length === 0
              ? 'no hypervisor annotations'
              : `only names matching ${allowedList(out.hypervisor.enable_annotations)}`
          }`,
        );
      }
      rules = HYPERVISOR_RULES;
      if (!rules[name]) {
        throw ctx.fail(
          'is not supported by kata-ts',
          Object.keys(HYPERVISOR_RULES).map((n) => HYPERVISOR_ANNOTATION_PREFIX + n),
        );
      }
    } else if (annotation.startsWith(AGENT_ANNOTATION_PREFIX)) {
      name = annotation.slice(AGENT_ANNOTATION_PREFIX.length);
      rules = AGENT_RULES;
    } else if (annotation.startsWith(RUNTIME_ANNOTATION_PREFIX)) {
      name = annotation.slice(RUNTIME_ANNOTATION_PREFIX.length);
      rules = RUNTIME_RULES;
    } else {
      log.warn({ annotation }, 'unknown configuration annotation ignored');
      continue;
    }

    const rule = rules[name];
    if (!rule) {
      log.warn(
        { annotation },
        IGNORED.has(annotation)
          ? 'Kata annotation not implemented by kata-ts; ignored'
          : 'unknown configuration annotation ignored',
      );
      continue;
    }
    applyRule(ctx, rule);
  }

  const warnings: string[] = [];
  resolveHostLimits(out, host, warnings);
  for (const w of warnings) log.warn(w);
  validateConfig(out, (ref) => origins.get(`${ref.section}.${ref.field}`));
  return out;
}

/** Every io.katacontainers.config.* annotation kata-ts understands (for `kata-ctl env` and the fuzz suite). */
export function knownAnnotations(): string[] {
  return [
    ...Object.keys(HYPERVISOR_RULES).map((k) => HYPERVISOR_ANNOTATION_PREFIX + k),
    ...Object.keys(AGENT_RULES).map((k) => AGENT_ANNOTATION_PREFIX + k),
    ...Object.keys(RUNTIME_RULES).map((k) => RUNTIME_ANNOTATION_PREFIX + k),
  ];
}
