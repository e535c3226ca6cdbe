// A private containerd for tests: temp root/state/sockets, a generated config.toml, the repo's bin/ first on its
// PATH so `io.containerd.kata.v2` resolves to bin/containerd-shim-kata-v2 (→ dist/containerd-shim-kata-v2.mjs).
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const KATA_RUNTIME = 'io.containerd.kata.v2';

export interface CtrResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface CtrBytesResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: Buffer;
}

export interface CtrOptions {
  input?: string | Buffer;
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
}

export interface Containerd {
  dir: string;
  socket: string;
  namespace: string;
  logFile: string;
  pid: number;
  /** Runs `ctr --address <sock> -n <ns> ...args` and collects its output (never throws on exit code). */
  ctr(args: string[], opts?: CtrOptions): Promise<CtrResult>;
  /** Like ctr() but the output stays bytes (binary data). */
  ctrBytes(args: string[], opts?: CtrOptions): Promise<CtrBytesResult>;
  /** SIGKILLs a container's task, deletes it once stopped (waiting up to 10 s), then the container. */
  removeContainer(id: string): Promise<void>;
  /** Like ctr() but returns the child, for streaming or tty tests. */
  ctrSpawn(args: string[], opts?: { env?: NodeJS.ProcessEnv }): ChildProcess;
  readLog(): string;
  /**
   * SIGKILLs containerd (a crash) and, downMs later, starts it again on the same root, state and socket; the
   * shims keep running meanwhile.
   */
  restart(downMs?: number): Promise<void>;
  stop(): Promise<void>;
}

export interface ContainerdOptions {
  /** Extra environment for containerd (and therefore the shims it starts), e.g. KATA_CONF_FILE. */
  env?: Record<string, string>;
  namespace?: string;
  /** Log level of containerd itself (the shim's log is copied into containerd's stderr). */
  level?: 'debug' | 'info' | 'warn';
  /** A whole config.toml instead of the default (which disables CRI), given the temp dir it must live in. */
  config?: (dir: string, level: string) => string;
}

/** Bundles the shim (fast; esbuild) so the tests run the current source. */
export function buildShim(): void {
  execFileSync(process.execPath, [path.join(REPO, 'scripts/bundle.mjs'), 'containerd-shim-kata-v2'], {
    cwd: REPO,
    stdio: 'inherit',
  });
}

function configToml(dir: string, level: string): string {
  return `version = 2
root = "${dir}/root"
state = "${dir}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing"]

[grpc]
  address = "${dir}/containerd.sock"

[ttrpc]
  address = "${dir}/containerd.sock.ttrpc"

[debug]
  level = "${level}"

[plugins]
  [plugins."io.containerd.gc.v1.scheduler"]
    startup_delay = "100ms"
  [plugins."io.containerd.runtime.v2.task"]
    platforms = ["linux/amd64"]
`;
}

async function waitForSocket(
  sock: string,
  child: ChildProcess,
  logFile: string,
  timeoutMs = 30_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) {
      throw new Error(
        `containerd exited (${child.exitCode}) before serving: ${fs.readFileSync(logFile, 'utf8').slice(-2000)}`,
      );
    }
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.createConnection(sock);
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(
    `containerd did not serve ${sock} within ${timeoutMs} ms: ${fs.readFileSync(logFile, 'utf8').slice(-2000)}`,
  );
}

/** Mount points under `dir` (deepest first), from /proc/mounts. */
function mountsUnder(dir: string): string[] {
  return fs
    .readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[1]?.replace(/\\040/g, ' '))
    .filter((m): m is string => !!m && (m === dir || m.startsWith(`${dir}/`)))
    .sort((a, b) => b.length - a.length);
}

export async function startContainerd(opts: ContainerdOptions = {}): Promise<Containerd> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kata-ts-ctrd-'));
  const namespace = opts.namespace ?? 'kata-ts-test';
  const socket = path.join(dir, 'containerd.sock');
  const logFile = path.join(dir, 'containerd.log');
  fs.writeFileSync(path.join(dir, 'config.toml'), (opts.config ?? configToml)(dir, opts.level ?? 'info'));
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PATH: `${path.join(REPO, 'bin')}:${process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'}`,
    ...opts.env,
  };
  // One containerd process at a time; restart() replaces it on the same root, state, socket and log.
  let child: ChildProcess;
  let exited: Promise<void>;
  const launch = async (): Promise<void> => {
    const logFd = fs.openSync(logFile, 'a');
    child = spawn('/usr/bin/containerd', ['--config', path.join(dir, 'config.toml')], {
      env,
      stdio: ['ignore', logFd, logFd],
    });
    fs.closeSync(logFd);
    const c = child;
    exited = new Promise<void>((resolve) => c.once('exit', () => resolve()));
    try {
      await waitForSocket(socket, c, logFile);
    } catch (e) {
      c.kill('SIGKILL');
      await exited;
      throw e;
    }
  };
  try {
    await launch();
  } catch (e) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  const base = ['--address', socket, '-n', namespace];
  const ctrSpawn = (args: string[], o: { env?: NodeJS.ProcessEnv } = {}) =>
    spawn('ctr', [...base, ...args], { env: { ...process.env, ...o.env }, stdio: ['pipe', 'pipe', 'pipe'] });

  const ctrBytes = (args: string[], o: CtrOptions = {}) =>
    new Promise<CtrBytesResult>((resolve) => {
      const c = ctrSpawn(args, { env: o.env });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      c.stdout?.on('data', (d: Buffer) => out.push(d));
      c.stderr?.on('data', (d: Buffer) => err.push(d));
      const timer = setTimeout(() => c.kill('SIGKILL'), o.timeoutMs ?? 300_000);
      c.stdin?.on('error', () => {}); // ctr may exit before reading all its input
      if (o.input !== undefined) c.stdin?.end(o.input);
      else c.stdin?.end();
      c.once('close', (code, signal) => {
        clearTimeout(timer);
        resolve({ code, signal, stdout: Buffer.concat(out), stderr: Buffer.concat(err) });
      });
    });
  const ctr = async (args: string[], o: CtrOptions = {}): Promise<CtrResult> => {
    const r = await ctrBytes(args, o);
    return { ...r, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
  };

  const removeContainer = async (id: string): Promise<void> => {
    await ctr(['task', 'kill', '-s', 'SIGKILL', id]);
    for (let i = 0; i < 100; i++) {
      if ((await ctr(['task', 'delete', id])).code === 0) break;
      await new Promise((res) => setTimeout(res, 100));
    }
    await ctr(['container', 'delete', id]);
  };

  let stopped = false;
  return {
    dir,
    socket,
    namespace,
    logFile,
    get pid() {
      return child.pid ?? -1;
    },
    ctr,
    ctrSpawn,
    ctrBytes,
    removeContainer,
    readLog: () => fs.readFileSync(logFile, 'utf8'),
    async restart(downMs = 0) {
      child.kill('SIGKILL');
      await exited;
      await new Promise((res) => setTimeout(res, downMs));
      await launch();
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
      await stopOrphanShims(socket, namespace);
      // Snapshot mounts containerd left behind must go before the tree is removed (rm would descend into them).
      for (const m of mountsUnder(dir)) {
        try {
          execFileSync('umount', ['-l', m]);
        } catch {
          // already gone
        }
      }
      if (process.env.KATA_TS_KEEP_CONTAINERD_LOG) {
        fs.copyFileSync(logFile, process.env.KATA_TS_KEEP_CONTAINERD_LOG);
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Pids and ids of kata shims this containerd started (their command line names its socket). */
function shimsOf(socket: string): { pid: number; id: string }[] {
  const out: { pid: number; id: string }[] = [];
  for (const p of fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    let argv: string[];
    try {
      argv = fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0');
    } catch {
      continue;
    }
    if (!argv.some((a) => a.includes('containerd-shim-kata-v2'))) continue;
    const flag = (name: string) => argv[argv.indexOf(name) + 1];
    if (flag('-address') === socket && flag('-id')) out.push({ pid: Number(p), id: flag('-id')! });
  }
  return out;
}

/**
 * Shims outlive containerd by design; a test's containerd must not leave its shims (and their VMs) behind.
 * SIGTERM makes a shim stop its sandbox; `shim delete` then removes whatever is left, as containerd would.
 */
async function stopOrphanShims(socket: string, namespace: string): Promise<void> {
  const shims = shimsOf(socket);
  for (const s of shims) {
    try {
      process.kill(s.pid, 'SIGTERM');
    } catch {
      // gone already
    }
  }
  const deadline = Date.now() + 30_000;
  while (shimsOf(socket).length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  for (const s of shimsOf(socket)) {
    try {
      process.kill(s.pid, 'SIGKILL');
    } catch {
      // gone already
    }
  }
  const shim = path.join(REPO, 'dist/containerd-shim-kata-v2.mjs');
  for (const s of shims) {
    try {
      execFileSync(
        process.execPath,
        [shim, '-namespace', namespace, '-address', socket, '-id', s.id, 'delete'],
        {
          stdio: 'ignore',
        },
      );
    } catch {
      // best effort: leftovers() in the tests reports what remains
    }
  }
}
