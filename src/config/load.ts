// loadConfiguration: find configuration.toml as Kata does, add config.d drop-ins, check, merge onto the
// defaults, resolve host-dependent values and validate. Synchronous: the shim calls it once at start.
import { readFileSync, readdirSync, realpathSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { logger } from '../common/log.js';
import { DEFAULT_SEARCH_PATHS, type HostLimits, hostLimits, unresolvedDefaults } from './defaults.js';
import { ConfigError } from './errors.js';
import { SECTIONS, type SectionName, checkValue, keyOf, targetOf } from './schema.js';
import { type Source, type Table, checkSource, mergeSources, parseSource, sectionTable } from './toml.js';
import type { KataConfig } from './types.js';
import { type Origin, resolveHostLimits, validateConfig } from './validate.js';

export interface LoadOptions {
  /** Explicit file: the shim's ConfigPath runtime option (or `kata-ctl --config`). Wins over everything else. */
  configPath?: string;
  /** A whole configuration.toml in memory (containerd runtime options' config_body); no drop-ins apply. */
  configBody?: string;
  /** Where KATA_CONF_FILE is read from; default process.env. */
  env?: NodeJS.ProcessEnv;
  /** Default: DEFAULT_SEARCH_PATHS. */
  searchPaths?: readonly string[];
  /** What "0 = the host's" means for default_maxvcpus / default_maxmemory; default: this machine. */
  host?: HostLimits;
}

export interface LoadResult {
  config: KataConfig;
  /** Unknown or ignored keys and values capped to the host, one sentence each (also logged). */
  warnings: string[];
}

export const CONFIG_BODY_SOURCE = '<config_body>';

const log = logger('config');

function isFile(path: string): boolean {
  try {
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

function exists(path: string): boolean {
  try {
    statSync(path);
    return true;
  } catch {
    return false;
  }
}

function explicitFile(path: string, how: string): string {
  const abs = resolve(path);
  if (!exists(abs)) {
    throw new ConfigError(`configuration file ${abs} (${how}) does not exist`, { file: abs, tried: [abs] });
  }
  if (!isFile(abs))
    throw new ConfigError(`configuration file ${abs} (${how}) is not a regular file`, { file: abs });
  // Kata canonicalises the path, so config.d is looked for beside the real file, not a symlink to it.
  return realpathSync(abs);
}

/** Kata's lookup order: explicit path, then KATA_CONF_FILE, then the first default path that exists. */
export function chooseConfigFile(opts: Pick<LoadOptions, 'configPath' | 'env' | 'searchPaths'> = {}): string {
  if (opts.configPath) return explicitFile(opts.configPath, 'the ConfigPath option');
  const envPath = (opts.env ?? process.env).KATA_CONF_FILE;
  if (envPath) return explicitFile(envPath, 'from KATA_CONF_FILE');
  const paths = opts.searchPaths ?? DEFAULT_SEARCH_PATHS;
  for (const p of paths) {
    if (!exists(p)) continue;
    if (!isFile(p)) throw new ConfigError(`configuration file ${p} is not a regular file`, { file: p });
    return realpathSync(p);
  }
  throw new ConfigError(
    `no configuration file found: KATA_CONF_FILE is not set and none of these exist: ${paths.join(', ')} ` +
      '(install config/configuration-qemu.toml as one of them, or pass ConfigPath)',
    { tried: [...paths] },
  );
}

function readSource(path: string): Source {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(
      `${path}: cannot read configuration: ${(err as Error).message}`,
      { file: path },
      { cause: err },
    );
  }
  return parseSource(path, text);
}

/** `config.d/*.toml` beside the main file, in byte order of their names (Kata sorts by file name). */
export function dropInFiles(configFile: string): string[] {
  const dir = join(dirname(configFile), 'config.d');
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new ConfigError(
      `${dir}: cannot list drop-in directory: ${(err as Error).message}`,
      { file: dir },
      { cause: err },
    );
  }
  const files = names
    .filter((n) => n.endsWith('.toml'))
    .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
    .map((n) => join(dir, n));
  for (const f of files) {
    if (!isFile(f))
      throw new ConfigError(`${f}: a drop-in must be a regular file (or a symlink to one)`, { file: f });
  }
  return files;
}

function decode(tree: Table, config: KataConfig): void {
  for (const section of Object.keys(SECTIONS) as SectionName[]) {
    const table = sectionTable(tree, section);
    if (!table) continue;
    for (const [key, raw] of Object.entries(table)) {
      const spec = SECTIONS[section].keys[key];
      const target = targetOf(section, key);
      if (!spec || !target) continue;
      const checked = checkValue(spec, raw, true);
      // Each source was checked already; a failure here would be a bug in this module.
      if (!checked.ok)
        throw new Error(`config decode: ${section}.${key} passed the file check but not decoding`);
      (config[target.section] as unknown as Record<string, unknown>)[target.field] = checked.value;
    }
  }
}

export function loadConfiguration(opts: LoadOptions = {}): LoadResult {
  const warnings: string[] = [];
  const sources: Source[] = [];
  // containerd passes empty strings for unset protobuf fields, so "" counts as "not given".
  if (opts.configBody) {
    if (opts.configPath) warnings.push(`config_body was given, so ConfigPath ${opts.configPath} is ignored`);
    sources.push(parseSource(CONFIG_BODY_SOURCE, opts.configBody));
  } else {
    const file = chooseConfigFile(opts);
    sources.push(readSource(file));
    for (const dropIn of dropInFiles(file)) sources.push(readSource(dropIn));
  }

  for (const src of sources) checkSource(src, warnings);
  const { tree, provenance } = mergeSources(sources);

  const config = unresolvedDefaults();
  config.sources = sources.map((s) => s.name);
  decode(tree, config);
  resolveHostLimits(config, opts.host ?? hostLimits(), warnings);

  const origin: Origin = (ref) => {
    const { section, key } = keyOf(ref.section, ref.field);
    const p = provenance.get(`${section}.${key}`);
    return p ? { kind: 'file', file: p.file, line: p.line } : undefined;
  };
  validateConfig(config, origin);

  for (const w of warnings) log.warn({ sources: config.sources }, w);
  log.debug({ sources: config.sources }, 'configuration loaded');
  return { config, warnings };
}
