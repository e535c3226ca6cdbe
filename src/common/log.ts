// One structured JSON logger for the whole runtime; components take a child with their ids.
import { type DestinationStream, type Logger, destination, pino } from 'pino';

export type { Logger };

/** Where log lines go; swappable (the shim points it at containerd's log FIFO before anything logs). */
class LogOutlet implements DestinationStream {
  target: DestinationStream = destination({ fd: 1, sync: true });
  write(line: string): void {
    this.target.write(line);
  }
}

const outlet = new LogOutlet();
const root: Logger = pino(
  {
    level: process.env.KATA_LOG_LEVEL ?? 'info',
    base: { pid: process.pid, source: 'kata-ts' },
    timestamp: pino.stdTimeFunctions.isoTime,
  },
  outlet,
);

/** A child logger for one component (shim, runtime, hypervisor, agent, ...), with ids as fields. */
export function logger(component: string, fields: Record<string, string | number> = {}): Logger {
  return root.child({ component, ...fields });
}

/** Raises or lowers the level of every logger (config `enable_debug`). */
export function setLogLevel(level: 'debug' | 'info' | 'warn' | 'error' | 'silent'): void {
  root.level = level;
}

/** Sends every logger's lines (children included) to `dest` instead of stdout. */
export function setLogDestination(dest: DestinationStream): void {
  outlet.target = dest;
}
