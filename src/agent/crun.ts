import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from '../common/log.js';
// Driving crun: every container operation is one crun invocation against the agent's own state root.
// crun is spawned through the reaper's spawnTracked so its exit status stays with child_process; the
// container processes it leaves behind are reparented to the agent and reaped by the reaper.
import { sleep } from '../common/poll.js';
import { closeFd, listenUnix, tryAccept, tryReceiveFd } from './native.js';
import { type RunResult, runTracked, spawnTracked } from './reaper.js';

export class CrunError extends Error {
  constructor(
    message: string,
    readonly exitCode: number | null,
  ) {
    super(message);
    this.name = 'CrunError';
  }
}

export interface CrunOptions {
  /** crun binary (default `crun` on PATH). */
  binary?: string;
  /** crun's state root (--root). */
  root: string;
  log: Logger;
  /** Upper bound for one invocation. */
  timeoutMs?: number;
  /** Create containers with --no-pivot (pivot_root cannot leave an initramfs root). */
  noPivot?: boolean;
}

export interface CrunState {
  id: string;
  pid: number;
  status: string;
  bundle: string;
}

export interface LaunchOptions {
  pidFile: string;
  /** The process's stdin, stdout, stderr (crun passes its own stdio on). */
  stdio: [number, number, number] | 'ignore';
  /** Where crun sends the pty master (terminal processes). */
  consoleSocket?: string;
}

let logSeq = 0;

export class Crun {
  readonly binary: string;
  private readonly timeoutMs: number;

  constructor(private readonly opts: CrunOptions) {
    this.binary = opts.binary ?? 'crun';
    this.timeoutMs = opts.timeoutMs ?? 60_000;
    fs.mkdirSync(opts.root, { recursive: true, mode: 0o700 });
  }

  /** `crun create`: the container's init waits, not yet running the user's program, until start(). */
  async create(id: string, bundle: string, o: LaunchOptions): Promise<void> {
    const args = ['create', '--bundle', bundle, '--pid-file', o.pidFile];
    if (this.opts.noPivot) args.push('--no-pivot');
    if (o.consoleSocket) args.push('--console-socket', o.consoleSocket);
    await this.launch(args.concat(id), o.stdio, `creating container ${id}`);
  }

  async start(id: string): Promise<void> {
    await this.run(['start', id], `starting container ${id}`);
  }

  /** `crun exec --detach`: returns once the process runs; its pid is in o.pidFile. */
  async exec(id: string, processFile: string, o: LaunchOptions): Promise<void> {
    const args = ['exec', '--process', processFile, '--detach', '--pid-file', o.pidFile];
    if (o.consoleSocket) args.push('--console-socket', o.consoleSocket);
    await this.launch(args.concat(id), o.stdio, `executing a process in container ${id}`);
  }

  async kill(id: string, signal: number, all = false): Promise<void> {
    await this.run(['kill', ...(all ? ['--all'] : []), id, String(signal)], `signalling container ${id}`);
  }

  async delete(id: string, force = false): Promise<void> {
    await this.run(['delete', ...(force ? ['--force'] : []), id], `deleting container ${id}`);
  }

  async pause(id: string): Promise<void> {
    await this.run(['pause', id], `pausing container ${id}`);
  }

  async resume(id: string): Promise<void> {
    await this.run(['resume', id], `resuming container ${id}`);
  }

  /** `crun update --resources FILE` with an OCI LinuxResources JSON file. */
  async update(id: string, resourcesFile: string): Promise<void> {
    await this.run(['update', '--resources', resourcesFile, id], `updating container ${id}`);
  }

  async state(id: string): Promise<CrunState> {
    const r = await this.run(['state', id], `reading the state of container ${id}`);
    try {
      return JSON.parse(r.stdout) as CrunState;
    } catch (e) {
      throw new CrunError(`crun state ${id}: unreadable output: ${(e as Error).message}`, r.code);
    }
  }

  /** Whether crun still knows the container (its state dir exists). */
  exists(id: string): boolean {
    return fs.existsSync(path.join(this.opts.root, id));
  }

  private globalArgs(logFile: string): string[] {
    return ['--root', this.opts.root, '--log', `file:${logFile}`, '--cgroup-manager', 'cgroupfs'];
  }

  private newLogFile(): string {
    return path.join(this.opts.root, `.log-${process.pid}-${++logSeq}`);
  }

  private static takeLog(logFile: string): string {
    try {
      return fs.readFileSync(logFile, 'utf8').trim();
    } catch {
      return '';
    } finally {
      fs.rmSync(logFile, { force: true });
    }
  }

  private async run(args: string[], what: string): Promise<RunResult> {
    const logFile = this.newLogFile();
    this.opts.log.debug({ args }, 'crun');
    let r: RunResult;
    try {
      r = await runTracked(this.binary, [...this.globalArgs(logFile), ...args], {
        timeoutMs: this.timeoutMs,
      });
    } catch (e) {
      Crun.takeLog(logFile);
      throw new CrunError(`${what}: ${(e as Error).message}`, null);
    }
    const logText = Crun.takeLog(logFile);
    if (r.code !== 0) {
      const detail = logText || r.stderr.trim() || `exit ${r.code ?? r.signal}`;
      throw new CrunError(`${what}: crun ${args[0]} failed: ${lastLines(detail)}`, r.code);
    }
    return r;
  }

  /** Runs crun with the process's stdio; its own diagnostics come from the log file. */
  private launch(args: string[], stdio: LaunchOptions['stdio'], what: string): Promise<void> {
    const logFile = this.newLogFile();
    this.opts.log.debug({ args }, 'crun');
    return new Promise((resolve, reject) => {
      const child = spawnTracked(this.binary, [...this.globalArgs(logFile), ...args], {
        stdio: stdio === 'ignore' ? 'ignore' : stdio,
      });
      const timer = setTimeout(() => child.kill('SIGKILL'), this.timeoutMs);
      timer.unref();
      child.once('error', (e) => {
        clearTimeout(timer);
        Crun.takeLog(logFile);
        reject(new CrunError(`${what}: cannot run ${this.binary}: ${e.message}`, null));
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        const logText = Crun.takeLog(logFile);
        if (code === 0) resolve();
        else {
          const detail = logText || `exit ${code ?? signal}`;
          reject(new CrunError(`${what}: crun ${args[0]} failed: ${lastLines(detail)}`, code));
        }
      });
    });
  }
}

function lastLines(text: string, n = 3): string {
  return text.split('\n').filter(Boolean).slice(-n).join('; ');
}

/**
 * The unix socket crun's --console-socket connects to, to hand over the pty master it created for a
 * terminal process. Node cannot receive fds, so this polls a non-blocking socket through libc.
 */
export class ConsoleSocket {
  private fd: number;

  private constructor(
    readonly path: string,
    fd: number,
  ) {
    this.fd = fd;
  }

  static listen(socketPath: string): ConsoleSocket {
    fs.rmSync(socketPath, { force: true });
    return new ConsoleSocket(socketPath, listenUnix(socketPath));
  }

  /**
   * Waits for the pty master. `launched` settles when crun has exited: crun sends the fd before it
   * exits, so after that one last attempt is made before giving up.
   */
  async receive(launched: Promise<unknown>, timeoutMs = 60_000): Promise<number> {
    let done = false;
    let failure: unknown;
    launched.then(
      () => {
        done = true;
      },
      (e) => {
        done = true;
        failure = e;
      },
    );
    const deadline = Date.now() + timeoutMs;
    let conn = -1;
    try {
      for (;;) {
        const finalTry = done;
        if (conn < 0) conn = tryAccept(this.fd);
        if (conn >= 0) {
          const got = tryReceiveFd(conn);
          if (got >= 0) return got;
        }
        if (finalTry) {
          if (failure) throw failure;
          throw new Error('crun exited without sending the terminal over the console socket');
        }
        if (Date.now() > deadline) throw new Error(`no terminal from crun within ${timeoutMs} ms`);
        await sleep(5);
      }
    } finally {
      if (conn >= 0) closeFd(conn);
    }
  }

  close(): void {
    if (this.fd >= 0) closeFd(this.fd);
    this.fd = -1;
    fs.rmSync(this.path, { force: true });
  }
}
