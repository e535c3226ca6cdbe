// Where the shim's log lines go. stdout belongs to containerd in every mode (the address after `start`, the
// DeleteResponse after `delete`), so the root logger is pointed at another fd before anything logs.
import fs from 'node:fs';
import path from 'node:path';
import pino from 'pino';
import { rootLogger, setLogLevel } from '../common/log.js';

/** Sends every logger (children included: they inherit the stream) to `fd`; undefined silences logging. */
export function redirectLogs(fd: number | undefined): void {
  const root = rootLogger();
  if (fd === undefined) {
    setLogLevel('silent');
    return;
  }
  const dest = pino.destination({ fd, sync: true });
  // A reader that went away (containerd restarting) must not crash the shim.
  dest.on('error', () => {});
  (root as unknown as Record<symbol, unknown>)[pino.symbols.streamSym] = dest;
}

/**
 * Opens the shim log FIFO containerd created in the bundle (`log`, read by containerd and copied to its own
 * log) for writing. Returns undefined when nobody reads it: a blocking open would hang forever.
 */
export function openShimLog(bundle: string): number | undefined {
  const file = path.join(bundle, 'log');
  try {
    // Non-blocking first: ENXIO means no reader. Then a blocking fd, so log writes never fail with EAGAIN.
    const probe = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
    fs.closeSync(probe);
    return fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_APPEND);
  } catch {
    return undefined;
  }
}
