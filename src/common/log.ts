// One structured JSON logger for the whole runtime; components take a child with their ids.
import { type Logger, pino } from 'pino';

export type { Logger };

const root: Logger = pino({
  level: process.env.KATA_LOG_LEVEL ?? 'info',
  base: { pid: process.pid, source: 'kata-ts' },
  timestamp: pino.stdTimeFunctions.isoTime,
});

/** A child logger for one component (shim, runtime, hypervisor, agent, ...), with ids as fields. */
export function logger(component: string, fields: Record<string, string | number> = {}): Logger {
  return root.child({ component, ...fields });
}

/** Raises or lowers the level of every logger (config `enable_debug`). */
export function setLogLevel(level: 'debug' | 'info' | 'warn' | 'error' | 'silent'): void {
  root.level = level;
}

/** Sends all log lines to a file descriptor other than stdout (the shim's stdout belongs to containerd). */
export function rootLogger(): Logger {
  return root;
}
