// The QEMU driver: one instance per sandbox. QEMU runs as our child (no -daemonize) so its death is noticed
// at once; QMP drives it after boot; virtiofsd is started before QEMU and stopped after it. The jobs it
// coordinates live beside it: config-check.ts (rules), boot-plan.ts (devices at boot), process.ts (QEMU from
// spawn to running), hotplug.ts (devices, vCPUs, memory at run time).
import { mkdir, rm } from 'node:fs/promises';
import { pathExists } from '../../common/files.js';
import type { Logger } from '../../common/log.js';
import { logger } from '../../common/log.js';
import type { KataConfig } from '../../config/types.js';
import { ACCEL_WAIT_MS, type ProbeOptions, resolveAccelerator } from '../accel.js';
import { AdoptedProcess } from '../adopted.js';
import type {
  AgentEndpoint,
  Device,
  DeviceInfo,
  Hypervisor,
  HypervisorCapabilities,
  NicSink,
  VmConfig,
  VmExit,
  VmProcess,
  VmState,
} from '../hypervisor.js';
import { type ChildExit, SupervisedChild, type WatchedProcess, describeExit } from '../supervisor.js';
import { Virtiofsd } from '../virtiofsd.js';
import { hostHasVhostVsock, releaseGuestCid, reserveAgentEndpoint } from '../vsock.js';
import { type QemuCommandLine, runDirPaths } from './cmdline.js';
import { assertQemuConfig } from './config-check.js';
import { QemuHotplug } from './hotplug.js';
import { planLaunch } from './launch-plan.js';
import { ColdPlugNics, type FdSender, QmpNicHotplug } from './netdev.js';
import {
  connectQmp,
  logQmpEvents,
  refuseLiveRunDir,
  setRunState,
  spawnedProcess,
  startFailure,
  startVirtiofsds,
  stopQemu,
  waitRunning,
} from './process.js';
import type { QmpClient } from './qmp.js';
import { vmSize } from './sizing.js';
import * as templating from './template-use.js';

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

/** `parked`: left paused in the VM cache (keepInCache); its QEMU is no longer this driver's. */
type Phase = 'new' | 'prepared' | 'starting' | 'running' | 'stopping' | 'stopped' | 'parked';

const DEFAULT_HOTPLUG_PORTS = 8;

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
  private sharesFs = false;
  private virtiofsds: Virtiofsd[] = [];
  private qemu: WatchedProcess | undefined;
  private qmp: QmpClient | undefined;
  private sendFds: FdSender | undefined;
  /** NICs given before boot: on QEMU's command line, their tap fds passed as QEMU's fd 3, 4, ... */
  private readonly coldNics = new ColdPlugNics();
  private nicHotplug: QmpNicHotplug | undefined;
  private stopReason: string | undefined;
  private stopping: Promise<void> | undefined;
  /** Every process spawned for this VM (pid + start time), for the persisted state. */
  private readonly spawned: VmProcess[] = [];
  private readonly hotplug: QemuHotplug;
  /** Set when this VM is a template or a clone of one (template-use.ts). */
  private templateUse: templating.TemplateUse | undefined;

  constructor(
    private readonly config: KataConfig,
    log?: Logger,
    private readonly opts: QemuDriverOptions = {},
  ) {
    this.log = log ?? logger('hypervisor');
    this.hotplug = new QemuHotplug(config.hypervisor, () => this.log);
    this.exited = new Promise<VmExit>((resolve) => {
      this.resolveExited = resolve;
    });
  }

  // --- checks and preparation --------------------------------------------------------------------------

  async check(): Promise<void> {
    assertQemuConfig(this.config);
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
    const { maxVcpus, maxMemoryMiB } = vmSize(cfg);
    this.vm = { ...cfg, vcpus: cfg.vcpus, maxVcpus, maxMemoryMiB };

    const probe = { log: this.log, waitMs: ACCEL_WAIT_MS, ...this.opts.accelProbe };
    const accel = await resolveAccelerator(this.config, probe);
    this.accel = accel.accel;
    this.log.info({ accel: accel.accel, reason: accel.reason, cached: accel.cached }, 'accelerator');

    ({ agent: this.agent, cid: this.vsockCid } = await reserveAgentEndpoint(
      q.agent_channel,
      cfg.sandboxId,
      runDirPaths(cfg.runDir).agentSocket,
      this.opts.cidDir,
    ));
    const launch = await planLaunch({
      q,
      cfg,
      accel: this.accel,
      agent: this.agent,
      maxVcpus,
      maxMemoryMiB,
      hotplugPorts: this.opts.hotplugPorts ?? DEFAULT_HOTPLUG_PORTS,
      hotplug: this.hotplug,
      log: this.log,
    });
    this.cmd = launch.cmd;
    this.sharesFs = launch.sharesFs;
    this.templateUse = launch.templateUse;
    this.virtiofsds = launch.virtiofsds.map(
      (o) => new Virtiofsd(o, this.log.child({ component: 'virtiofsd' })),
    );

    await refuseLiveRunDir(cfg.runDir);
    // Persisted before the run dir exists, so cleanup after a crash knows to remove it.
    await this.persist();
    const taken =
      this.templateUse && (await templating.takeFromCache(this.templateUse, cfg.runDir, this.log));
    if (taken) await this.watchQemu(taken.qemu); // the run dir is its slot now: QEMU's pid file names it too
    this.createdRunDir = taken !== undefined || !(await pathExists(cfg.runDir));
    await mkdir(cfg.runDir, { recursive: true, mode: 0o750 });
  }

  /** Hands the current state to VmConfig.persistState (the runtime's persisted sandbox state). */
  private async persist(): Promise<void> {
    const save = this.vm?.persistState;
    if (save) await save(this.saveState());
  }

  /** QEMU is ours from here: its exit is handled and it is recorded in the persisted state. */
  private async watchQemu(child: WatchedProcess): Promise<void> {
    this.qemu = child;
    void child.exited.then((e) => this.onQemuExit(e));
    await this.recordSpawn('vmm', child.pid);
  }

  /** Records a process we just spawned, before waiting on it. */
  private async recordSpawn(role: VmProcess['role'], pid: number | undefined): Promise<void> {
    const p = await spawnedProcess(role, pid);
    if (!p) return; // gone already: its exit is being handled
    this.spawned.push(p);
    await this.persist();
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
      await startVirtiofsds(this.virtiofsds, deadline, {
        record: (pid) => this.recordSpawn('virtiofsd', pid),
        qemu: () => this.qemu,
        winding: () => this.winding(),
        onDeath: (why) => {
          this.stopReason ??= why;
          void this.stopVm().catch((err) =>
            this.log.error({ err: String(err) }, 'stopping VM after virtiofsd died'),
          );
        },
        waiting: (what) => {
          waitingFor = what;
        },
        log: this.log,
      });
      const clone = this.templateUse?.role !== 'template' ? this.templateUse : undefined;
      waitingFor = "a copy of the template's RAM";
      if (clone) await templating.beforeCloneSpawn(clone, this.coldNics, deadline);
      if (!this.qemu) {
        waitingFor = 'QEMU to be spawned and its state persisted';
        const o = { runDir: vm.runDir, nics: this.coldNics, log: this.log };
        await this.watchQemu(await templating.spawnVmm(clone, this.config.hypervisor.path, this.cmd.args, o));
      }
      const child = this.qemu as WatchedProcess;

      const qmpPath = runDirPaths(vm.runDir).qmpSocket;
      waitingFor = `the QMP socket ${qmpPath}`;
      ({ qmp: this.qmp, sendFds: this.sendFds } = await connectQmp(child, qmpPath, deadline, this.log));
      logQmpEvents(this.qmp, this.log);
      // An adopted QEMU cannot be waited for: a closed QMP socket is the first sign of its end.
      if (child instanceof AdoptedProcess) this.qmp.on('close', () => void child.check());
      waitingFor = 'the template state to load';
      if (clone) await templating.restoreClone(clone, this.qmp, this.sendFds, deadline);
      waitingFor = 'QEMU status "running"';
      await waitRunning(child, this.qmp, deadline);
      waitingFor = 'the shares and NICs hotplugged into the restored VM';
      if (clone) await templating.plugIntoClone(clone, { ...this.qmpNics(), hotplug: this.hotplug });
      this.phase = 'running';
      const ms = timeoutMs - (deadline - Date.now());
      this.log.info({ pid: child.pid, accel: this.accel, from: this.origin(), ms }, 'VM started');
    } catch (err) {
      const what = `starting QEMU for sandbox ${vm.sandboxId} (waiting for ${waitingFor})`;
      const failure = await startFailure(what, err, { qemu: this.qemu, virtiofsds: this.virtiofsds, vm });
      this.stopReason = `start failed: ${(err as Error).message}`;
      await this.stopVm();
      await this.cleanup();
      throw failure;
    }
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
    if (this.phase === 'parked') return;
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    this.stopReason ??= 'stopped by stopVm';
    this.phase = 'stopping';
    const grace = this.opts.stopGraceMs ?? 5000;
    const child = this.qemu;
    if (child?.running) await stopQemu(child, this.qmp, grace, this.log);
    this.qmp?.close();
    for (const v of this.virtiofsds) await v.stop();
    if (!child) this.finishExit({ code: null, signal: null, stderrTail: '', reason: this.stopReason });
    else await child.exited;
    this.phase = 'stopped';
  }

  async cleanup(): Promise<void> {
    if (this.phase === 'parked') return;
    if (this.phase !== 'new' && this.phase !== 'stopped') await this.stopVm();
    await this.releaseHostResources();
  }

  private async releaseHostResources(): Promise<void> {
    if (this.phase === 'new' && this.qemu?.running) await this.qemu.terminate(0); // taken from the cache
    this.coldNics.release(); // a VM that never started leaves the tap fds to us
    templating.releaseCloneNics(this.templateUse);
    if (this.vm && (this.createdRunDir || this.phase !== 'new')) {
      await rm(this.vm.runDir, { recursive: true, force: true });
    }
    if (this.vsockCid !== undefined) {
      await releaseGuestCid(this.vsockCid, this.opts.cidDir);
      this.vsockCid = undefined;
    }
  }

  // --- runtime control ----------------------------------------------------------------------------------

  /** QMP and the NIC hotplug sink on it; throws when QMP is not connected. */
  private qmpNics(): { qmp: QmpClient; sink: QmpNicHotplug } {
    const qmp = this.requireQmp();
    if (!this.sendFds) throw new Error(`QEMU for sandbox ${this.vm?.sandboxId}: QMP cannot pass fds`);
    this.nicHotplug ??= new QmpNicHotplug(qmp, this.sendFds, this.hotplug.nicPorts(), this.log);
    return { qmp, sink: this.nicHotplug };
  }

  nicSink(): NicSink {
    if (this.phase === 'prepared') return this.coldNics;
    if (this.phase === 'running') return this.qmpNics().sink;
    throw new Error(`nicSink: NICs can be plugged into a prepared or running VM, not a ${this.phase} one`);
  }

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
    await setRunState(this.requireRunning('pauseVm'), 'paused');
  }

  async resumeVm(): Promise<void> {
    await setRunState(this.requireRunning('resumeVm'), 'running');
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
      processes: this.spawned.map((p) => ({ ...p })),
      vsockCid: this.vsockCid,
      attached: this.hotplug.attached(),
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

  origin(): 'boot' | 'template' | 'cache' {
    if (this.templateUse?.taken) return 'cache';
    return this.templateUse && this.templateUse.role !== 'template' ? 'template' : 'boot';
  }

  async saveTemplate(timeoutMs: number): Promise<void> {
    const { qmp } = this.qmpNics();
    if (!this.vm || !this.sendFds) throw new Error('saveTemplate: the VM is not running');
    await templating.saveAsTemplate(this.templateUse, this.vm, qmp, this.sendFds, timeoutMs);
    this.log.info({ template: this.templateUse?.files.dir }, 'VM template saved');
  }

  async keepInCache(): Promise<void> {
    const qemu = this.qemu;
    if (this.phase !== 'running' || !this.vm || !(qemu instanceof SupervisedChild))
      throw new Error(`keepInCache: the VM is ${this.phase}, not restored and paused`);
    this.phase = 'parked';
    const vmm = this.spawned.find((p) => p.role === 'vmm');
    await templating.parkInCache(this.templateUse, { ...this.vm, qemu, vmm, qmp: this.qmp, log: this.log });
  }

  agentEndpoint(): AgentEndpoint {
    if (!this.agent) throw new Error('agentEndpoint: VM was never prepared');
    return this.agent;
  }

  /** The QEMU command line (for logs, `kata-ctl env` and tests). */
  commandLine(): readonly string[] {
    return this.cmd?.args ?? [];
  }

  // --- devices, vCPUs, memory (hotplug.ts) ---------------------------------------------------------------

  async addDevice(dev: Device): Promise<DeviceInfo> {
    const info = await this.hotplug.addDevice(this.requireRunning(`addDevice(${dev.id})`), dev);
    await this.persist();
    return info;
  }

  async removeDevice(dev: Device): Promise<void> {
    await this.hotplug.removeDevice(this.requireRunning(`removeDevice(${dev.id})`), dev);
    await this.persist();
  }

  async resizeVcpus(vcpus: number): Promise<{ old: number; new: number }> {
    return this.hotplug.resizeVcpus(this.requireRunning('resizeVcpus'), vcpus);
  }

  async resizeMemory(memoryMiB: number): Promise<number> {
    return this.hotplug.resizeMemory(this.requireRunning('resizeMemory'), memoryMiB);
  }
}
