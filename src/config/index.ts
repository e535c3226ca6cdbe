// The config layer's public surface: load Kata's configuration.toml, apply per-pod annotations, defaults.
import { hostLimits, unresolvedDefaults } from './defaults.js';
import type { KataConfig } from './types.js';
import { resolveHostLimits } from './validate.js';

export {
  type ApplyAnnotationsOptions,
  applyAnnotations,
  isHypervisorAnnotationEnabled,
  knownAnnotations,
} from './annotations.js';
export {
  DEFAULT_INITRD_PATH,
  DEFAULT_KERNEL_PATH,
  DEFAULT_QEMU_PATH,
  DEFAULT_SEARCH_PATHS,
  DEFAULT_VIRTIOFSD_PATH,
  type HostLimits,
} from './defaults.js';
export { ConfigError, type ConfigErrorDetails } from './errors.js';
export {
  CONFIG_BODY_SOURCE,
  chooseConfigFile,
  type LoadOptions,
  type LoadResult,
  loadConfiguration,
} from './load.js';
export {
  ACCELS,
  AGENT_CHANNELS,
  BLOCK_DEVICE_AIO_MODES,
  BLOCK_DEVICE_DRIVERS,
  INTERNETWORKING_MODELS,
  MAX_VCPUS,
  MIN_MEMORY_MIB,
  SHARED_FS_TYPES,
  VIRTIO_FS_CACHE_MODES,
} from './schema.js';
export type * from './types.js';

/**
 * Kata's defaults with no file read, host-dependent values resolved for this machine
 * (default_maxvcpus = host CPUs, default_maxmemory = host memory): what an empty configuration.toml gives.
 */
export function defaultConfig(): KataConfig {
  const config = unresolvedDefaults();
  resolveHostLimits(config, hostLimits(), []);
  return config;
}
