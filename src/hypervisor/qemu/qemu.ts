// The QEMU driver: one instance per sandbox. QEMU runs as our child (no -daemonize) so its death is noticed
// at once; QMP drives it after boot; virtiofsd is started before QEMU and stopped after it.
import { constants, accessSync, existsSync } from 'node:fs';
import { mkdir, open, readFile, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import type { Logger } from '../../common/log.js';
import { logger } from '../../common/log.js';
import type { KataConfig } from '../../config/types.js';
import { type ProbeOptions, resolveAccelerator } from '../accel.js';
import { readGuestManifest } from '../guest-manifest.js';
import type {
  AgentEndpoint,
  Device,
  DeviceInfo,
  Hypervisor,
  HypervisorCapabilities,
  VmConfig,
  VmExit,
  VmState,
} from '../hypervisor.js';
import { type ChildExit, SupervisedChild, describeExit, formatTail, waitFor } from '../supervisor.js';
import { Virtiofsd } from '../virtiofsd.js';
import {
  AGENT_VSOCK_PORT,
  allocateGuestCid,
  chooseAgentChannel,
  hostHasVhostVsock,
  releaseGuestCid,
} from '../vsock.js';
import { blockDeviceProps, blockdevOptions, scsiAddress, toJson } from './block.js';
import {
  type AgentChannel,
  type BootBlock,
  type BootFsShare,
  type QemuCommandLine,
  buildQemuCmdline,
  qemuId,
  runDirPaths,
} from './cmdline.js';
import { pciPathOf } from './pci.js';
import { type JsonValue, QmpClient } from './qmp.js';

export interface QemuDriverOptions {
  /** Accelerator probe settings (cache file, timeout) for accel = "auto". */
  accelProbe?: ProbeOptions;
  /** Empty pcie-root-ports reserved for hotplug. */
  hotplugPorts?: number;
  /** Directory of the vsock CID registry (tests). */
  cidDir?: string;
  /** How long stopVm waits after QMP quit / SIGTERM before SIGKILL. */
  stopGraceMs?: number;
}

type Phase = 'new' | 'prepared' | 'starting' | 'running' | 'stopping' | 'stopped';

interface HotpluggedBlock {
  qemuId: string;
  nodeName: string;
  /** root port (virtio-blk) */
  port?: string;
  /** index on the SCSI controller (virtio-scsi) */
  scsiIndex?: number;
}

const MIB = 1024 * 1024;
/** x86 guests online memory in 128 MiB blocks; smaller DIMMs would be wasted. */
const MEMORY_BLOCK_MIB = 128;
const DEFAULT_HOTPLUG_PORTS = 8;
/** q35 accepts at most 288 vCPUs; Kata caps lower. */
const MAX_VCPUS = 240;

export class QemuHypervisor implements Hypervisor {
  readonly name = 'qemu';
  readonly exited: Promise<VmExit>;
  private resolveExited!: (e: VmExit) => void;
  private exitResolved = false;
  private phase: Phase = 'new';
  private log: Logger;

  private vm: VmConfig | undefined;
  private cmd: QemuCommandLine | undefined;
  private accel: 'kvm' | 'tcg' | undefined;
  private agent: AgentEndpoint | undefined;
  private vsockCid: number | undefined;
  private createdRunDir = false;
  private fsShares: BootFsShare[] = [];
  private virtiofsds: Virtiofsd[] = [];
  private qemu: SupervisedChild | undefined;
  private qmp: QmpClient | undefined;
  private stopReason: string | undefined;
  private stopping: Promise<void> | undefined;
  private readonly portOwner = new Map<string, string>();
  private readonly scsiUsed = new Set<number>();
  private readonly blocks = new Map<string, HotpluggedBlock>();
  /** ids of vCPUs we hot-added, newest last (only those can be removed again). */
  private readonly hotCpus: string[] = [];
  private dimmSeq = 0;

  constructor(
    private readonly config: KataConfig,
    log?: Logger,
    private readonly opts: QemuDriverOptions = {},
  ) {
    this.log = log ?? logger('hypervisor');
    this.exited = new Promise<VmExit>((resolve) => {
      this.resolveExited = resolve;
    });
  }

  // --- checks and preparation --------------------------------------------------------------------------

  async check(): Promise<void> {
    const q = this.config.hypervisor;
    const need = (what: string, p: string, mode = constants.R_OK) => {
      if (p === '') throw new Error(`hypervisor.qemu: ${what} is not set`);
      try {
        accessSync(p, mode);
      } catch {
        throw new Error(`hypervisor.qemu: ${what} ${p} does not exist or is not accessible`);
      }
    };
    need('path (QEMU binary)', q.path, constants.X_OK);
    if (q.valid_hypervisor_paths.length > 0 && !q.valid_hypervisor_paths.includes(q.path)) {
      throw new Error(`hypervisor.qemu: path ${q.path} is not in valid_hypervisor_paths`);
    }
    need('kernel', q.kernel);
    if (q.initrd !== '' && q.image !== '') {
      throw new Error(
        `hypervisor.qemu: initrd (${q.initrd}) and image (${q.image}) are exclusive; set only one`,
      );
    }
    if (q.initrd !== '') need('initrd', q.initrd);
    else if (q.image !== '') need('image', q.image);
    else throw new Error('hypervisor.qemu: neither initrd nor image is set; the guest needs one of them');
    if (q.shared_fs === 'virtio-fs') {
      need('virtio_fs_daemon', q.virtio_fs_daemon, constants.X_OK);
      if (
        q.valid_virtio_fs_daemon_paths.length > 0 &&
        !q.valid_virtio_fs_daemon_paths.includes(q.virtio_fs_daemon)
      ) {
        throw new Error(
          `hypervisor.qemu: virtio_fs_daemon ${q.virtio_fs_daemon} is not in valid_virtio_fs_daemon_paths`,
        );
      }
    }
    if (q.accel === 'kvm') need('KVM device', '/dev/kvm', constants.R_OK | constants.W_OK);
    if (q.agent_channel === 'vsock') chooseAgentChannel('vsock');
  }

  async prepareVm(cfg: VmConfig): Promise<void> {
    if (this.phase !== 'new') throw new Error(`prepareVm(${cfg.sandboxId}): VM is already ${this.phase}`);
    this.log = this.log.child({ sandbox_id: cfg.sandboxId });
    try {
      await this.check();
      await this.prepare(cfg);
    } catch (err) {
      await this.releaseHostResources();
      const why = (err as Error).message;
      this.finishExit({ code: null, signal: null, stderrTail: '', reason: `prepare failed: ${why}` });
      throw new Error(`preparing QEMU VM for sandbox ${cfg.sandboxId}: ${why}`, { cause: err });
    }
    this.phase = 'prepared';
  }

  private async prepare(cfg: VmConfig): Promise<void> {
    const q = this.config.hypervisor;
    if (!Number.isInteger(cfg.vcpus) || cfg.vcpus < 1)
      throw new Error(`vcpus must be >= 1, got ${cfg.vcpus}`);
    if (!Number.isInteger(cfg.memoryMiB) || cfg.memoryMiB < 64) {
      throw new Error(`memoryMiB must be an integer >= 64, got ${cfg.memoryMiB}`);
    }
    // Kata: 0 means "as many as the host has".
    let maxVcpus = cfg.maxVcpus > 0 ? cfg.maxVcpus : os.cpus().length;
    maxVcpus = Math.min(Math.max(maxVcpus, cfg.vcpus), MAX_VCPUS);
    let maxMemoryMiB = cfg.maxMemoryMiB > 0 ? cfg.maxMemoryMiB : Math.floor(os.totalmem() / MIB);
    maxMemoryMiB = Math.max(maxMemoryMiB, cfg.memoryMiB);
    this.vm = { ...cfg, vcpus: cfg.vcpus, maxVcpus, maxMemoryMiB };

    const accel = await resolveAccelerator(this.config, { log: this.log, ...this.opts.accelProbe });
    this.accel = accel.accel;
    this.log.info({ accel: accel.accel, reason: accel.reason, cached: accel.cached }, 'accelerator');

    const paths = runDirPaths(cfg.runDir);
    const channel = chooseAgentChannel(q.agent_channel);
    let agentChannel: AgentChannel;
    if (channel === 'vsock') {
      this.vsockCid = await allocateGuestCid(cfg.sandboxId, this.opts.cidDir);
      this.agent = { kind: 'vsock', cid: this.vsockCid, port: AGENT_VSOCK_PORT };
      agentChannel = { kind: 'vsock', cid: this.vsockCid };
    } else {
      this.agent = { kind: 'virtio-serial', socketPath: paths.agentSocket };
      agentChannel = { kind: 'virtio-serial', socketPath: paths.agentSocket };
    }

    const blocks: BootBlock[] = [];
    for (const dev of cfg.devices) {
      if (dev.kind === 'virtio-fs') {
        if (q.shared_fs === 'none')
          throw new Error(`device ${dev.id}: virtio-fs requested but shared_fs = "none"`);
        const st = await stat(dev.sharedDir).catch(() => undefined);
        if (!dev.socketPath && !st?.isDirectory()) {
          throw new Error(
            `device ${dev.id}: shared dir ${dev.sharedDir} does not exist or is not a directory`,
          );
        }
        const socketPath = dev.socketPath ?? paths.virtiofsdSocket(this.fsShares.length);
        this.fsShares.push({ qemuId: qemuId('fs', dev.id), tag: dev.tag, socketPath });
        if (!dev.socketPath) {
          this.virtiofsds.push(
            new Virtiofsd(
              {
                binary: q.virtio_fs_daemon,
                sharedDir: dev.sharedDir,
                socketPath,
                cache: q.virtio_fs_cache || 'auto',
                extraArgs: q.virtio_fs_extra_args,
                debug: q.enable_debug,
              },
              this.log.child({ component: 'virtiofsd' }),
            ),
          );
        }
      } else if (dev.kind === 'block') {
        const st = await stat(dev.path).catch(() => undefined);
        if (!st) throw new Error(`device ${dev.id}: ${dev.path} does not exist`);
        const b: BootBlock = {
          qemuId: qemuId('blk', dev.id),
          path: dev.path,
          readOnly: dev.readOnly,
          hostDevice: st.isBlockDevice(),
          driver: dev.driver,
        };
        if (dev.driver === 'virtio-scsi') {
          const index = this.allocScsiIndex();
          b.scsi = scsiAddress(index);
          this.blocks.set(dev.id, { qemuId: b.qemuId, nodeName: `drive-${b.qemuId}`, scsiIndex: index });
        } else {
          // Cold-plugged on the root bus: not removable (no port to free), but tracked so ids stay unique.
          this.blocks.set(dev.id, { qemuId: b.qemuId, nodeName: `drive-${b.qemuId}` });
        }
        blocks.push(b);
      } else {
        throw new Error(`device ${dev.id}: ${dev.kind} devices are not supported yet by the QEMU driver`);
      }
    }
    if (q.virtio_fs_cache_size > 0 && this.fsShares.length > 0) {
      this.log.warn(
        { virtio_fs_cache_size: q.virtio_fs_cache_size },
        'virtio-fs DAX window is not supported by this QEMU; ignored',
      );
    }

    const manifest = await readGuestManifest(q.kernel);
    this.cmd = buildQemuCmdline({
      sandboxId: cfg.sandboxId,
      runDir: cfg.runDir,
      qemu: q,
      accel: this.accel,
      vcpus: cfg.vcpus,
      maxVcpus,
      memoryMiB: cfg.memoryMiB,
      maxMemoryMiB,
      agent: agentChannel,
      fsShares: this.fsShares,
      blocks,
      guestKernelParams: manifest?.kernelParams ?? [],
      rootfsType: manifest?.rootfsType ?? (q.rootfs_type || undefined),
      extraKernelParams: cfg.kernelParams ?? [],
      hotplugPorts: this.opts.hotplugPorts ?? DEFAULT_HOTPLUG_PORTS,
    });

    await this.refuseLiveRunDir(cfg.runDir);
    this.createdRunDir = !existsSync(cfg.runDir);
    await mkdir(cfg.runDir, { recursive: true, mode: 0o750 });
  }

  /** A run dir whose pid file names a live QEMU means the sandbox id is in use. */
  private async refuseLiveRunDir(runDir: string): Promise<void> {
    const pidText = await readFile(runDirPaths(runDir).pidFile, 'utf8').catch(() => '');
    const pid = Number(pidText.trim());
    if (!pid) return;
    const cmd = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (cmd.includes(runDir)) throw new Error(`run dir ${runDir} belongs to a running QEMU (pid ${pid})`);
  }

  // --- start / stop ----------------------------------------------------------------------------------------

  async startVm(timeoutMs: number): Promise<void> {
    if (this.phase !== 'prepared' || !this.vm || !this.cmd) {
      throw new Error(`startVm: VM must be prepared first (it is ${this.phase})`);
    }
    this.phase = 'starting';
    const vm = this.vm;
    const deadline = Date.now() + timeoutMs;
    let waitingFor = 'virtiofsd';
    try {
      for (const v of this.virtiofsds) {
        waitingFor = `virtiofsd socket ${v.opts.socketPath}`;
        await v.start(Math.max(deadline - Date.now(), 1));
        this.watchVirtiofsd(v);
      }
      const q = this.config.hypervisor;
      this.log.info({ qemu: q.path, args: this.cmd.args }, 'starting QEMU');
      const child = SupervisedChild.spawn('qemu', q.path, this.cmd.args, {
        log: this.log.child({ component: 'qemu' }),
      });
      this.qemu = child;
      void child.exited.then((e) => this.onQemuExit(e));

      const qmpPath = runDirPaths(vm.runDir).qmpSocket;
      waitingFor = `the QMP socket ${qmpPath}`;
      this.qmp = await this.connectQmp(child, qmpPath, deadline);
      waitingFor = 'QEMU status "running"';
      await this.waitRunning(child, deadline);
      this.phase = 'running';
      this.log.info(
        { pid: child.pid, accel: this.accel, ms: timeoutMs - (deadline - Date.now()) },
        'VM started',
      );
    } catch (err) {
      const e = err as Error;
      const stderr = this.qemu ? formatTail('qemu stderr', this.qemu.stderrTail()) : '';
      const vfsErr = this.virtiofsds.map((v) => formatTail('virtiofsd stderr', v.stderrTail())).join('');
      const consoleTail = formatTail('guest console', await this.consoleTail());
      this.stopReason = `start failed: ${e.message}`;
      await this.stopVm();
      await this.cleanup();
      // The stderr tail is already in messages built from a dead child; add it otherwise.
      const tails = e.message.includes('(tail) ---') ? '' : `${stderr}${vfsErr}`;
      throw new Error(
        `starting QEMU for sandbox ${vm.sandboxId} (waiting for ${waitingFor}): ${e.message}${tails}${consoleTail}`,
        { cause: err },
      );
    }
  }

  private async connectQmp(child: SupervisedChild, qmpPath: string, deadline: number): Promise<QmpClient> {
    let lastError = 'socket not created yet';
    for (;;) {
      if (!child.running) throw await this.deathError(child, 'before its QMP socket accepted a connection');
      if (Date.now() > deadline) throw new Error(`timed out; last attempt: ${lastError}`);
      if (existsSync(qmpPath)) {
        try {
          const qmp = await QmpClient.connect(qmpPath, {
            timeoutMs: Math.max(deadline - Date.now(), 100),
            log: this.log.child({ component: 'qmp' }),
          });
          this.watchQmp(qmp);
          return qmp;
        } catch (err) {
          lastError = (err as Error).message;
        }
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  private async waitRunning(child: SupervisedChild, deadline: number): Promise<void> {
    let status = 'unknown';
    for (;;) {
      if (!child.running) throw await this.deathError(child, 'before reaching status running');
      status = (await this.requireQmp().queryStatus()).status;
      if (status === 'running') return;
      if (Date.now() > deadline) throw new Error(`timed out; QEMU status is "${status}"`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  private async deathError(child: SupervisedChild, when: string): Promise<Error> {
    const e = await child.exited;
    return new Error(`${describeExit('QEMU', e)} ${when}${formatTail('qemu stderr', e.stderrTail)}`);
  }

  private watchQmp(qmp: QmpClient): void {
    for (const ev of ['SHUTDOWN', 'POWERDOWN', 'RESET', 'GUEST_PANICKED']) {
      qmp.on(ev, (e: { data: unknown }) => this.log.info({ event: ev, data: e.data }, 'QMP event'));
    }
  }

  private watchVirtiofsd(v: Virtiofsd): void {
    void v.exited.then(async (e) => {
      if (v.isStopping || this.winding()) return;
      // virtiofsd also exits when QEMU goes away (vhost-user disconnect), often before we see QEMU's exit.
      if (this.qemu && (await waitFor(this.qemu.exited, 500))) return;
      if (v.isStopping || this.winding()) return;
      // Without its shared fs the guest cannot run containers: stop the VM so the runtime notices.
      const why = `virtiofsd for ${v.opts.sharedDir} died: ${describeExit('virtiofsd', e)}`;
      this.log.error({ stderr: e.stderrTail }, why);
      this.stopReason ??= why;
      void this.stopVm().catch((err) =>
        this.log.error({ err: (err as Error).message }, 'stopping VM after virtiofsd died'),
      );
    });
  }

  /** True once the VM is being stopped or is gone (a method, so TS does not narrow `phase` across awaits). */
  private winding(): boolean {
    return this.phase === 'stopping' || this.phase === 'stopped';
  }

  private onQemuExit(e: ChildExit): void {
    const expected = this.phase === 'stopping' || this.phase === 'stopped';
    const reason =
      this.stopReason ??
      (this.phase === 'starting' ? `start failed: ${describeExit('qemu', e)}` : describeExit('qemu', e));
    if (expected) this.log.info({ code: e.code, signal: e.signal }, 'QEMU exited');
    else
      this.log.warn(
        { code: e.code, signal: e.signal, stderr: e.stderrTail },
        `QEMU exited unexpectedly: ${reason}`,
      );
    this.qmp?.close();
    // The VM is gone: its helpers have no reason to live (virtiofsd usually exits on its own).
    for (const v of this.virtiofsds)
      void v.stop().catch((err) => this.log.warn({ err: String(err) }, 'stopping virtiofsd'));
    if (this.phase === 'running') this.phase = 'stopped';
    this.finishExit({ code: e.code, signal: e.signal, stderrTail: e.stderrTail, reason });
  }

  private finishExit(e: VmExit): void {
    if (this.exitResolved) return;
    this.exitResolved = true;
    this.resolveExited(e);
  }

  async stopVm(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    this.stopReason ??= 'stopped by stopVm';
    this.phase = 'stopping';
    const grace = this.opts.stopGraceMs ?? 5000;
    const child = this.qemu;
    if (child?.running) {
      let quitSent = false;
      if (this.qmp && !this.qmp.isClosed) {
        try {
          await this.qmp.quit(Math.min(grace, 2000));
          quitSent = true;
        } catch (err) {
          this.log.warn({ err: (err as Error).message }, 'QMP quit failed; using SIGTERM');
        }
      }
      const e = await child.terminate(grace, quitSent);
      this.log.debug({ code: e.code, signal: e.signal }, 'QEMU stopped');
    }
    this.qmp?.close();
    for (const v of this.virtiofsds) await v.stop();
    if (!child) this.finishExit({ code: null, signal: null, stderrTail: '', reason: this.stopReason });
    else await child.exited;
    this.phase = 'stopped';
  }

  async cleanup(): Promise<void> {
    if (this.phase !== 'new' && this.phase !== 'stopped') await this.stopVm();
    await this.releaseHostResources();
  }

  private async releaseHostResources(): Promise<void> {
    if (this.vm && (this.createdRunDir || this.phase !== 'new')) {
      await rm(this.vm.runDir, { recursive: true, force: true });
    }
    if (this.vsockCid !== undefined) {
      await releaseGuestCid(this.vsockCid, this.opts.cidDir);
      this.vsockCid = undefined;
    }
  }

  private async consoleTail(bytes = 2048): Promise<string> {
    if (!this.vm) return '';
    try {
      const fh = await open(runDirPaths(this.vm.runDir).consoleLog, 'r');
      try {
        const { size } = await fh.stat();
        const start = Math.max(0, size - bytes);
        const buf = Buffer.alloc(size - start);
        await fh.read(buf, 0, buf.length, start);
        return buf.toString('utf8');
      } finally {
        await fh.close();
      }
    } catch {
      return '';
    }
  }

  // --- runtime control ----------------------------------------------------------------------------------

  private requireQmp(): QmpClient {
    if (!this.qmp || this.qmp.isClosed)
      throw new Error(`QEMU for sandbox ${this.vm?.sandboxId} is not running (no QMP)`);
    return this.qmp;
  }

  private requireRunning(what: string): QmpClient {
    if (this.phase !== 'running')
      throw new Error(`${what}: VM of sandbox ${this.vm?.sandboxId} is ${this.phase}, not running`);
    return this.requireQmp();
  }

  /** QEMU's run state as query-status reports it ("running", "paused", ...). */
  async status(): Promise<string> {
    return (await this.requireQmp().queryStatus()).status;
  }

  async pauseVm(): Promise<void> {
    const qmp = this.requireRunning('pauseVm');
    await qmp.stop();
    const { status } = await qmp.queryStatus();
    if (status !== 'paused') throw new Error(`pauseVm: QEMU status is "${status}" after stop`);
  }

  async resumeVm(): Promise<void> {
    const qmp = this.requireRunning('resumeVm');
    await qmp.cont();
    const { status } = await qmp.queryStatus();
    if (status !== 'running') throw new Error(`resumeVm: QEMU status is "${status}" after cont`);
  }

  saveState(): VmState {
    if (!this.vm || !this.agent || !this.accel) throw new Error('saveState: VM was never prepared');
    return {
      hypervisor: this.name,
      sandboxId: this.vm.sandboxId,
      pid: this.qemu?.running ? (this.qemu.pid ?? 0) : 0,
      virtiofsdPid: this.virtiofsds.map((v) => v.pid).find((p) => p !== undefined),
      runDir: this.vm.runDir,
      agent: this.agent,
      accel: this.accel,
    };
  }

  getPids(): number[] {
    const pids: number[] = [];
    if (this.qemu?.running && this.qemu.pid) pids.push(this.qemu.pid);
    for (const v of this.virtiofsds) if (v.pid) pids.push(v.pid);
    return pids;
  }

  capabilities(): HypervisorCapabilities {
    return {
      blockDeviceHotplug: (this.opts.hotplugPorts ?? DEFAULT_HOTPLUG_PORTS) > 0,
      multiQueue: true,
      fsSharing: this.config.hypervisor.shared_fs !== 'none',
      vsock: hostHasVhostVsock(),
    };
  }

  agentEndpoint(): AgentEndpoint {
    if (!this.agent) throw new Error('agentEndpoint: VM was never prepared');
    return this.agent;
  }

  /** The QEMU command line (for logs, `kata-ctl env` and tests). */
  commandLine(): readonly string[] {
    return this.cmd?.args ?? [];
  }

  // --- devices ---------------------------------------------------------------------------------------------

  private allocScsiIndex(): number {
    let i = 0;
    while (this.scsiUsed.has(i)) i++;
    this.scsiUsed.add(i);
    return i;
  }

  async addDevice(dev: Device): Promise<DeviceInfo> {
    const qmp = this.requireRunning(`addDevice(${dev.id})`);
    if (dev.kind === 'virtio-fs') {
      throw new Error(
        `addDevice(${dev.id}): virtio-fs hotplug is not supported; list the share in VmConfig.devices`,
      );
    }
    if (dev.kind === 'network') throw new Error(`addDevice(${dev.id}): network hotplug is not supported yet`);
    if (this.blocks.has(dev.id))
      throw new Error(`addDevice(${dev.id}): a device with this id is already attached`);
    const st = await stat(dev.path).catch(() => undefined);
    if (!st) throw new Error(`addDevice(${dev.id}): ${dev.path} does not exist`);
    const q = this.config.hypervisor;
    const id = qemuId('blk', dev.id);
    const nodeName = `drive-${id}`;
    const entry: HotpluggedBlock = { qemuId: id, nodeName };
    let props: ReturnType<typeof blockDeviceProps>;
    let scsiAddr: string | undefined;
    if (dev.driver === 'virtio-scsi') {
      if (!this.cmd?.args.some((a) => a.startsWith('virtio-scsi-pci,'))) {
        throw new Error(
          `addDevice(${dev.id}): the VM has no virtio-scsi controller (block_device_driver is not virtio-scsi)`,
        );
      }
      entry.scsiIndex = this.allocScsiIndex();
      const a = scsiAddress(entry.scsiIndex);
      scsiAddr = a.addr;
      props = blockDeviceProps(q, { driver: 'virtio-scsi', id, nodeName, scsiId: a.scsiId, lun: a.lun });
    } else {
      const port = this.cmd?.hotplugPortIds.find((p) => !this.portOwner.has(p));
      if (!port) {
        throw new Error(
          `addDevice(${dev.id}): all ${this.cmd?.hotplugPortIds.length ?? 0} hotplug root ports are in use`,
        );
      }
      entry.port = port;
      this.portOwner.set(port, dev.id);
      props = blockDeviceProps(q, { driver: 'virtio-blk-pci', id, nodeName, bus: port });
    }
    const release = () => {
      if (entry.port) this.portOwner.delete(entry.port);
      if (entry.scsiIndex !== undefined) this.scsiUsed.delete(entry.scsiIndex);
    };
    try {
      await qmp.blockdevAdd(
        toJson(
          blockdevOptions(q, {
            nodeName,
            path: dev.path,
            readOnly: dev.readOnly,
            hostDevice: st.isBlockDevice(),
          }),
        ),
      );
      try {
        await qmp.deviceAdd(toJson(props) as Parameters<QmpClient['deviceAdd']>[0]);
      } catch (err) {
        await qmp
          .blockdevDel(nodeName)
          .catch((e) => this.log.warn({ err: String(e) }, 'rollback blockdev-del failed'));
        throw err;
      }
    } catch (err) {
      release();
      throw new Error(`addDevice(${dev.id}) hotplugging ${dev.path}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    this.blocks.set(dev.id, entry);
    const pciPath = entry.port ? pciPathOf(await qmp.queryPci(), id) : undefined;
    this.log.info(
      { device: dev.id, path: dev.path, driver: dev.driver, pciPath, scsiAddr },
      'block device hotplugged',
    );
    return { id: dev.id, pciPath, scsiAddr };
  }

  async removeDevice(dev: Device): Promise<void> {
    const qmp = this.requireRunning(`removeDevice(${dev.id})`);
    if (dev.kind !== 'block')
      throw new Error(`removeDevice(${dev.id}): ${dev.kind} hot-unplug is not supported yet`);
    const b = this.blocks.get(dev.id);
    if (!b) throw new Error(`removeDevice(${dev.id}): no block device with this id is attached`);
    try {
      await qmp.deviceDel(b.qemuId, 10_000);
      await qmp.blockdevDel(b.nodeName);
    } catch (err) {
      throw new Error(`removeDevice(${dev.id}): ${(err as Error).message}`, { cause: err });
    }
    this.blocks.delete(dev.id);
    if (b.port) this.portOwner.delete(b.port);
    if (b.scsiIndex !== undefined) this.scsiUsed.delete(b.scsiIndex);
    this.log.info({ device: dev.id }, 'block device removed');
  }

  async resizeVcpus(vcpus: number): Promise<{ old: number; new: number }> {
    const qmp = this.requireRunning('resizeVcpus');
    const max = this.vm?.maxVcpus ?? 1;
    const target = Math.min(Math.max(Math.trunc(vcpus), 1), max);
    if (target !== vcpus) this.log.warn({ requested: vcpus, target, max }, 'vCPU count clamped');
    const cpus = await qmp.queryHotpluggableCpus();
    const old = cpus.filter((c) => c['qom-path']).reduce((n, c) => n + c['vcpus-count'], 0);
    let now = old;
    if (target > old) {
      const free = cpus
        .filter((c) => !c['qom-path'])
        .sort((a, b) => (a.props['socket-id'] ?? 0) - (b.props['socket-id'] ?? 0));
      for (const c of free) {
        if (now >= target) break;
        const id = `cpu-${c.props['socket-id'] ?? 0}-${c.props['core-id'] ?? 0}-${c.props['thread-id'] ?? 0}`;
        const props: Record<string, JsonValue> = {};
        for (const [k, v] of Object.entries(c.props)) if (v !== undefined) props[k] = v;
        await qmp.deviceAdd({ driver: c.type, id, ...props });
        this.hotCpus.push(id);
        now += c['vcpus-count'];
      }
    } else if (target < old) {
      while (now > target && this.hotCpus.length > 0) {
        const id = this.hotCpus[this.hotCpus.length - 1]!;
        await qmp.deviceDel(id, 10_000);
        this.hotCpus.pop();
        now -= 1;
      }
      if (now > target) this.log.warn({ now, target }, 'only hot-added vCPUs can be removed');
    }
    this.log.info({ old, new: now }, 'vCPUs resized');
    return { old, new: now };
  }

  async resizeMemory(memoryMiB: number): Promise<number> {
    const qmp = this.requireRunning('resizeMemory');
    const vm = this.vm!;
    const q = this.config.hypervisor;
    const dimms = (await qmp.queryMemoryDevices()).filter((d) => d.type === 'dimm');
    const hotMiB = dimms.filter((d) => d.data.hotplugged).reduce((n, d) => n + d.data.size / MIB, 0);
    const current = vm.memoryMiB + hotMiB;
    if (memoryMiB <= current) {
      if (memoryMiB < current) {
        this.log.warn(
          { requested: memoryMiB, current },
          'memory hot-unplug is not supported; keeping the current size',
        );
      }
      return current;
    }
    if (vm.maxMemoryMiB <= vm.memoryMiB || q.memory_slots === 0) {
      this.log.warn(
        { requested: memoryMiB, current },
        'memory hotplug is disabled (no slots/maxmem); keeping the current size',
      );
      return current;
    }
    if (dimms.length >= q.memory_slots)
      throw new Error(`resizeMemory: all ${q.memory_slots} memory slots are in use`);
    let add = Math.ceil((memoryMiB - current) / MEMORY_BLOCK_MIB) * MEMORY_BLOCK_MIB;
    add = Math.min(add, Math.floor((vm.maxMemoryMiB - current) / MEMORY_BLOCK_MIB) * MEMORY_BLOCK_MIB);
    if (add <= 0) {
      this.log.warn({ requested: memoryMiB, current, max: vm.maxMemoryMiB }, 'memory already at maxmem');
      return current;
    }
    const seq = this.dimmSeq++;
    const memId = `mem-hp${seq}`;
    const backend: { 'qom-type': string; id: string } & Record<string, JsonValue> =
      q.file_mem_backend !== ''
        ? {
            'qom-type': 'memory-backend-file',
            id: memId,
            size: add * MIB,
            'mem-path': q.file_mem_backend,
            share: true,
          }
        : this.fsShares.length > 0
          ? { 'qom-type': 'memory-backend-memfd', id: memId, size: add * MIB, share: true }
          : { 'qom-type': 'memory-backend-ram', id: memId, size: add * MIB };
    try {
      await qmp.objectAdd(backend);
      try {
        await qmp.deviceAdd({ driver: 'pc-dimm', id: `dimm-hp${seq}`, memdev: memId });
      } catch (err) {
        await qmp
          .objectDel(memId)
          .catch((e) => this.log.warn({ err: String(e) }, 'rollback object-del failed'));
        throw err;
      }
    } catch (err) {
      throw new Error(`resizeMemory to ${memoryMiB} MiB (adding ${add} MiB): ${(err as Error).message}`, {
        cause: err,
      });
    }
    this.log.info({ old: current, new: current + add }, 'memory hotplugged');
    return current + add;
  }
}
