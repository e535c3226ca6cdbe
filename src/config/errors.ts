// The one error type of the config layer: says where (file and line, or annotation), which key, and what
// would have been accepted, so an operator can fix the input without reading our source.

export interface ConfigErrorDetails {
  /** The file (or "<config_body>") the bad value came from. */
  file?: string;
  /** 1-based line in `file`, when known. */
  line?: number;
  column?: number;
  /** The key as written in TOML, e.g. "[hypervisor.qemu] default_vcpus". */
  key?: string;
  /** The annotation that carried the bad value. */
  annotation?: string;
  /** The offending value as text. */
  value?: string;
  /** The values that would have been accepted, when the set is finite. */
  allowed?: readonly string[];
  /** Every path looked at, for "no configuration file found". */
  tried?: readonly string[];
}

export class ConfigError extends Error {
  readonly file?: string;
  readonly line?: number;
  readonly column?: number;
  readonly key?: string;
  readonly annotation?: string;
  readonly value?: string;
  readonly allowed?: readonly string[];
  readonly tried?: readonly string[];

  constructor(message: string, details: ConfigErrorDetails = {}, options?: ErrorOptions) {
    super(message, options);
    this.name = 'ConfigError';
    this.file = details.file;
    this.line = details.line;
    this.column = details.column;
    this.key = details.key;
    this.annotation = details.annotation;
    this.value = details.value;
    this.allowed = details.allowed;
    this.tried = details.tried;
  }
}

/** "file:line: " or "file: " or "" — the prefix every file-related message starts with. */
export function where(file?: string, line?: number): string {
  if (!file) return '';
  return line ? `${file}:${line}: ` : `${file}: `;
}

/** Quotes a value for a message the way TOML would write it. */
export function show(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'bigint') return value.toString();
  if (Array.isArray(value)) return `[${value.map(show).join(', ')}]`;
  if (value !== null && typeof value === 'object') {
    return value.constructor?.name === 'TomlDate' ? String(value) : 'a table';
  }
  return String(value);
}

export function allowedList(allowed: readonly string[]): string {
  return allowed.map((a) => JSON.stringify(a)).join(', ');
}
