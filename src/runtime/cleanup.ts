// Cleaning up after a shim that died (`containerd-shim-kata-v2 delete`), from the persisted state only: the
// sandbox records what it holds before creating it (runtime/sandbox.ts, hypervisor VmState), so nothing has to
// be guessed from the host. Kill the shim (if still alive), undo the VM (hypervisor), empty and remove the
// sandbox cgroup, clean the shared fs, drop the state. Idempotent: a sandbox that is gone is a no-op.
import type { Logger } from '../common/log.js';
import type { CleanupDeps, PersistedSandbox } from './deps.js';
import { attempts } from './errors.js';

export interface CleanupResult {
  /** What was found and undone (empty: nothing was left). */
  actions: string[];
  errors: string[];
}

export async function cleanupSandbox(
  sandboxId: string,
  deps: CleanupDeps,
  log: Logger,
): Promise<CleanupResult> {
  const actions: string[] = [];
  const { errors, run: attempt } = attempts();

  let state: PersistedSandbox | undefined;
  await attempt('reading the persisted state', async () => {
    state = await deps.loadState(sandboxId);
  });
  const unreadable = errors.length; // an unreadable state is no use to a retry

  // The shim first: a live one would keep restarting what we tear down.
  const shim = state?.shim;
  if (shim && shim.pid !== process.pid) {
    await attempt(`killing shim ${shim.pid}`, async () => {
      if (await deps.processes.terminate(shim, { graceMs: 0, log, what: `shim of sandbox ${sandboxId}` }))
        actions.push(`killed shim ${shim.pid}`);
    });
  }

  const vm = state?.vm;
  if (vm) {
    actions.push(`cleaned up the VM from its state (run dir ${vm.runDir})`);
    await attempt('cleaning up the VM from its state', () => deps.cleanupDeadVm(vm, log));
  }

  // Taps die with QEMU's fds; the tc filters and qdiscs on the CNI's interfaces do not.
  const net = state?.network;
  if (net?.taps.length) {
    const clean = deps.cleanupNetwork;
    await attempt(`cleaning network leftovers in ${net.netnsPath}`, async () => {
      if (!clean) throw new Error('no network cleanup is wired');
      await clean(net);
      actions.push(`removed ${net.taps.map((t) => t.tap).join(', ')} and their tc filters`);
    });
  }

  // The sandbox cgroup: whatever is still inside (a process spawned but not yet recorded) dies with it.
  const cgroupOf = deps.sandboxCgroup;
  if (cgroupOf) {
    await attempt('removing the sandbox cgroup', async () => {
      const cg = cgroupOf(sandboxId, state?.cgroupPath);
      if ((await cg.pids()).length > 0) actions.push('emptied the sandbox cgroup');
      await cg.remove();
    });
  }
  // Idempotent and needs only the id: run even without state (a crash before the first persist).
  await attempt('cleaning up the shared fs', () => deps.sharedFs(sandboxId).cleanup());
  if (errors.length === unreadable) {
    await attempt('removing the persisted state', async () => {
      await deps.removeState(sandboxId);
      if (state) actions.push('removed persisted state');
    });
  } // else the state stays: a second `shim delete` can finish the job

  if (actions.length > 0 || errors.length > 0)
    log.info({ sandbox_id: sandboxId, actions, errors }, 'cleaned up after a dead shim');
  return { actions, errors };
}
