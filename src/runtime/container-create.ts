// Creating a container in a running sandbox: the rootfs and volumes onto the shared fs, then the agent's
// CreateContainer; a failure undoes the host side (the caller forgets the container).
import type { KataConfig } from '../config/types.js';
import type { AgentClient } from './agent.js';
import type { Container } from './container.js';
import type { SharedFsHandle } from './deps.js';
import { errorMessage } from './errors.js';
import { toGrpcSpec } from './oci.js';

export interface CreateInGuestDeps {
  agent: AgentClient;
  fs: SharedFsHandle;
  config: KataConfig;
  /** Records the mounted rootfs before the guest is asked (crash cleanup needs it). */
  persist(): Promise<void>;
}

export async function createInGuest(c: Container, d: CreateInGuestDeps): Promise<void> {
  try {
    await c.init.openIo();
    const prepared = await d.fs.prepareContainer(c.id, {
      bundle: c.bundle,
      rootfs: c.rootfs,
      spec: c.spec,
      readonlyRootfs: c.spec.root?.readonly,
      disableGuestSeccomp: d.config.runtime.disable_guest_seccomp,
    });
    c.rootfsMounted = true;
    await d.persist();
    await d.agent.createContainer(
      {
        containerId: c.id,
        execId: '',
        storages: prepared.storages,
        OCI: toGrpcSpec(prepared.guestSpec),
        sandboxPidns: false,
      },
      { timeoutMs: (d.config.agent.create_container_timeout || 60) * 1000 },
    );
  } catch (e) {
    await c.init.release();
    if (c.rootfsMounted) {
      await d.fs
        .releaseContainer(c.id, { bundle: c.bundle, rootfsMounted: true })
        .then(() => {
          c.rootfsMounted = false;
        })
        .catch((err: unknown) =>
          c.log.error({ err: errorMessage(err) }, 'releasing the rootfs after a failed create'),
        );
    }
    throw e;
  }
}
