// virtiofsd: the vhost-user daemon serving a host directory to the guest over virtio-fs. One per shared dir,
// supervised like QEMU. It runs with sandbox=chroot, i.e. in the host mount namespace, so mounts made under
// the shared dir after it started (container rootfs bind mounts) are visible to the guest.
import { execFile } from 'node:child_process';
import { rm, stat } from 'node:fs/promises';
import { promisify } from 'node:util';
import { pathExists } from '../common/files.js';
import type { Logger } from '../common/log.js';
import { PollTimeoutError, pollUntil } from '../common/poll.js';
import { type ChildExit, SupervisedChild, describeExit, formatTail } from './supervisor.js';

const execFileP = promisify(execFile);

/** The C daemon shipped with QEMU <= 7.2 (-o key=value options) or the Rust one (--long-options). */
export type VirtiofsdFlavour = 'c' | 'rust';

export interface VirtiofsdOptions {
  binary: string;
  sharedDir: string;
  socketPath: string;
  /** Kata's virtio_fs_cache: auto | always | never | metadata. */
  cache: string;
  extraArgs: string[];
  debug: boolean;
}

const flavourCache = new Map<string, Promise<VirtiofsdFlavour>>();

/** Tells the two daemons apart by their --help text (cached per binary). */
export function detectFlavour(binary: string): Promise<VirtiofsdFlavour> {
  let p = flavourCache.get(binary);
  if (!p) {
    p = execFileP(binary, ['--help'], { timeout: 5000 })
      .then(({ stdout, stderr }) => `${stdout}${stderr}`)
      .catch((err: { stdout?: string; stderr?: string; message: string }) => {
        if (err.stdout || err.stderr) return `${err.stdout ?? ''}${err.stderr ?? ''}`;
        throw new Error(`running ${binary} --help to identify virtiofsd: ${err.message}`);
      })
      .then((help): VirtiofsdFlavour => (help.includes('-o source=') ? 'c' : 'rust'));
    p.catch(() => flavourCache.delete(binary));
    flavourCache.set(binary, p);
  }
  return p;
}

/** Kata cache names → the C daemon's (auto | always | none). */
function cCacheMode(cache: string): string {
  switch (cache) {
    case 'never':
    case 'none':
      return 'none';
    case 'always':
      return 'always';
    default:
      return 'auto';
  }
}

/** Rust-daemon style extra args (Kata's defaults are written for it) → C daemon options. */
function translateExtraArgForC(arg: string): string[] {
  const [key, value] = arg.includes('=')
    ? [arg.slice(0, arg.indexOf('=')), arg.slice(arg.indexOf('=') + 1)]
    : [arg];
  switch (key) {
    case '--announce-submounts':
      return ['-o', 'announce_submounts'];
    case '--xattr':
      return ['-o', 'xattr'];
    case '--posix-acl':
      return ['-o', 'posix_acl'];
    case '--allow-direct-io':
      return ['-o', 'allow_direct_io'];
    case '--writeback':
      return ['-o', 'writeback'];
    case '--cache':
      return value !== undefined ? ['-o', `cache=${cCacheMode(value)}`] : [arg];
    case '--sandbox':
      return value !== undefined ? ['-o', `sandbox=${value}`] : [arg];
    case '--log-level':
      return value !== undefined ? ['-o', `log_level=${value === 'error' ? 'err' : value}`] : [arg];
    default:
      return [arg];
  }
}

export function virtiofsdArgs(opts: VirtiofsdOptions, flavour: VirtiofsdFlavour): string[] {
  if (flavour === 'c') {
    const args = [
      `--socket-path=${opts.socketPath}`,
      '-o',
      `source=${opts.sharedDir}`,
      '-o',
      `cache=${cCacheMode(opts.cache)}`,
      '-o',
      'sandbox=chroot',
    ];
    if (opts.debug) args.push('-o', 'log_level=debug');
    for (const a of opts.extraArgs) args.push(...translateExtraArgForC(a));
    return args;
  }
  const args = [
    `--socket-path=${opts.socketPath}`,
    `--shared-dir=${opts.sharedDir}`,
    `--cache=${opts.cache === 'none' ? 'never' : opts.cache}`,
    '--sandbox=chroot',
  ];
  if (opts.debug) args.push('--log-level=debug');
  args.push(...opts.extraArgs);
  return args;
}

export class Virtiofsd {
  private child: SupervisedChild | undefined;
  private stopping = false;

  constructor(
    readonly opts: VirtiofsdOptions,
    private readonly log: Logger,
  ) {}

  get pid(): number | undefined {
    return this.child?.running ? this.child.pid : undefined;
  }

  /** Resolves when the daemon exits (only meaningful after start). */
  get exited(): Promise<ChildExit> {
    if (!this.child) throw new Error('virtiofsd: exited asked before start');
    return this.child.exited;
  }

  /** True once stop() was called: an exit after that is expected. */
  get isStopping(): boolean {
    return this.stopping;
  }

  stderrTail(): string {
    return this.child?.stderrTail() ?? '';
  }

  /**
   * Starts the daemon and waits until its socket exists; on failure nothing is left running. `onSpawn` is awaited
   * with the pid as soon as the process exists (the caller persists it before waiting).
   */
  async start(timeoutMs = 10_000, onSpawn?: (pid: number | undefined) => Promise<void>): Promise<void> {
    if (this.child) throw new Error(`virtiofsd for ${this.opts.sharedDir} already started`);
    const { sharedDir, socketPath, binary } = this.opts;
    const st = await stat(sharedDir).catch(() => undefined);
    if (!st?.isDirectory())
      throw new Error(`virtiofsd: shared dir ${sharedDir} does not exist or is not a directory`);
    await rm(socketPath, { force: true });
    const flavour = await detectFlavour(binary);
    const args = virtiofsdArgs(this.opts, flavour);
    this.log.info({ binary, args }, 'starting virtiofsd');
    const child = SupervisedChild.spawn('virtiofsd', binary, args, { log: this.log });
    this.child = child;
    const deadline = Date.now() + timeoutMs;
    const died = new AbortController();
    void child.exited.then((exit) =>
      died.abort(
        new Error(
          `virtiofsd for ${sharedDir}: ${describeExit('virtiofsd', exit)} before creating ${socketPath}` +
            formatTail('virtiofsd stderr', exit.stderrTail),
        ),
      ),
    );
    try {
      await onSpawn?.(child.pid);
      await pollUntil(() => pathExists(socketPath), {
        timeoutMs: Math.max(deadline - Date.now(), 1),
        intervalMs: 10,
        signal: died.signal,
        what: `virtiofsd socket ${socketPath}`,
      });
    } catch (err) {
      if (died.signal.aborted && err === died.signal.reason) throw err;
      await this.stop();
      if (err instanceof PollTimeoutError) {
        throw new Error(
          `virtiofsd for ${sharedDir}: socket ${socketPath} did not appear within ${timeoutMs} ms` +
            formatTail('virtiofsd stderr', child.stderrTail()),
        );
      }
      throw err;
    }
    this.log.debug({ pid: child.pid, socketPath }, 'virtiofsd ready');
  }

  /** SIGTERM, then SIGKILL after `graceMs`; removes the socket. Idempotent. */
  async stop(graceMs = 2000): Promise<void> {
    this.stopping = true;
    if (this.child) await this.child.terminate(graceMs);
    await rm(this.opts.socketPath, { force: true });
  }
}
