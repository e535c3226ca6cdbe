import type { Hypervisor } from '../hypervisor/hypervisor.js';
// What a sandbox persists (PersistedSandbox): enough for `shim delete` to undo it after a crash. Written in
// order, one write at a time, so a slow write never overtakes a later one.
import type { ProcessIdentity } from '../hypervisor/proc.js';
import type { PersistedSandbox } from './deps.js';
import { sandboxRunDir } from './vm-config.js';

export interface SnapshotInput {
  sandboxId: string;
  namespace: string;
  bundle: string;
  hypervisorName: string;
  hv: Hypervisor | undefined;
  shim: ProcessIdentity | undefined;
  containers: { id: string; bundle: string; rootfsMounted: boolean }[];
  sharedFsRoot: string | undefined;
  createdAt: string;
  state: PersistedSandbox['state'];
  network: PersistedSandbox['network'];
  cgroupPath: string | undefined;
}

export function sandboxSnapshot(i: SnapshotInput): PersistedSandbox {
  let vm: PersistedSandbox['vm'];
  try {
    vm = i.hv?.saveState();
  } catch {
    vm = undefined; // not prepared yet: nothing of the VM exists on the host
  }
  return {
    sandboxId: i.sandboxId,
    namespace: i.namespace,
    bundle: i.bundle,
    hypervisor: {
      name: i.hv?.name ?? i.hypervisorName,
      pid: vm?.pid ?? 0,
      virtiofsdPid: vm?.virtiofsdPid,
      runDir: vm?.runDir ?? sandboxRunDir(i.sandboxId),
    },
    vm,
    shim: i.shim,
    containers: i.containers,
    sharedFsRoot: i.sharedFsRoot,
    createdAt: i.createdAt,
    state: i.state,
    ...(i.network?.taps.length ? { network: i.network } : {}),
    ...(i.cgroupPath ? { cgroupPath: i.cgroupPath } : {}),
  };
}

/** Serializes state writes; each write's promise says whether that write (not an earlier one) worked. */
export class StateWriter {
  private chain: Promise<void> = Promise.resolve();

  constructor(private readonly save: (s: PersistedSandbox) => Promise<void>) {}

  write(s: PersistedSandbox): Promise<void> {
    this.chain = this.chain.catch(() => {}).then(() => this.save(s));
    return this.chain;
  }

  /** Resolves once every write so far finished (failed or not). */
  settled(): Promise<void> {
    return this.chain.catch(() => {});
  }
}
