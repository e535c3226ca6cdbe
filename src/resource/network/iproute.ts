// Runs iproute2 (`ip`, `tc`) inside a network namespace given by path: `nsenter --net=<path>`, because
// `ip -n` only takes names under /var/run/netns and CRI hands us paths. Async with a deadline; used at
// sandbox setup and teardown only, never per packet.
import { execFile } from 'node:child_process';
import { NetworkError } from './types.js';

export interface NetnsCommands {
  /** runs `ip <args>` in the netns; resolves with stdout */
  ip(args: readonly string[]): Promise<string>;
  /** runs `tc <args>` in the netns */
  tc(args: readonly string[]): Promise<string>;
  readonly netnsPath: string;
}

export interface IprouteOptions {
  /** per command; default 10 s */
  timeoutMs?: number;
  nsenter?: string;
  ipBin?: string;
  tcBin?: string;
}

/** Error from one iproute2 command, with the argv and stderr. */
export class IprouteError extends Error {
  constructor(
    readonly argv: readonly string[],
    readonly stderr: string,
    message: string,
  ) {
    super(message);
    this.name = 'IprouteError';
  }
}

function run(argv: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      argv[0]!,
      argv.slice(1),
      { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 16 << 20 },
      (err, stdout, stderr) => {
        if (err) {
          const why = err.killed ? `no answer within ${timeoutMs} ms` : stderr.trim() || err.message;
          reject(new IprouteError(argv, stderr, `${argv.slice(3).join(' ')}: ${why}`));
          return;
        }
        resolve(stdout);
      },
    );
  });
}

export function netnsCommands(netnsPath: string, opts: IprouteOptions = {}): NetnsCommands {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const enter = [opts.nsenter ?? 'nsenter', `--net=${netnsPath}`, '--'];
  return {
    netnsPath,
    ip: (args) => run([...enter, opts.ipBin ?? 'ip', ...args], timeoutMs),
    tc: (args) => run([...enter, opts.tcBin ?? 'tc', ...args], timeoutMs),
  };
}

/** True when the error says the device is not there (it vanished, or was never made). */
export function isNoSuchDevice(e: unknown): boolean {
  return (
    e instanceof IprouteError &&
    /Cannot find device|does not exist|No such device|not found/i.test(e.stderr || e.message)
  );
}

export function wrap(step: string, iface: string | undefined, e: unknown): NetworkError {
  return e instanceof NetworkError
    ? e
    : new NetworkError(step, iface, e instanceof Error ? e.message : String(e), { cause: e });
}
