// Child subreaper for the agent: container processes are reparented to us when crun exits, and we must
// collect their exit statuses. libuv reaps the children Node's child_process spawned itself (waitpid by
// pid), so we never reap those: spawn through spawnTracked(), and unknown zombies are only reaped when
// they are still there a full event-loop round later (libuv would have taken its own by then).
import { type ChildProcess, type SpawnOptions, spawn } from 'node:child_process';
import fs from 'node:fs';
import { logger } from '../common/log.js';
import { peekExitedChild, reapPid, setChildSubreaper } from './native.js';

export interface ExitStatus {
  /** Exit code, or 128+signal when killed by a signal (as runc/crun and shells report it). */
  exitCode: number;
  signal: number | null;
}

const log = logger('agent-reaper');

/** Exit statuses nobody asked for yet, oldest first, bounded. */
const MAX_UNCLAIMED = 1024;
const unclaimed = new Map<number, ExitStatus>();
const waiters = new Map<number, ((s: ExitStatus) => void)[]>();
/** Pids spawned through child_process (libuv owns their exit status). */
const tracked = new Set<number>();
/** Unknown zombies seen in an earlier round: pid → round number. */
const suspects = new Map<number, number>();
let round = 0;
let started = false;
let pollTimer: NodeJS.Timeout | undefined;
let pending: NodeJS.Timeout | undefined;
const onSigchld = (): void => schedule();

export function decodeWaitStatus(status: number): ExitStatus {
  const sig = status & 0x7f;
  if (sig === 0) return { exitCode: (status >> 8) & 0xff, signal: null };
  return { exitCode: 128 + sig, signal: sig };
}

function deliver(pid: number, status: ExitStatus): void {
  suspects.delete(pid);
  const ws = waiters.get(pid);
  if (ws) {
    waiters.delete(pid);
    for (const w of ws) w(status);
    return;
  }
  unclaimed.delete(pid);
  unclaimed.set(pid, status);
  if (unclaimed.size > MAX_UNCLAIMED) {
    const oldest = unclaimed.keys().next().value as number;
    unclaimed.delete(oldest);
    log.debug({ pid: oldest }, 'dropping the oldest unclaimed exit status');
  }
}

function reapOne(pid: number): boolean {
  const r = reapPid(pid);
  if (r.state === 'exited') {
    deliver(pid, decodeWaitStatus(r.status));
    return true;
  }
  return false;
}

/** One reaping pass; exported for tests. */
export function reapNow(): void {
  round++;
  try {
    // Processes someone waits for are never libuv's: reap them directly (no head-of-line blocking).
    for (const pid of [...waiters.keys()]) reapOne(pid);
    for (;;) {
      const pid = peekExitedChild();
      if (pid <= 0) break;
      if (tracked.has(pid)) break; // libuv will reap it; anything behind it waits for the next pass
      const seen = suspects.get(pid);
      if (seen === undefined) {
        suspects.set(pid, round);
        schedule(20);
        break;
      }
      if (seen === round) break;
      if (!reapOne(pid)) break;
    }
  } catch (e) {
    log.error({ err: e }, 'reaping children failed');
  }
}

function schedule(delayMs = 5): void {
  if (!started || pending) return;
  pending = setTimeout(() => {
    pending = undefined;
    reapNow();
  }, delayMs);
  pending.unref();
}

/** Makes this process a child subreaper and starts reaping zombies that child_process does not own. */
export function startReaper(opts: { pollMs?: number } = {}): void {
  if (started) return;
  setChildSubreaper();
  started = true;
  process.on('SIGCHLD', onSigchld);
  // SIGCHLDs coalesce; a slow poll makes sure nothing is left behind.
  pollTimer = setInterval(() => schedule(0), opts.pollMs ?? 500);
  pollTimer.unref();
  schedule(0);
}

/** Stops the reaping loop (tests); the subreaper flag stays. */
export function stopReaper(): void {
  if (!started) return;
  started = false;
  process.off('SIGCHLD', onSigchld);
  clearInterval(pollTimer);
  clearTimeout(pending);
  pending = undefined;
}

/**
 * Resolves when `pid` (a reparented container process) exits; works even if it exited already.
 * Rejects at once if pid is neither a child of ours nor has a recorded exit status.
 */
export function waitForExit(pid: number): Promise<ExitStatus> {
  const done = unclaimed.get(pid);
  if (done) {
    unclaimed.delete(pid);
    // A live (or not yet reaped) process with this pid means the recorded status belongs to an
    // earlier process that had the same pid.
    if (!fs.existsSync(`/proc/${pid}`)) return Promise.resolve(done);
  }
  const r = reapPid(pid);
  if (r.state === 'exited') return Promise.resolve(decodeWaitStatus(r.status));
  if (r.state === 'gone') {
    return Promise.reject(
      new Error(`process ${pid} is not a child of the agent and has no recorded exit status`),
    );
  }
  return new Promise((resolve) => {
    const list = waiters.get(pid) ?? [];
    list.push(resolve);
    waiters.set(pid, list);
    schedule(0);
  });
}

/** child_process.spawn whose pid the reaper leaves to libuv. Use only this to start processes. */
export function spawnTracked(
  command: string,
  args: readonly string[],
  opts: SpawnOptions = {},
): ChildProcess {
  const child = spawn(command, args, opts);
  const pid = child.pid;
  if (pid !== undefined) {
    tracked.add(pid);
    child.once('exit', () => tracked.delete(pid));
    // 'error' after a successful spawn is followed by 'exit'; before spawn there is no pid.
  }
  return child;
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion (tracked), collecting its output. Rejects only if it cannot start. */
export function runTracked(
  command: string,
  args: readonly string[],
  opts: { input?: string | Buffer; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawnTracked(command, args, { stdio: ['pipe', 'pipe', 'pipe'], env: opts.env });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout?.on('data', (c: Buffer) => out.push(c));
    child.stderr?.on('data', (c: Buffer) => err.push(c));
    child.stdin?.on('error', () => {}); // the command may exit without reading its input
    const timer = opts.timeoutMs
      ? setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs).unref()
      : undefined;
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`running ${command}: ${e.message}`));
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() });
    });
    child.stdin?.end(opts.input ?? '');
  });
}
