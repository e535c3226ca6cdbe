// Releasing a stopped sandbox's host resources, in the reverse order of boot: VM, network, cgroup, shared fs.
import type { Hypervisor } from '../hypervisor/hypervisor.js';
import type { Container } from './container.js';
import type { SandboxCgroupHandle, SharedFsHandle } from './deps.js';
import type { SandboxNetwork } from './sandbox-network.js';

export interface SandboxResources {
  hv?: Hypervisor;
  net?: SandboxNetwork;
  cgroup?: SandboxCgroupHandle;
  fs?: SharedFsHandle;
  containers: Iterable<Container>;
}

/** Tries every step (each failure goes to `attempt`'s list); the network goes only once QEMU's tap fds are closed. */
export async function releaseSandboxResources(
  r: SandboxResources,
  attempt: (what: string, fn: () => Promise<unknown>) => Promise<void>,
): Promise<void> {
  const { hv, net, cgroup, fs } = r;
  if (hv) {
    await attempt('stopping the VM', () => hv.stopVm());
    await attempt('cleaning up the VM', () => hv.cleanup());
  }
  if (net) await attempt('tearing down the network', () => net.teardown());
  if (cgroup) await attempt('removing the sandbox cgroup', () => cgroup.remove());
  if (fs) {
    for (const c of r.containers) {
      if (!c.rootfsMounted) continue;
      await attempt(`releasing container ${c.id}`, async () => {
        await fs.releaseContainer(c.id, { bundle: c.bundle, rootfsMounted: true });
        c.rootfsMounted = false;
      });
    }
    await attempt('cleaning up the shared fs', () => fs.cleanup());
  }
}
