// Undoing a dead VM from its persisted VmState, without the Hypervisor object that started it (`shim delete`
// after the shim died, or cleanup of a crashed sandbox). Processes are recognised by pid + start time only.
import { rm } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../common/log.js';
import type { VmProcess, VmState } from './hypervisor.js';
import { type ProcessIdentity, processFromPidFile, terminateProcess } from './proc.js';
import { runDirPaths } from './qemu/cmdline.js';
import { listGuestCids, releaseGuestCid } from './vsock.js';

export interface CleanupDeadVmOptions {
  /** SIGTERM → SIGKILL grace per process. */
  graceMs?: number;
  /** The vsock CID registry (tests). */
  cidDir?: string;
}

function validProcesses(state: VmState): VmProcess[] {
  const list = Array.isArray(state.processes) ? state.processes : [];
  return list.filter(
    (p) => Number.isInteger(p?.pid) && p.pid > 0 && Number.isFinite(p?.startTime) && p.startTime >= 0,
  );
}

/**
 * Kills the VM's processes (those recorded in `state`, and the QEMU its run dir's pid file names if it wrote
 * that file, which covers a crash between spawn and persist), removes the run dir and frees the vsock CIDs
 * the registry lists for this sandbox (its entries name their owner, so one reserved just before a crash is
 * found too). Idempotent; errors are collected and thrown
 * together once everything was tried.
 */
export async function cleanupDeadVm(
  state: VmState,
  log: Logger,
  opts: CleanupDeadVmOptions = {},
): Promise<void> {
  const errors: string[] = [];
  const graceMs = opts.graceMs ?? 3000;
  // The run dir is removed recursively: only ever a per-sandbox dir named after the sandbox.
  if (
    typeof state.runDir !== 'string' ||
    !path.isAbsolute(state.runDir) ||
    path.basename(state.runDir) !== state.sandboxId
  ) {
    throw new Error(
      `cleaning up the dead VM of sandbox ${state.sandboxId}: run dir ${JSON.stringify(state.runDir)} is not ` +
        'an absolute path ending in the sandbox id; refusing to touch it',
    );
  }
  const targets: { id: ProcessIdentity; what: string }[] = validProcesses(state).map((p) => ({
    id: { pid: p.pid, startTime: p.startTime },
    what: p.role,
  }));
  const fromPidFile = await processFromPidFile(runDirPaths(state.runDir).pidFile).catch(() => undefined);
  if (fromPidFile && !targets.some((t) => t.id.pid === fromPidFile.pid)) {
    targets.unshift({ id: fromPidFile, what: 'vmm (pid file)' });
  }
  // The VMM first: virtiofsd exits by itself once its vhost-user peer is gone.
  targets.sort((a, b) => Number(b.what.startsWith('vmm')) - Number(a.what.startsWith('vmm')));
  for (const t of targets) {
    try {
      await terminateProcess(t.id, { graceMs, log, what: `${t.what} of sandbox ${state.sandboxId}` });
    } catch (err) {
      errors.push((err as Error).message);
    }
  }
  try {
    await rm(state.runDir, { recursive: true, force: true });
  } catch (err) {
    errors.push(`removing run dir ${state.runDir}: ${(err as Error).message}`);
  }
  // Only entries the registry still lists for this sandbox: a released CID may belong to another VM by now.
  const cids: number[] = [];
  for (const [cid, owner] of await listGuestCids(opts.cidDir)) if (owner === state.sandboxId) cids.push(cid);
  for (const cid of cids) {
    try {
      await releaseGuestCid(cid, opts.cidDir);
    } catch (err) {
      errors.push(`releasing vsock CID ${cid}: ${(err as Error).message}`);
    }
  }
  if (errors.length > 0)
    throw new Error(`cleaning up the dead VM of sandbox ${state.sandboxId}: ${errors.join('; ')}`);
}

/** The e2e suite's older name. */
export const stopFromState = cleanupDeadVm;
