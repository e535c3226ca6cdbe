// The hypervisor interface (Kata runtime-rs's `Hypervisor` trait, in TypeScript). One folder per VMM.

/** Where and how the host reaches the guest agent. */
export type AgentEndpoint =
  | { kind: 'virtio-serial' /** host unix socket of QEMU's chardev */; socketPath: string }
  | { kind: 'vsock'; cid: number; port: number };

export type Device =
  /**
   * A host directory shared with the guest through virtio-fs. The hypervisor runs virtiofsd on `sharedDir`
   * (socket in the run dir) unless `socketPath` names a daemon someone else already runs.
   */
  | { kind: 'virtio-fs'; id: string; tag: string; sharedDir: string; socketPath?: string }
  | { kind: 'block'; id: string; path: string; readOnly: boolean; driver: 'virtio-blk-pci' | 'virtio-scsi' }
  | { kind: 'network'; id: string; tapName: string; mac: string; queues?: number };

/** Result of adding a device: where the guest will find it. */
export interface DeviceInfo {
  id: string;
  /** PCI path as Kata writes it ("02/01"), when the device is on PCI (virtio-blk). */
  pciPath?: string;
  /** SCSI address "<scsi-id>:<lun>" on the virtio-scsi controller (Kata's format), for virtio-scsi disks. */
  scsiAddr?: string;
}

export interface VmConfig {
  sandboxId: string;
  /** Per-sandbox runtime dir on the host (sockets, console log, pid files). */
  runDir: string;
  vcpus: number;
  maxVcpus: number;
  memoryMiB: number;
  maxMemoryMiB: number;
  /** Devices present at boot (virtio-fs share, rootfs image, ...). */
  devices: Device[];
  /** Extra guest kernel parameters from the runtime (agent.log=debug, agent.debug_console, ...). */
  kernelParams?: string[];
  /**
   * Persists the VM's state; awaited before the VM's host footprint grows (see VmState). A failure fails the
   * prepare/start/hotplug that needed it.
   */
  persistState?: (state: VmState) => Promise<void>;
  /**
   * VM templating (config [factory] enable_template): `template` boots a VM to be saved as the template at dir
   * (no devices); `clone` restores from it when it fits this VM (same shape, not stale) and boots otherwise,
   * saying why in the log.
   */
  template?: {
    dir: string;
    /** `cached`: a clone to be parked in the VM cache (keepInCache), never booted instead. */
    role: 'template' | 'clone' | 'cached';
    /** A clone first takes a parked VM of its shape from this VM cache (config [factory] vm_cache_number). */
    cacheDir?: string;
  };
}

export interface HypervisorCapabilities {
  blockDeviceHotplug: boolean;
  multiQueue: boolean;
  fsSharing: boolean;
  vsock: boolean;
}

/** A host process of the VM, identified by pid and start time (see proc.ts) so a recycled pid is never killed. */
export interface VmProcess {
  role: 'vmm' | 'virtiofsd';
  pid: number;
  startTime: number;
}

/** A device attached after boot, recorded so a dead VM's host side (e.g. its tap) can be undone. */
export type AttachedDevice =
  | { kind: 'block'; id: string; qemuId: string }
  | { kind: 'network'; id: string; qemuId: string; tapName: string };

/**
 * What a VM holds on the host. The driver hands it to VmConfig.persistState BEFORE each new host resource is
 * created (run dir, vsock CID) and right after each process is spawned, so `cleanupDeadVm` can undo everything
 * after a crash without the driver object.
 */
export interface VmState {
  hypervisor: string;
  sandboxId: string;
  /** QEMU's pid (0 when it is not running). */
  pid: number;
  virtiofsdPid?: number;
  runDir: string;
  agent: AgentEndpoint;
  accel: 'kvm' | 'tcg';
  /** Every process spawned for the VM, live or not. */
  processes?: VmProcess[];
  /** The vsock guest CID reserved in the host registry (released by cleanup). */
  vsockCid?: number;
  /** Devices hot-plugged since boot (network devices will carry their tap here). */
  attached?: AttachedDevice[];
}

/** How and why the VMM went away. */
export interface VmExit {
  code: number | null;
  signal: string | null;
  stderrTail: string;
  /** One line: "stopped by stopVm", "qemu exited with code 1", "virtiofsd died: ...". */
  reason: string;
}

export interface Hypervisor {
  readonly name: string;
  /** Validates config and host (binary, kernel, image exist; accelerator usable). Throws a named error. */
  check(): Promise<void>;
  /** Builds everything needed to launch (command line, dirs, virtiofsd) without starting the guest. */
  prepareVm(cfg: VmConfig): Promise<void>;
  /** Starts the VM; resolves when the VMM is running (not when the agent is up). */
  startVm(timeoutMs: number): Promise<void>;
  /** Stops the VM and every helper process; idempotent. */
  stopVm(): Promise<void>;
  pauseVm(): Promise<void>;
  resumeVm(): Promise<void>;
  saveState(): VmState;
  addDevice(dev: Device): Promise<DeviceInfo>;
  removeDevice(dev: Device): Promise<void>;
  resizeVcpus(vcpus: number): Promise<{ old: number; new: number }>;
  resizeMemory(memoryMiB: number): Promise<number>;
  /** Host pids of the VMM and its helpers (QEMU, virtiofsd). */
  getPids(): number[];
  capabilities(): HypervisorCapabilities;
  /**
   * Where a NIC is plugged: before startVm a cold-plug collector (the NICs are on QEMU's command line), once
   * running QMP hotplug. Throws in other phases.
   */
  nicSink(): NicSink;
  /** The endpoint the agent client dials. */
  agentEndpoint(): AgentEndpoint;
  /**
   * Where the VM came from: booted, restored from a template, or taken from the VM cache (restored from a
   * template earlier). In the last two its guest's clock and entropy are the template's until renewed.
   */
  origin(): 'boot' | 'template' | 'cache';
  /** Saves a running VM prepared with template role `template` as the template (the VM stays paused). */
  saveTemplate(timeoutMs: number): Promise<void>;
  /**
   * Parks a VM prepared with template role `cached` (restored; paused by the caller) in its cache slot; QEMU then
   * outlives this driver, for a sandbox to take. The driver is done with it: stopVm and cleanup do nothing.
   */
  keepInCache(): Promise<void>;
  /** Removes what prepare/start left on the host (run dir, sockets); call after stopVm. */
  cleanup(): Promise<void>;
  /** Resolves (with a reason) when the VMM exits for any reason, including a failed start; never rejects. */
  readonly exited: Promise<VmExit>;
}

/** What a hypervisor needs to give the VM one virtio-net NIC. The sink owns the fds it is given. */
export interface NicSpec {
  /** QEMU id stem, unique in the VM ("net0") */
  id: string;
  mac: string;
  queues: number;
  tapFds: number[];
  /** [] for a plain tap */
  vhostFds: number[];
}

/** The hypervisor side an endpoint plugs into: cold-plug collector before boot, or QMP hotplug after. */
export interface NicSink {
  /** Takes ownership of spec's fds: closes them when QEMU holds its copies, or on failure. */
  attachNic(spec: NicSpec): Promise<void>;
  detachNic(id: string): Promise<void>;
}
