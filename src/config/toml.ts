// Reading one TOML source (file or in-memory body), checking its shape and keys against the schema, and
// merging sources the way Kata merges config.d drop-ins (tables merge key by key, anything else is replaced).
import { TomlDate, TomlError, parse } from 'smol-toml';
import { ConfigError, show, where } from './errors.js';
import {
  SECTIONS,
  type SectionName,
  UPSTREAM_ONLY_SECTIONS,
  checkValue,
  unknownKeyReason,
} from './schema.js';

export type Table = { [key: string]: unknown };

export interface Source {
  /** A file path, or "<config_body>". */
  name: string;
  text: string;
  tree: Table;
}

/** Where a merged value came from (the last source that set it). */
export interface Provenance {
  file: string;
  line?: number;
}

export function isTable(v: unknown): v is Table {
  return v !== null && typeof v === 'object' && !Array.isArray(v) && !(v instanceof TomlDate);
}

export function parseSource(name: string, text: string): Source {
  try {
    // Integers as bigint so `default_vcpus = 2.0` is told apart from `2`; unsafe keys would poison merging.
    const tree = parse(text, { integersAsBigInt: true, unsafeKeyBehaviour: 'throw' }) as Table;
    return { name, text, tree };
  } catch (err) {
    if (err instanceof TomlError) {
      const reason = err.message.split('\n')[0]!.replace(/^Invalid TOML document: /, '');
      throw new ConfigError(
        `${name}:${err.line}:${err.column}: invalid TOML: ${reason}\n${err.codeblock}`,
        { file: name, line: err.line, column: err.column },
        { cause: err },
      );
    }
    throw err;
  }
}

/** The TOML table path a section lives at. */
export const SECTION_PATH: Readonly<Record<SectionName, readonly string[]>> = {
  hypervisor: ['hypervisor', 'qemu'],
  agent: ['agent', 'kata'],
  runtime: ['runtime'],
  factory: ['factory'],
};

export function sectionTable(tree: Table, section: SectionName): Table | undefined {
  let node: unknown = tree;
  for (const part of SECTION_PATH[section]) {
    if (!isTable(node)) return undefined;
    node = node[part];
  }
  return isTable(node) ? node : undefined;
}

function headerName(raw: string): string {
  return raw
    .split('.')
    .map((p) => p.trim().replace(/^["']|["']$/g, ''))
    .join('.');
}

/**
 * Best-effort line of `key = ...` inside table `table` (or of the `[table]` header when key is undefined).
 * smol-toml reports positions only for syntax errors, so this scans the text; undefined if not found.
 */
export function findLine(text: string, table: readonly string[], key?: string): number | undefined {
  const want = table.join('.');
  let current = '';
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    const header = /^\s*\[\s*([^\][]+?)\s*\]/.exec(line);
    if (header && !/^\s*\[\[/.test(line)) {
      current = headerName(header[1]!);
      if (key === undefined && current === want) return i + 1;
      continue;
    }
    if (key !== undefined && current === want) {
      const m = /^\s*(?:"([^"]*)"|'([^']*)'|([A-Za-z0-9_-]+))\s*=/.exec(line);
      if (m && (m[1] ?? m[2] ?? m[3]) === key) return i + 1;
    }
  }
  return undefined;
}

function checkSection(src: Source, section: SectionName, table: Table, warnings: string[]): void {
  const spec = SECTIONS[section];
  const path = SECTION_PATH[section];
  for (const [key, raw] of Object.entries(table)) {
    // A sub-table (e.g. runtime-rs's [hypervisor.qemu.factory]) is found by its header line.
    const line =
      findLine(src.text, path, key) ?? (isTable(raw) ? findLine(src.text, [...path, key]) : undefined);
    const keySpec = spec.keys[key];
    if (!keySpec) {
      warnings.push(`${where(src.name, line)}${spec.title} ${key} ${unknownKeyReason(section, key)}`);
      continue;
    }
    const checked = checkValue(keySpec, raw, true);
    if (!checked.ok) {
      const tail = checked.allowed
        ? `; allowed: ${checked.allowed.map((a) => JSON.stringify(a)).join(', ')}`
        : '';
      throw new ConfigError(`${where(src.name, line)}${spec.title} ${key}: ${checked.problem}${tail}`, {
        file: src.name,
        line,
        key: `${spec.title} ${key}`,
        allowed: checked.allowed,
        value: typeof raw === 'string' ? raw : show(raw),
      });
    }
  }
}

/** One named sub-table per kind: [hypervisor.qemu] and [agent.kata]; anything else is a clear error. */
function checkNamedTables(
  src: Source,
  top: 'hypervisor' | 'agent',
  only: string,
  value: unknown,
  warnings: string[],
): void {
  if (!isTable(value)) {
    throw new ConfigError(
      `${where(src.name, findLine(src.text, [], top))}${top} must be a table ([${top}.${only}])`,
      {
        file: src.name,
        key: top,
      },
    );
  }
  for (const [name, table] of Object.entries(value)) {
    const line = findLine(src.text, [top, name]);
    if (name !== only) {
      const what = top === 'hypervisor' ? 'kata-ts only runs QEMU' : 'kata-ts only has the kata agent';
      throw new ConfigError(
        `${where(src.name, line)}[${top}.${name}]: ${top} ${JSON.stringify(name)} is not supported (${what}); ` +
          `use [${top}.${only}]`,
        { file: src.name, line, key: `[${top}.${name}]`, allowed: [only] },
      );
    }
    if (!isTable(table)) {
      throw new ConfigError(`${where(src.name, line)}${top}.${name} must be a table ([${top}.${name}])`, {
        file: src.name,
        key: `${top}.${name}`,
      });
    }
    checkSection(src, top, table, warnings);
  }
}

/** Checks a source's structure and every key it sets; unknown keys become warnings. */
export function checkSource(src: Source, warnings: string[]): void {
  for (const [top, value] of Object.entries(src.tree)) {
    if (top === 'hypervisor') checkNamedTables(src, 'hypervisor', 'qemu', value, warnings);
    else if (top === 'agent') checkNamedTables(src, 'agent', 'kata', value, warnings);
    else if (top === 'runtime' || top === 'factory') {
      if (!isTable(value)) {
        throw new ConfigError(
          `${where(src.name, findLine(src.text, [], top))}${top} must be a table ([${top}])`,
          {
            file: src.name,
            key: top,
          },
        );
      }
      checkSection(src, top, value, warnings);
    } else {
      const line = findLine(src.text, [top]) ?? findLine(src.text, [], top);
      warnings.push(
        UPSTREAM_ONLY_SECTIONS.has(top)
          ? `${where(src.name, line)}[${top}] is a Kata section kata-ts does not implement; ignored`
          : `${where(src.name, line)}${top} is not a known section or key; ignored`,
      );
    }
  }
}

function mergeInto(base: Table, over: Table): void {
  for (const [key, value] of Object.entries(over)) {
    const old = base[key];
    if (isTable(old) && isTable(value)) mergeInto(old, value);
    else base[key] = isTable(value) ? cloneTable(value) : value;
  }
}

function cloneTable(t: Table): Table {
  const out: Table = {};
  mergeInto(out, t);
  return out;
}

/** Merges sources in order (later wins) and records, per section key, which source set it last. */
export function mergeSources(sources: readonly Source[]): {
  tree: Table;
  provenance: Map<string, Provenance>;
} {
  const tree: Table = {};
  const provenance = new Map<string, Provenance>();
  for (const src of sources) {
    mergeInto(tree, src.tree);
    for (const section of Object.keys(SECTION_PATH) as SectionName[]) {
      const table = sectionTable(src.tree, section);
      if (!table) continue;
      for (const key of Object.keys(table)) {
        provenance.set(`${section}.${key}`, {
          file: src.name,
          line: findLine(src.text, SECTION_PATH[section], key),
        });
      }
    }
  }
  return { tree, provenance };
}
