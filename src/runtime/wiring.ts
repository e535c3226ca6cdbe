// The runtime's dependencies, wired to the real layers: config, QEMU hypervisor, resource (virtio-fs share and
// container mounts), persist, and the agent over the endpoint the hypervisor gives.
import { applyAnnotations, loadConfiguration } from '../config/index.js';
import { createHypervisor } from '../hypervisor/index.js';
import { removeSandboxState, saveSandboxState } from '../persist/index.js';
import {
  SandboxCgroup,
  SharedFs,
  cleanupSandboxShare,
  prepareContainer,
  releaseContainer,
} from '../resource/index.js';
import { connectAgent } from './agent.js';
import type { RuntimeDeps, SharedFsHandle } from './deps.js';

function sharedFs(sandboxId: string): SharedFsHandle {
  const sfs = new SharedFs(sandboxId);
  return {
    hostSharedDir: sfs.hostSharedDir,
    setup: () => sfs.setup(),
    guestStorage: () => sfs.guestStorage(),
    prepareContainer: (cid, opts) => prepareContainer(sfs, cid, opts),
    releaseContainer: (cid, opts) => releaseContainer(sfs, cid, opts),
    // Containers a crash or a failed stop left behind are released first (SharedFs cleans only the share).
    cleanup: () => cleanupSandboxShare(sfs),
  };
}

export function realDeps(): RuntimeDeps {
  return {
    loadConfig: ({ configPath, annotations }) => {
      const { config, warnings } = loadConfiguration({ configPath: configPath || undefined });
      void warnings; // loadConfiguration logs them itself
      return applyAnnotations(config, annotations);
    },
    createHypervisor: (config, log) => createHypervisor(config, log),
    sharedFs,
    connectAgent: (endpoint, opts) =>
      connectAgent(endpoint, {
        ...opts,
        dialVsock: async (cid, port) => (await import('./vsock.js')).dialVsock(cid, port),
      }),
    sandboxCgroup: (sid) => {
      const cg = new SandboxCgroup(sid);
      return {
        create: () => cg.create(),
        addProcess: (pid) => cg.addProcess(pid),
        remove: () => cg.remove({ kill: true }),
      };
    },
    saveState: (s) => saveSandboxState(s),
    removeState: (id) => removeSandboxState(id),
  };
}
