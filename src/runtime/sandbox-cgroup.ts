// The sandbox's host cgroup: where the VMM's processes go, recorded before it is made so that `shim delete`
// after a crash finds it. A failure is logged, not fatal: the VM then stays in the shim's cgroup.
import type { Logger } from '../common/log.js';
import { sandboxCgroupPath } from '../resource/cgroups.js';
import type { RuntimeDeps, SandboxCgroupHandle } from './deps.js';
import { errorMessage } from './errors.js';

export interface JoinCgroupOptions {
  make: NonNullable<RuntimeDeps['sandboxCgroup']>;
  sandboxId: string;
  /** The sandbox spec's linux.cgroupsPath. */
  cgroupsPath: string | undefined;
  pids: readonly number[];
  /** Persists the cgroup path (undefined: the default kata_<sid>) before anything is created. */
  record(path: string | undefined): Promise<void>;
  log: Logger;
}

export async function joinSandboxCgroup(o: JoinCgroupOptions): Promise<SandboxCgroupHandle | undefined> {
  const where = sandboxCgroupPath(o.cgroupsPath);
  if (where.ignored) o.log.info({ reason: where.ignored }, 'the sandbox cgroup is kata_<sid> at the root');
  try {
    await o.record(where.path);
    const cg = o.make(o.sandboxId, where.path);
    await cg.create();
    for (const pid of o.pids) await cg.addProcess(pid);
    o.log.debug({ cgroup: where.path ?? `kata_${o.sandboxId}` }, 'the VMM is in the sandbox cgroup');
    return cg;
  } catch (e) {
    o.log.warn(
      { err: errorMessage(e) },
      'the sandbox cgroup could not be set up; the VM stays in the shim cgroup',
    );
    return undefined;
  }
}
