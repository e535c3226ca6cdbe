// Cleaning up after a shim that died (`containerd-shim-kata-v2 delete`): from the persisted state when there is
// one, and by looking at the host when there is not: kill the shim, QEMU and virtiofsd of the sandbox, unmount
// and remove its shared dir, remove its run dir and state. Idempotent: a sandbox that is gone is a no-op.
import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from '../common/log.js';
import type { VmState } from '../hypervisor/hypervisor.js';
import { stopFromState } from '../hypervisor/index.js';
import { PERSIST_ROOT, loadSandboxState, removeSandboxState } from '../persist/index.js';
import { DEFAULT_SHARED_FS_ROOT, SandboxCgroup, SharedFs, cleanupSandboxShare } from '../resource/index.js';
import type { PersistedSandbox } from './deps.js';
import { errorMessage } from './errors.js';
import { VM_RUN_ROOT } from './sandbox.js';

function cmdline(pid: number): string | undefined {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
  } catch {
    return undefined;
  }
}

async function waitGone(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const c = cmdline(pid);
    if (c === undefined || c === '') return true; // gone, or a zombie waiting for its parent
    await new Promise((r) => setTimeout(r, 20));
  }
  return false;
}

async function killPid(pid: number, log: Logger, what: string): Promise<void> {
  log.info({ pid, what }, 'killing a leftover process');
  try {
    process.kill(pid, 'SIGKILL');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw e;
  }
  if (!(await waitGone(pid, 5000))) log.warn({ pid, what }, 'process did not go away after SIGKILL');
}

/** Processes whose command line names one of `needles` and matches `program` (QEMU, virtiofsd, the shim). */
function findProcesses(program: RegExp, needles: string[]): number[] {
  const out: number[] = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    if (pid === process.pid) continue;
    const c = cmdline(pid);
    if (c && program.test(c) && needles.some((n) => c.includes(n))) out.push(pid);
  }
  return out;
}

export interface CleanupResult {
  /** What was found and undone (empty: nothing was left). */
  actions: string[];
  errors: string[];
}

export async function cleanupSandbox(sandboxId: string, log: Logger): Promise<CleanupResult> {
  const actions: string[] = [];
  const errors: string[] = [];
  const attempt = async (what: string, fn: () => Promise<unknown> | unknown) => {
    try {
      await fn();
    } catch (e) {
      errors.push(`${what}: ${errorMessage(e)}`);
    }
  };

  let state: PersistedSandbox | undefined;
  await attempt('reading the persisted state', async () => {
    state = (await loadSandboxState(sandboxId)) as PersistedSandbox | undefined;
  });
  const runDir = state?.hypervisor.runDir ?? path.join(VM_RUN_ROOT, sandboxId);
  const sharedDir = path.join(DEFAULT_SHARED_FS_ROOT, sandboxId);

  // The shim first: a live one would keep restarting what we tear down.
  const shimPid = state?.shimPid;
  if (shimPid && shimPid !== process.pid) {
    const c = cmdline(shimPid);
    if (c?.includes('containerd-shim-kata-v2') && c.includes(sandboxId)) {
      actions.push(`killed shim ${shimPid}`);
      await attempt(`killing shim ${shimPid}`, () => killPid(shimPid, log, 'shim'));
    }
  }

  if (state) {
    const vm: VmState = state.vm ?? {
      hypervisor: state.hypervisor.name,
      sandboxId,
      pid: state.hypervisor.pid,
      virtiofsdPid: state.hypervisor.virtiofsdPid,
      runDir,
      agent: { kind: 'virtio-serial', socketPath: path.join(runDir, 'agent.sock') },
      accel: 'tcg',
    };
    actions.push(`stopped VM from state (pid ${vm.pid})`);
    await attempt('stopping the VM from its state', () => stopFromState(vm, log, 1000));
  }
  // Without (or despite) state: anything still running for this sandbox's dirs.
  for (const pid of findProcesses(/qemu-system|virtiofsd/, [`${runDir}/`, `${sharedDir}/`])) {
    actions.push(`killed ${pid}`);
    await attempt(`killing ${pid}`, () => killPid(pid, log, 'vm process'));
  }

  // The sandbox cgroup: whatever is still inside (a VMM the scan missed) is killed with it.
  await attempt('removing the sandbox cgroup', async () => {
    const cg = new SandboxCgroup(sandboxId);
    if ((await cg.pids()).length > 0) actions.push('emptied the sandbox cgroup');
    await cg.remove({ kill: true });
  });
  if (fs.existsSync(sharedDir)) {
    actions.push(`cleaned ${sharedDir}`);
    await attempt('cleaning up the shared fs', () => cleanupSandboxShare(new SharedFs(sandboxId)));
  }
  if (fs.existsSync(runDir)) {
    actions.push(`removed ${runDir}`);
    await attempt(`removing ${runDir}`, () => fs.rmSync(runDir, { recursive: true, force: true }));
  }
  if (state || fs.existsSync(path.join(PERSIST_ROOT, sandboxId))) {
    actions.push('removed persisted state');
    await attempt('removing the persisted state', () => removeSandboxState(sandboxId));
  }
  if (actions.length > 0)
    log.info({ sandbox_id: sandboxId, actions, errors }, 'cleaned up after a dead shim');
  return { actions, errors };
}
