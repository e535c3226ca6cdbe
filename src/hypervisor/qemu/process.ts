// The QEMU process from spawn to "running": waiting for its QMP socket and run state (bounded by the start
// deadline, ended early by its death), who it is on the host (pid + start time), what it left in its run dir.
import { pathExists, readFileTail } from '../../common/files.js';
import type { Logger } from '../../common/log.js';
import { PollTimeoutError, pollUntil } from '../../common/poll.js';
import type { VmConfig, VmProcess } from '../hypervisor.js';
import { processFromPidFile, processIdentity } from '../proc.js';
import { SupervisedChild, type WatchedProcess, describeExit, formatTail, waitFor } from '../supervisor.js';
import type { Virtiofsd } from '../virtiofsd.js';
import { runDirPaths } from './cmdline.js';
import { type ColdPlugNics, type FdSender, connectQmpWithFdPassing } from './netdev.js';
import type { QmpClient } from './qmp.js';

/** Rejects once `child` exits, with QEMU's last words; used to end a wait early. */
function deathSignal(child: WatchedProcess, when: string): { signal: AbortSignal; done: () => void } {
  const ac = new AbortController();
  let live = true;
  void child.exited.then((e) => {
    if (live)
      ac.abort(new Error(`${describeExit('QEMU', e)} ${when}${formatTail('qemu stderr', e.stderrTail)}`));
  });
  return {
    signal: ac.signal,
    done: () => {
      live = false;
    },
  };
}

/**
 * Connects to QEMU's QMP socket once it accepts, before `deadline` (ms since epoch). The socket can carry fds
 * (SCM_RIGHTS), which NIC hotplug needs: QEMU's QMP chardev takes one client, so this is the only one.
 */
export async function connectQmp(
  child: WatchedProcess,
  qmpPath: string,
  deadline: number,
  log: Logger,
): Promise<{ qmp: QmpClient; sendFds: FdSender }> {
  let lastError = 'socket not created yet';
  const death = deathSignal(child, 'before its QMP socket accepted a connection');
  try {
    return await pollUntil(
      async () => {
        if (!(await pathExists(qmpPath))) return undefined;
        try {
          return await connectQmpWithFdPassing(qmpPath, {
            timeoutMs: Math.max(deadline - Date.now(), 100),
            log: log.child({ component: 'qmp' }),
          });
        } catch (err) {
          lastError = (err as Error).message;
          return undefined;
        }
      },
      {
        timeoutMs: Math.max(deadline - Date.now(), 1),
        intervalMs: 10,
        signal: death.signal,
        what: `the QMP socket ${qmpPath}`,
      },
    );
  } catch (err) {
    if (death.signal.aborted) throw death.signal.reason;
    if (!(err instanceof PollTimeoutError)) throw err;
    throw new Error(`timed out; last attempt: ${lastError}`, { cause: err });
  } finally {
    death.done();
  }
}

/** Waits for query-status "running" before `deadline`. */
export async function waitRunning(child: WatchedProcess, qmp: QmpClient, deadline: number): Promise<void> {
  let status = 'unknown';
  const death = deathSignal(child, 'before reaching status running');
  try {
    await pollUntil(
      async () => {
        status = (await qmp.queryStatus()).status;
        return status === 'running';
      },
      { timeoutMs: Math.max(deadline - Date.now(), 1), signal: death.signal, what: 'QEMU status "running"' },
    );
  } catch (err) {
    if (death.signal.aborted) throw death.signal.reason;
    // A dying QEMU closes QMP a moment before its exit is seen: name the death, not the closed socket.
    if (qmp.isClosed && (await waitFor(child.exited, 1000))) {
      throw await deathReason(child, 'before reaching status running');
    }
    if (!(err instanceof PollTimeoutError)) throw err;
    throw new Error(`timed out; QEMU status is "${status}"`, { cause: err });
  } finally {
    death.done();
  }
}

async function deathReason(child: WatchedProcess, when: string): Promise<Error> {
  const e = await child.exited;
  return new Error(`${describeExit('QEMU', e)} ${when}${formatTail('qemu stderr', e.stderrTail)}`);
}

/** Logs the QMP events worth a line (shutdowns, resets, panics). */
export function logQmpEvents(qmp: QmpClient, log: Logger): void {
  for (const ev of ['SHUTDOWN', 'POWERDOWN', 'RESET', 'GUEST_PANICKED']) {
    qmp.on(ev, (e: { data: unknown }) => log.info({ event: ev, data: e.data }, 'QMP event'));
  }
}

/** pid + start time of a child we just spawned, for the persisted VmState. */
export async function spawnedProcess(
  role: VmProcess['role'],
  pid: number | undefined,
): Promise<VmProcess | undefined> {
  if (!pid) return undefined;
  const id = await processIdentity(pid);
  return id ? { role, ...id } : undefined;
}

/** A run dir whose pid file names the live QEMU that wrote it means the sandbox id is in use. */
export async function refuseLiveRunDir(runDir: string): Promise<void> {
  const live = await processFromPidFile(runDirPaths(runDir).pidFile);
  if (live) throw new Error(`run dir ${runDir} belongs to a running QEMU (pid ${live.pid})`);
}

/** The last bytes the guest printed on its console (ttyS0 → console.log). */
export async function consoleTail(runDir: string, bytes = 2048): Promise<string> {
  try {
    return (await readFileTail(runDirPaths(runDir).consoleLog, bytes)).text;
  } catch {
    return '';
  }
}

/**
 * Stops the VM (through `onDeath`) when a virtiofsd dies on its own: without its shared fs the guest cannot run
 * containers. virtiofsd also exits when QEMU goes away (vhost-user disconnect), often before QEMU's exit is
 * seen, so a death within 500 ms of QEMU's is QEMU's.
 */
export function watchVirtiofsd(
  v: Virtiofsd,
  o: {
    qemu: () => WatchedProcess | undefined;
    expected: () => boolean;
    onDeath: (why: string) => void;
    log: Logger;
  },
): void {
  void v.exited.then(async (e) => {
    if (o.expected()) return;
    const qemu = o.qemu();
    if (qemu && (await waitFor(qemu.exited, 500))) return;
    if (o.expected()) return;
    const why = `virtiofsd for ${v.opts.sharedDir} died: ${describeExit('virtiofsd', e)}`;
    o.log.error({ stderr: e.stderrTail }, why);
    o.onDeath(why);
  });
}

/** Starts each virtiofsd (they must listen before QEMU connects) and watches it for the VM's whole life. */
export async function startVirtiofsds(
  daemons: readonly Virtiofsd[],
  deadline: number,
  o: {
    record: (pid: number | undefined) => Promise<void>;
    qemu: () => WatchedProcess | undefined;
    /** true once the VM is being stopped: a virtiofsd exit is then expected */
    winding: () => boolean;
    onDeath: (why: string) => void;
    waiting: (what: string) => void;
    log: Logger;
  },
): Promise<void> {
  for (const v of daemons) {
    o.waiting(`virtiofsd socket ${v.opts.socketPath}`);
    await v.start(Math.max(deadline - Date.now(), 1), o.record);
    watchVirtiofsd(v, {
      qemu: o.qemu,
      expected: () => v.isStopping || o.winding(),
      onDeath: o.onDeath,
      log: o.log,
    });
  }
}

/** Spawns QEMU with the cold-plugged NICs' tap fds as its fd 3, 4, ...; the fds are ours to close either way. */
export function spawnQemu(
  path: string,
  args: readonly string[],
  nics: ColdPlugNics,
  log: Logger,
  /** An open file for QEMU's output when it is to outlive us (parked in the VM cache). */
  detachedOutput?: number,
): SupervisedChild {
  const cold = nics.build(3);
  const all = [...args, ...cold.args];
  log.info({ qemu: path, args: all }, 'starting QEMU');
  try {
    return SupervisedChild.spawn('qemu', path, all, {
      log: log.child({ component: 'qemu' }),
      extraFds: cold.extraFds,
      detachedOutput,
    });
  } finally {
    nics.release(); // QEMU has its copies (or never will)
  }
}

/** pauseVm/resumeVm: stop or cont, then the run state QEMU reports must be the one asked for. */
export async function setRunState(qmp: QmpClient, want: 'paused' | 'running'): Promise<void> {
  await (want === 'paused' ? qmp.stop() : qmp.cont());
  const { status } = await qmp.queryStatus();
  if (status !== want)
    throw new Error(`QEMU status is "${status}" after ${want === 'paused' ? 'stop' : 'cont'}`);
}

/** The error of a failed start: what was awaited, why, and the tails of QEMU, virtiofsd and the guest console. */
export async function startFailure(
  what: string,
  err: unknown,
  o: { qemu: WatchedProcess | undefined; virtiofsds: readonly Virtiofsd[]; vm: VmConfig },
): Promise<Error> {
  const e = err as Error;
  const stderr = o.qemu ? formatTail('qemu stderr', o.qemu.stderrTail()) : '';
  const vfsErr = o.virtiofsds.map((v) => formatTail('virtiofsd stderr', v.stderrTail())).join('');
  const guestTail = formatTail('guest console', await consoleTail(o.vm.runDir));
  // The stderr tail is already in messages built from a dead child; add it otherwise.
  const tails = e.message.includes('(tail) ---') ? '' : `${stderr}${vfsErr}`;
  return new Error(`${what}: ${e.message}${tails}${guestTail}`, { cause: err });
}

/** Stops QEMU: QMP quit when QMP is up (SIGTERM otherwise), SIGKILL after `graceMs`. */
export async function stopQemu(
  child: WatchedProcess,
  qmp: QmpClient | undefined,
  graceMs: number,
  log: Logger,
): Promise<void> {
  let quitSent = false;
  if (qmp && !qmp.isClosed) {
    try {
      await qmp.quit(Math.min(graceMs, 2000));
      quitSent = true;
    } catch (err) {
      log.warn({ err: (err as Error).message }, 'QMP quit failed; using SIGTERM');
    }
  }
  const e = await child.terminate(graceMs, quitSent);
  log.debug({ code: e.code, signal: e.signal }, 'QEMU stopped');
}
