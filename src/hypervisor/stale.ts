// Tearing down a VM from its saved state, without the Hypervisor object that started it (`shim delete` after
// the shim died, or cleanup of a crashed sandbox).
import { readFile, rm } from 'node:fs/promises';
import type { Logger } from '../common/log.js';
import type { VmState } from './hypervisor.js';
import { releaseGuestCid } from './vsock.js';

async function cmdlineOf(pid: number): Promise<string | undefined> {
  try {
    return (await readFile(`/proc/${pid}/cmdline`, 'utf8')).replaceAll('\0', ' ');
  } catch {
    return undefined;
  }
}

/** True while `pid` is a live process whose command line names runDir (a zombie's cmdline is empty). */
async function stillOurs(pid: number, runDir: string): Promise<boolean> {
  return (await cmdlineOf(pid))?.includes(runDir) ?? false;
}

/** SIGTERM, wait up to graceMs, SIGKILL; only if the pid still belongs to this VM (its cmdline names runDir). */
async function killIfOurs(pid: number, runDir: string, graceMs: number, log: Logger): Promise<void> {
  // A recycled pid belongs to someone else: its command line does not mention our run dir.
  if (!(await stillOurs(pid, runDir))) return;
  log.info({ pid, runDir }, 'killing a VM process left from saved state');
  process.kill(pid, 'SIGTERM');
  const deadline = Date.now() + graceMs;
  while ((await stillOurs(pid, runDir)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  if (await stillOurs(pid, runDir)) process.kill(pid, 'SIGKILL');
  while ((await stillOurs(pid, runDir)) && Date.now() < deadline + 5000)
    await new Promise((r) => setTimeout(r, 20));
}

/** Kills the VMM and virtiofsd recorded in `state`, removes the run dir and releases the vsock CID. */
export async function stopFromState(state: VmState, log: Logger, graceMs = 3000): Promise<void> {
  const pids = [state.pid, state.virtiofsdPid].filter((p): p is number => typeof p === 'number' && p > 0);
  for (const pid of pids) await killIfOurs(pid, state.runDir, graceMs, log);
  await rm(state.runDir, { recursive: true, force: true });
  if (state.agent.kind === 'vsock') await releaseGuestCid(state.agent.cid);
}
