// The agent's ttrpc services: grpc.AgentService (containers, stdio, network, guest) and grpc.Health.
// Handlers validate and translate; the work is in sandbox.ts, container.ts, network.ts, guest.ts.
// RPCs without a handler here answer Unimplemented (the ttrpc server does that).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { logger } from '../common/log.js';
import { GUEST_KATA_DIR } from '../contract/index.js';
import type { AgentService } from '../protocols/gen/agent_pb.js';
import { type Health, HealthCheckResponse_ServingStatus } from '../protocols/gen/health_pb.js';
import {
  type CallContext,
  EncodedMessage,
  type ServiceImpl,
  encodeBytesMessage,
} from '../protocols/ttrpc/index.js';
import { readStats } from './cgroups.js';
import { copyFile } from './copy-file.js';
import { Crun } from './crun.js';
import { invalidArgument, toTtrpcError } from './errors.js';
import { AGENT_VERSION, Guest } from './guest.js';
import { mountAt } from './mount.js';
import { setWindowSize, syncFilesystems } from './native.js';
import { readNetworkStats } from './netstats.js';
import { Network } from './network.js';
import type { ContainerProcess } from './process.js';
import { Sandbox } from './sandbox.js';
import { StorageManager } from './storage.js';

export interface AgentServiceOptions {
  /** Called when DestroySandbox asks the VM to power off (after containers are stopped). */
  onDestroySandbox?: () => void;
  /** Root under which the agent keeps container state (default /run/kata-agent). */
  stateDir?: string;
  /** The guest's Kata directory: storages, rootfs and bind sources must be under it (default /run/kata-containers). */
  kataRunDir?: string;
  /** crun binary (default `crun` on PATH). */
  crunPath?: string;
  /** Whether guest-wide changes (clock, hostname, DNS, kernel modules) are applied (default: when PID 1). */
  manageGuest?: boolean;
  /** argv prefixes for the network tools (default busybox ip / busybox arp). */
  ipCommand?: string[];
  arpCommand?: string[];
  /** Loads the NIC driver on demand (PID 1 only: see nic-driver.ts). */
  nicDriver?: () => Promise<unknown>;
  /** sysfs root (default /sys), for tests. */
  sysRoot?: string;
}

export interface AgentServices {
  agent: ServiceImpl<typeof AgentService>;
  health: ServiceImpl<typeof Health>;
  /** Stops every container and process (SIGTERM to the agent, DestroySandbox). */
  shutdown(): Promise<void>;
}

type Empty = Record<string, never>;
const empty: Empty = {};

export function createAgentService(opts: AgentServiceOptions = {}): AgentServices {
  const log = logger('agent');
  const stateDir = opts.stateDir ?? '/run/kata-agent';
  const kataRunDir = opts.kataRunDir ?? GUEST_KATA_DIR;
  // Paths from the host are resolved under these; they must exist before the first request.
  fs.mkdirSync(kataRunDir, { recursive: true, mode: 0o755 });
  fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  // Booted from an initramfs, "/" is rootfs, which pivot_root refuses; crun then moves the root instead.
  const noPivot = mountAt('/')?.fstype === 'rootfs';
  const crun = new Crun({
    binary: opts.crunPath,
    root: path.join(stateDir, 'crun'),
    log: log.child({ subsystem: 'crun' }),
    noPivot,
  });
  const storage = new StorageManager({
    root: kataRunDir,
    log: log.child({ subsystem: 'storage' }),
    sysRoot: opts.sysRoot,
  });
  const sandbox = new Sandbox({ crun, storage, log, stateDir, kataRunDir });
  const manageGuest = opts.manageGuest ?? process.pid === 1;
  const guest = new Guest({ sysRoot: opts.sysRoot, manageGuest, log });
  const network = new Network({
    ip: opts.ipCommand,
    arp: opts.arpCommand,
    nicDriver: opts.nicDriver,
    log: log.child({ subsystem: 'network' }),
  });
  let destroyed = false;

  /** Runs a handler, turning any failure into a ttrpc status that says what was being done. */
  const rpc = async <T>(
    what: string,
    fields: Record<string, unknown>,
    fn: () => Promise<T> | T,
  ): Promise<T> => {
    try {
      return await fn();
    } catch (e) {
      const err = toTtrpcError(e, what);
      log.warn({ ...fields, code: err.code, err: err.message }, `${what} failed`);
      throw err;
    }
  };

  const readStream = async (
    which: 'stdout' | 'stderr',
    cid: string,
    eid: string,
    len: number,
    ctx: CallContext,
  ): Promise<EncodedMessage> => {
    const p: ContainerProcess = sandbox.process(cid, eid);
    const parts = await p.io[which].readChunks(len, ctx.signal);
    if (parts.length === 0) p.afterRead?.();
    // ReadStreamResponse { bytes data = 1 }, written as the pipe's chunks: no copy of the output in the agent.
    return new EncodedMessage(encodeBytesMessage(1, parts));
  };

  const agent: ServiceImpl<typeof AgentService> = {
    createSandbox: (req) =>
      rpc('create sandbox', { sandbox_id: req.sandboxId }, async () => {
        guest.setHostname(req.hostname);
        guest.setDns(req.dns);
        await guest.loadModules(req.kernelModules);
        await sandbox.createSandbox(req);
        log.info({ sandbox_id: req.sandboxId, storages: req.storages.length }, 'sandbox created');
        return empty;
      }),

    destroySandbox: () =>
      rpc('destroy sandbox', {}, async () => {
        // In its own VM the agent only has to leave the disks consistent (what containers wrote to a disk or
        // volume synced to the host): the VM goes next.
        if (manageGuest) {
          await sandbox.stopForPowerOff();
          syncFilesystems();
        } else await sandbox.destroyAll();
        if (!destroyed && opts.onDestroySandbox) {
          destroyed = true;
          // after this response has been written
          setImmediate(opts.onDestroySandbox);
        }
        return empty;
      }),

    updateEphemeralMounts: (req) =>
      rpc('update ephemeral mounts', {}, async () => {
        await sandbox.addSandboxStorages(req.storages);
        return empty;
      }),

    createContainer: (req) =>
      rpc(`create container ${req.containerId}`, { container_id: req.containerId }, async () => {
        await sandbox.createContainer(req);
        return empty;
      }),

    startContainer: (req) =>
      rpc(`start container ${req.containerId}`, { container_id: req.containerId }, async () => {
        await sandbox.startContainer(req.containerId);
        return empty;
      }),

    removeContainer: (req) =>
      rpc(`remove container ${req.containerId}`, { container_id: req.containerId }, async () => {
        await sandbox.removeContainer(req.containerId, req.timeout);
        return empty;
      }),

    execProcess: (req) =>
      rpc(
        `exec ${req.execId} in container ${req.containerId}`,
        { container_id: req.containerId, exec_id: req.execId },
        async () => {
          await sandbox.execProcess(req);
          return empty;
        },
      ),

    signalProcess: (req) =>
      rpc(
        `signal ${req.signal} to process ${req.execId || '(init)'} of container ${req.containerId}`,
        { container_id: req.containerId, exec_id: req.execId },
        async () => {
          await sandbox.signalProcess(req.containerId, req.execId, req.signal);
          return empty;
        },
      ),

    waitProcess: (req) =>
      rpc(
        `wait for process ${req.execId || '(init)'} of container ${req.containerId}`,
        { container_id: req.containerId },
        async () => ({
          status: await sandbox.waitProcess(req.containerId, req.execId),
        }),
      ),

    updateContainer: (req) =>
      rpc(`update container ${req.containerId}`, { container_id: req.containerId }, async () => {
        await sandbox.updateContainer(req.containerId, req.resources);
        return empty;
      }),

    statsContainer: (req) =>
      rpc(`stats of container ${req.containerId}`, { container_id: req.containerId }, () => {
        const c = sandbox.container(req.containerId);
        return { cgroupStats: readStats(c.cgroup), networkStats: readNetworkStats() };
      }),

    pauseContainer: (req) =>
      rpc(`pause container ${req.containerId}`, { container_id: req.containerId }, async () => {
        await sandbox.container(req.containerId).pause();
        return empty;
      }),

    resumeContainer: (req) =>
      rpc(`resume container ${req.containerId}`, { container_id: req.containerId }, async () => {
        await sandbox.container(req.containerId).resume();
        return empty;
      }),

    writeStdin: (req) =>
      rpc(
        `write stdin of ${req.containerId}/${req.execId || '(init)'}`,
        { container_id: req.containerId },
        async () => {
          const p = sandbox.process(req.containerId, req.execId);
          if (!p.io.stdin) throw invalidArgument('the process has no stdin');
          // upstream runtime-rs closes stdin with an empty write
          if (req.data.length === 0) {
            p.io.closeStdin();
            return { len: 0 };
          }
          return { len: await p.io.stdin.write(req.data) };
        },
      ),

    readStdout: (req, ctx) =>
      rpc(
        `read stdout of ${req.containerId}/${req.execId || '(init)'}`,
        { container_id: req.containerId },
        () => readStream('stdout', req.containerId, req.execId, req.len, ctx),
      ),

    readStderr: (req, ctx) =>
      rpc(
        `read stderr of ${req.containerId}/${req.execId || '(init)'}`,
        { container_id: req.containerId },
        () => readStream('stderr', req.containerId, req.execId, req.len, ctx),
      ),

    closeStdin: (req) =>
      rpc(
        `close stdin of ${req.containerId}/${req.execId || '(init)'}`,
        { container_id: req.containerId },
        () => {
          sandbox.process(req.containerId, req.execId).io.closeStdin();
          return empty;
        },
      ),

    ttyWinResize: (req) =>
      rpc(
        `resize terminal of ${req.containerId}/${req.execId || '(init)'}`,
        { container_id: req.containerId },
        () => {
          const p = sandbox.process(req.containerId, req.execId);
          if (p.io.ptyMaster === undefined) throw invalidArgument('the process has no terminal');
          if (req.row > 0xffff || req.column > 0xffff)
            throw invalidArgument(`window size ${req.row}x${req.column} too large`);
          if (!p.isDestroyed) setWindowSize(p.io.ptyMaster, req.row, req.column);
          return empty;
        },
      ),

    updateInterface: (req) =>
      rpc('update interface', { name: req.interface?.name ?? '' }, async () => {
        if (!req.interface) throw invalidArgument('update interface: no interface given');
        return network.updateInterface(req.interface);
      }),

    updateRoutes: (req) =>
      rpc('update routes', {}, async () => ({
        Routes: await network.updateRoutes(req.routes?.Routes ?? []),
      })),

    listInterfaces: () =>
      rpc('list interfaces', {}, async () => ({ Interfaces: await network.listInterfaces() })),

    listRoutes: () => rpc('list routes', {}, async () => ({ Routes: await network.listRoutes() })),

    addARPNeighbors: (req) =>
      rpc('add ARP neighbours', {}, async () => {
        await network.addArpNeighbors(req.neighbors?.ARPNeighbors ?? []);
        return empty;
      }),

    onlineCPUMem: (req) =>
      rpc('online CPUs and memory', {}, async () => {
        await guest.onlineCpuMem(req.nbCpus, req.cpuOnly);
        return empty;
      }),

    memHotplugByProbe: (req) =>
      rpc('memory hotplug by probe', {}, () => {
        guest.memHotplugByProbe(req.memHotplugProbeAddr);
        return empty;
      }),

    getGuestDetails: (req) =>
      rpc('get guest details', {}, () => guest.details(req.memBlockSize, req.memHotplugProbe)),

    setGuestDateTime: (req) =>
      rpc('set guest date and time', {}, () => {
        guest.setDateTime(req.Sec, req.Usec);
        return empty;
      }),

    reseedRandomDev: (req) =>
      rpc('reseed random device', {}, () => {
        guest.reseedRandom(req.data);
        return empty;
      }),

    copyFile: (req) =>
      rpc(`copy file ${req.path}`, { path: req.path }, () => {
        copyFile(path.join(kataRunDir, 'shared/containers'), req);
        return empty;
      }),

    getOOMEvent: (_req, ctx) =>
      rpc('get OOM event', {}, async () => ({ containerId: await sandbox.nextOom(ctx.signal) })),

    getMetrics: () => rpc('get metrics', {}, () => ({ metrics: guest.metrics(sandbox.containers.size) })),
  };

  const health: ServiceImpl<typeof Health> = {
    check: () => ({ status: HealthCheckResponse_ServingStatus.SERVING }),
    version: () => ({ grpcVersion: 'ttrpc', agentVersion: AGENT_VERSION }),
  };

  return {
    agent,
    health,
    shutdown: async () => {
      await sandbox.destroyAll();
      log.info({ host: os.hostname() }, 'agent services shut down');
    },
  };
}
