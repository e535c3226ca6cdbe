import path from 'node:path';
import { fileURLToPath } from 'node:url';
// The runtime's dependencies, wired to the real layers: config, QEMU hypervisor, resource (virtio-fs share and
// container mounts), persist, and the agent over the endpoint the hypervisor gives; crash cleanup uses the same.
import { applyAnnotations, loadConfiguration } from '../config/index.js';
import { cleanupDeadVm, createHypervisor, processIdentity, terminateProcess } from '../hypervisor/index.js';
import { loadSandboxState, removeSandboxState, saveSandboxState } from '../persist/index.js';
import {
  SandboxCgroup,
  SharedFs,
  cleanupSandboxShare,
  podShmBytes,
  prepareContainer,
  releaseContainer,
} from '../resource/index.js';
import { cleanupNetworkLeftovers, netnsCommands, scanNetns } from '../resource/network/index.js';
import { connectAgent } from './agent.js';
import type { CleanupDeps, PersistedSandbox, RuntimeDeps, SharedFsHandle } from './deps.js';
import { spawnCacheFiller } from './factory.js';

/** kata-ctl's bundle, beside the shim's in dist/ (the runtime is bundled into both). */
const KATA_CTL = path.join(path.dirname(fileURLToPath(import.meta.url)), 'kata-ctl.mjs');

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

export function realDeps(): RuntimeDeps & CleanupDeps {
  return {
    loadConfig: ({ configPath, annotations }) => {
      const { config, warnings } = loadConfiguration({ configPath: configPath || undefined });
      void warnings; // loadConfiguration logs them itself
      return applyAnnotations(config, annotations);
    },
    createHypervisor: (config, log) => createHypervisor(config, log),
    sharedFs,
    podShmBytes,
    refillVmCache: (config, configPath, log) => spawnCacheFiller(KATA_CTL, { config, configPath, log }),
    connectAgent: (endpoint, opts) =>
      connectAgent(endpoint, {
        ...opts,
        dialVsock: async (cid, port) => (await import('./vsock.js')).dialVsock(cid, port),
      }),
    sandboxCgroup: (sid, path) => {
      const cg = new SandboxCgroup(sid, { path });
      return {
        create: () => cg.create(),
        addProcess: (pid) => cg.addProcess(pid),
        pids: () => cg.pids(),
        remove: () => cg.remove({ kill: true }),
      };
    },
    saveState: (s) => saveSandboxState(s),
    removeState: (id) => removeSandboxState(id),
    // persist checks the common part; `shim` and `vm` are checked where they are used (cleanupDeadVm).
    loadState: async (id) => (await loadSandboxState(id)) as PersistedSandbox | undefined,
    cleanupDeadVm: (state, log) => cleanupDeadVm(state, log),
    network: {
      commands: (path) => netnsCommands(path),
      scan: (cmds) => scanNetns(cmds),
      cleanupLeftovers: (record) => cleanupNetworkLeftovers(record),
    },
    cleanupNetwork: (record) => cleanupNetworkLeftovers(record),
    processes: { identify: (pid) => processIdentity(pid), terminate: (id, o) => terminateProcess(id, o) },
  };
}
