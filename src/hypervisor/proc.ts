// Which host process is which, by pid AND start time (/proc/<pid>/stat), so that a recycled pid is never
// mistaken for the VMM, virtiofsd or shim a crashed sandbox left behind. Command lines are not looked at.
import { readFile, stat } from 'node:fs/promises';
import type { Logger } from '../common/log.js';
import { PollTimeoutError, pollUntil } from '../common/poll.js';

/** A process as the kernel knows it: the pid plus its start time (clock ticks after boot, field 22 of stat). */
export interface ProcessIdentity {
  pid: number;
  startTime: number;
}

/** USER_HZ: the unit of /proc/<pid>/stat times; 100 on every Linux architecture Node runs on. */
const CLOCK_TICKS_PER_S = 100;

interface StatFields {
  state: string;
  startTime: number;
}

async function readStat(pid: number, proc: string): Promise<StatFields | undefined> {
  let text: string;
  try {
    text = await readFile(`${proc}/${pid}/stat`, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ESRCH') return undefined;
    throw new Error(`reading ${proc}/${pid}/stat: ${(err as Error).message}`, { cause: err });
  }
  // comm (field 2) is in parentheses and may itself hold spaces or ')': the fields after it follow the last ')'.
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const state = rest[0] ?? '';
  const startTime = Number(rest[19]);
  if (!Number.isFinite(startTime)) throw new Error(`${proc}/${pid}/stat is malformed: ${text.slice(0, 200)}`);
  return { state, startTime };
}

export interface ProcOptions {
  /** procfs mount (tests). */
  proc?: string;
}

/** The identity of a live process, or undefined when there is none (gone, or a zombie waiting for its parent). */
export async function processIdentity(
  pid: number,
  o: ProcOptions = {},
): Promise<ProcessIdentity | undefined> {
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  const s = await readStat(pid, o.proc ?? '/proc');
  if (!s || s.state === 'Z' || s.state === 'X') return undefined;
  return { pid, startTime: s.startTime };
}

/** True while `id` is still alive (same pid, same start time, not a zombie). */
export async function isAlive(id: ProcessIdentity, o: ProcOptions = {}): Promise<boolean> {
  const now = await processIdentity(id.pid, o);
  return now !== undefined && now.startTime === id.startTime;
}

/**
 * The live process whose pid `pidFile` names (QEMU's -pidfile), if it is the one that wrote the file: a process
 * started after the file was written holds a recycled pid. For the window between spawning and persisting the pid.
 */
export async function processFromPidFile(pidFile: string): Promise<ProcessIdentity | undefined> {
  const [text, st] = await Promise.all([
    readFile(pidFile, 'utf8').catch(() => ''),
    stat(pidFile).catch(() => undefined),
  ]);
  const pid = Number(text.trim());
  if (!st || !Number.isInteger(pid) || pid <= 0) return undefined;
  const id = await processIdentity(pid);
  if (!id) return undefined;
  const uptimeS = Number((await readFile('/proc/uptime', 'utf8')).split(' ')[0]);
  const bootMs = Date.now() - uptimeS * 1000;
  const startedMs = bootMs + (id.startTime / CLOCK_TICKS_PER_S) * 1000;
  // 1 s of slack covers tick granularity and the uptime/clock reading skew.
  return startedMs <= st.mtimeMs + 1000 ? id : undefined;
}

export interface TerminateOptions {
  /** Time between SIGTERM and SIGKILL; 0 sends SIGKILL at once. */
  graceMs: number;
  /** How long to wait for the process to go after SIGKILL. */
  killWaitMs?: number;
  log: Logger;
  /** What the process is, for logs and errors ("qemu", "shim"). */
  what: string;
}

function signal(id: ProcessIdentity, sig: NodeJS.Signals): void {
  try {
    process.kill(id.pid, sig);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}

async function waitGone(id: ProcessIdentity, timeoutMs: number, what: string): Promise<boolean> {
  try {
    await pollUntil(async () => !(await isAlive(id)), { timeoutMs, what, intervalMs: 20 });
    return true;
  } catch (err) {
    if (err instanceof PollTimeoutError) return false;
    throw err;
  }
}

/**
 * Stops `id` if it is still that process: SIGTERM, up to graceMs, then SIGKILL. Resolves true when it was alive
 * (and is gone now), false when it was gone already. Throws when it survives SIGKILL.
 */
export async function terminateProcess(id: ProcessIdentity, o: TerminateOptions): Promise<boolean> {
  if (!(await isAlive(id))) return false;
  o.log.info({ pid: id.pid, what: o.what }, 'stopping a process left by a dead sandbox');
  if (o.graceMs > 0) {
    signal(id, 'SIGTERM');
    if (await waitGone(id, o.graceMs, `${o.what} (pid ${id.pid}) to exit after SIGTERM`)) return true;
  }
  if (!(await isAlive(id))) return true; // a recycled pid must not get the SIGKILL
  signal(id, 'SIGKILL');
  const killWait = o.killWaitMs ?? 5000;
  if (!(await waitGone(id, killWait, `${o.what} (pid ${id.pid}) to exit after SIGKILL`))) {
    throw new Error(`${o.what} (pid ${id.pid}) is still alive ${killWait} ms after SIGKILL`);
  }
  return true;
}
