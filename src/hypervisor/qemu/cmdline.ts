// The QEMU command line, built from the Kata config and the VM's shape. Pure: every host fact (accelerator,
// guest cid, which paths are block devices) is decided by the caller, so this is easy to test.
import path from 'node:path';
import type { QemuConfig } from '../../config/types.js';
import { AGENT_SERIAL_PORT_NAME } from '../../contract/index.js';
import { SCSI_CONTROLLER_ID, blockDeviceProps, blockdevOptions, deviceArg, flattenOpts } from './block.js';

/** Files QEMU and virtiofsd create in the per-sandbox run dir (/run/vc/vm/<sandbox-id>/). */
export interface RunDirPaths {
  qmpSocket: string;
  agentSocket: string;
  consoleLog: string;
  pidFile: string;
  virtiofsdSocket(index: number): string;
}

export function runDirPaths(runDir: string): RunDirPaths {
  return {
    qmpSocket: path.join(runDir, 'qmp.sock'),
    agentSocket: path.join(runDir, 'agent.sock'),
    consoleLog: path.join(runDir, 'console.log'),
    pidFile: path.join(runDir, 'pid'),
    virtiofsdSocket: (i) => path.join(runDir, i === 0 ? 'vhost-fs.sock' : `vhost-fs-${i}.sock`),
  };
}

export type AgentChannel = { kind: 'virtio-serial'; socketPath: string } | { kind: 'vsock'; cid: number };

export interface BootFsShare {
  qemuId: string;
  tag: string;
  socketPath: string;
}

export interface BootBlock {
  qemuId: string;
  path: string;
  readOnly: boolean;
  /** true for a host block device (driver host_device), false for a regular file. */
  hostDevice: boolean;
  driver: 'virtio-blk-pci' | 'virtio-scsi';
  /** SCSI (scsi-id, lun) for virtio-scsi disks. */
  scsi?: { scsiId: number; lun: number };
}

export interface QemuLaunchSpec {
  sandboxId: string;
  runDir: string;
  qemu: QemuConfig;
  accel: 'kvm' | 'tcg';
  vcpus: number;
  maxVcpus: number;
  memoryMiB: number;
  /** 0 or <= memoryMiB disables memory hotplug (no slots/maxmem). */
  maxMemoryMiB: number;
  agent: AgentChannel;
  fsShares: BootFsShare[];
  blocks: BootBlock[];
  /** Guest kernel params listed in the guest image's manifest.json. */
  guestKernelParams: string[];
  /** Filesystem of the rootfs image (from the manifest), when booting from `image`. */
  rootfsType?: string;
  /** Extra params from the runtime (agent settings). */
  extraKernelParams: string[];
  /** Number of empty pcie-root-ports kept for hotplug (block now, network later). */
  hotplugPorts: number;
  /**
   * VM templating (template.ts): guest RAM is this file, mapped shared (the template's RAM file, or a clone's
   * copy of it), and the VM gets a vmgenid device so a restored guest's kernel reseeds its RNG.
   */
  templateRam?: string;
  /** A clone: wait for the device state on QMP `migrate-incoming` instead of booting. */
  incoming?: boolean;
}

export interface QemuCommandLine {
  args: string[];
  kernelParams: string;
  /** ids of the empty pcie-root-ports, in order, for hotplug. */
  hotplugPortIds: string[];
  /** ids of the pci-bridges (config default_bridges). */
  bridgeIds: string[];
}

/** Kata's queue size for vhost-user-fs. */
export const VIRTIOFS_QUEUE_SIZE = 1024;
/** pci-bridges sit at fixed slots from 2 on pcie.0, as in Kata; they come first so auto-placement skips them. */
const BRIDGE_FIRST_SLOT = 2;

/** Doubles commas so a value can sit inside a QEMU option list (QEMU's own escaping). */
export function qemuEscape(value: string): string {
  return value.replaceAll(',', ',,');
}

/** Splits a kernel command line on spaces, keeping double-quoted parts together. */
export function splitKernelParams(s: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (const c of s) {
    if (c === '"') quoted = !quoted;
    if (c === ' ' && !quoted) {
      if (cur.trim() !== '') out.push(cur.trim());
      cur = '';
      continue;
    }
    cur += c;
  }
  if (cur.trim() !== '') out.push(cur.trim());
  return out;
}

/** QEMU ids: a letter first, then letters, digits, '-', '.', '_' (QEMU rejects anything else). */
export function qemuId(prefix: string, id: string): string {
  const clean = id.replace(/[^A-Za-z0-9._-]/g, '_');
  return `${prefix}-${clean}`.slice(0, 100);
}

/**
 * Kata's x86 QEMU guest params (virtcontainers/qemu_amd64.go): skip probes and self-tests a VM does not need
 * (PIT timer check, i8042 keyboard/mouse, crypto self-tests, PCI buses past 0) and trust the TSC. Measured under
 * TCG (bench/guest-boot.ts, interleaved boots): kernel start to /init ~3.5 s -> ~2.7-3.3 s.
 */
export const X86_GUEST_PARAMS: readonly string[] = [
  'tsc=reliable',
  'no_timer_check',
  'rcupdate.rcu_expedited=1',
  'i8042.direct=1',
  'i8042.dumbkbd=1',
  'i8042.nopnp=1',
  'i8042.noaux=1',
  'noreplace-smp',
  'reboot=k',
  'cryptomgr.notests',
  'net.ifnames=0',
  'pci=lastbus=0',
];

export function buildKernelParams(spec: QemuLaunchSpec): string {
  const p: string[] = ['console=ttyS0', 'reboot=k', 'panic=1', ...X86_GUEST_PARAMS];
  p.push(spec.qemu.enable_debug ? 'debug' : 'quiet');
  const rest = [
    ...spec.guestKernelParams,
    ...splitKernelParams(spec.qemu.kernel_params),
    ...spec.extraKernelParams,
  ];
  if (spec.qemu.image !== '' && !rest.some((x) => x.startsWith('root='))) {
    // The image is the first virtio-blk disk; the guest mounts it read-only as /.
    p.push('root=/dev/vda', 'ro');
    if (spec.rootfsType) p.push(`rootfstype=${spec.rootfsType}`);
  }
  p.push(...rest);
  // The image's manifest repeats some of ours (console, panic): an exact repeat says nothing new.
  return [...new Set(p)].join(' ');
}

export function buildQemuCmdline(spec: QemuLaunchSpec): QemuCommandLine {
  const q = spec.qemu;
  if (spec.runDir.includes(',')) throw new Error(`run dir ${spec.runDir} must not contain a comma`);
  if (q.initrd !== '' && q.image !== '') {
    throw new Error(
      `hypervisor.qemu: initrd (${q.initrd}) and image (${q.image}) are exclusive; set only one`,
    );
  }
  if (q.initrd === '' && q.image === '') {
    throw new Error('hypervisor.qemu: neither initrd nor image is set; the guest needs one of them');
  }
  const paths = runDirPaths(spec.runDir);
  const args: string[] = [];
  const add = (...a: string[]) => args.push(...a);

  add('-name', `sandbox-${spec.sandboxId}`);
  const machine = q.machine_type || 'q35';
  add('-machine', q.machine_accelerators ? `${machine},${q.machine_accelerators}` : machine);
  add('-accel', spec.accel);
  const cpuModel = spec.accel === 'kvm' ? 'host' : 'max';
  add('-cpu', q.cpu_features ? `${cpuModel},${q.cpu_features}` : cpuModel);
  // One core per socket so vCPUs can be hot-added one socket at a time (as Kata does).
  add('-smp', `${spec.vcpus},cores=1,threads=1,sockets=${spec.maxVcpus},maxcpus=${spec.maxVcpus}`);

  const hotplugMemory = spec.maxMemoryMiB > spec.memoryMiB && q.memory_slots > 0;
  add(
    '-m',
    hotplugMemory
      ? `${spec.memoryMiB}M,slots=${q.memory_slots},maxmem=${spec.maxMemoryMiB}M`
      : `${spec.memoryMiB}M`,
  );
  // vhost-user-fs needs guest RAM that virtiofsd can map: a shared memfd (or the configured file backend).
  // A template's RAM must be a named file: the clones map it instead of receiving it through migration.
  if (spec.templateRam !== undefined) {
    add(
      '-object',
      `memory-backend-file,id=mem,size=${spec.memoryMiB}M,mem-path=${qemuEscape(spec.templateRam)},share=on`,
      '-numa',
      'node,memdev=mem',
    );
  } else if (spec.fsShares.length > 0 || q.file_mem_backend !== '') {
    const backend =
      q.file_mem_backend !== ''
        ? `memory-backend-file,id=mem,size=${spec.memoryMiB}M,mem-path=${qemuEscape(q.file_mem_backend)},share=on`
        : `memory-backend-memfd,id=mem,size=${spec.memoryMiB}M,share=on`;
    add('-object', backend, '-numa', 'node,memdev=mem');
  }

  add('-sandbox', 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny');
  add('-nodefaults', '-nographic', '-no-user-config', '-display', 'none', '-no-reboot');
  add('-rtc', 'base=utc,driftfix=slew,clock=host');
  add('-qmp', `unix:${paths.qmpSocket},server=on,wait=off`);
  add('-pidfile', paths.pidFile);
  add('-chardev', `file,id=console,path=${paths.consoleLog}`, '-serial', 'chardev:console');

  // Bridges first: they take fixed slots, everything after is placed automatically.
  const rootBus = machine.startsWith('q35') || machine === 'virt' ? 'pcie.0' : 'pci.0';
  const bridgeIds: string[] = [];
  for (let i = 0; i < q.default_bridges; i++) {
    const id = `pci-bridge-${i}`;
    bridgeIds.push(id);
    add(
      '-device',
      `pci-bridge,bus=${rootBus},id=${id},chassis_nr=${i + 1},shpc=off,addr=${BRIDGE_FIRST_SLOT + i},` +
        'io-reserve=4k,mem-reserve=1m,pref64-reserve=1m',
    );
  }
  const hotplugPortIds: string[] = [];
  if (rootBus === 'pcie.0') {
    for (let i = 0; i < spec.hotplugPorts; i++) {
      const id = `rp${i}`;
      hotplugPortIds.push(id);
      // Virtio devices need no I/O ports; not reserving any keeps the 64 KiB I/O space free.
      add(
        '-device',
        `pcie-root-port,id=${id},bus=pcie.0,chassis=${i + 1},slot=${i + 1},port=${i + 1},io-reserve=0`,
      );
    }
  }

  // A new generation id at each restore makes the guest kernel reseed its CRNG (Linux's vmgenid driver).
  if (spec.templateRam !== undefined) add('-device', 'vmgenid,guid=auto');
  const rng = q.entropy_source || '/dev/urandom';
  add('-object', `rng-random,id=rng0,filename=${qemuEscape(rng)}`, '-device', 'virtio-rng-pci,rng=rng0');

  if (spec.agent.kind === 'virtio-serial') {
    add('-device', 'virtio-serial-pci,id=serial0');
    add('-chardev', `socket,id=charch0,path=${spec.agent.socketPath},server=on,wait=off`);
    add('-device', `virtserialport,bus=serial0.0,chardev=charch0,id=channel0,name=${AGENT_SERIAL_PORT_NAME}`);
  } else {
    add('-device', `vhost-vsock-pci,id=vsock-${spec.agent.cid},guest-cid=${spec.agent.cid}`);
  }

  spec.fsShares.forEach((fs, i) => {
    add('-chardev', `socket,id=char-vfs${i},path=${fs.socketPath}`);
    add(
      '-device',
      `vhost-user-fs-pci,id=${fs.qemuId},chardev=char-vfs${i},tag=${qemuEscape(fs.tag)},queue-size=${VIRTIOFS_QUEUE_SIZE}`,
    );
  });

  if (q.block_device_driver === 'virtio-scsi' || spec.blocks.some((b) => b.driver === 'virtio-scsi')) {
    let scsi = `virtio-scsi-pci,id=${SCSI_CONTROLLER_ID}`;
    if (q.enable_iothreads) {
      add('-object', 'iothread,id=scsi-io-thread');
      scsi += ',iothread=scsi-io-thread';
    }
    add('-device', scsi);
  }
  if (q.image !== '') {
    // The guest image: always aio=threads; share-rw because several sandboxes boot from the same file.
    const image = blockdevOptions(q, {
      nodeName: 'drive-image',
      path: q.image,
      readOnly: true,
      hostDevice: false,
      aio: 'threads',
    });
    add('-blockdev', flattenOpts(image).join(','));
    add('-device', 'virtio-blk-pci,id=image,drive=drive-image,config-wce=off,share-rw=on,serial=image');
  }
  for (const b of spec.blocks) {
    const nodeName = `drive-${b.qemuId}`;
    add('-blockdev', flattenOpts(blockdevOptions(q, { nodeName, ...b })).join(','));
    const props =
      b.driver === 'virtio-scsi'
        ? blockDeviceProps(q, {
            driver: 'virtio-scsi',
            id: b.qemuId,
            nodeName,
            ...(b.scsi ?? { scsiId: 0, lun: 0 }),
          })
        : blockDeviceProps(q, { driver: 'virtio-blk-pci', id: b.qemuId, nodeName });
    add('-device', deviceArg(props));
  }

  const kernelParams = buildKernelParams(spec);
  add('-kernel', q.kernel);
  if (q.initrd !== '') add('-initrd', q.initrd);
  add('-append', kernelParams);
  if (spec.incoming) add('-incoming', 'defer');
  return { args, kernelParams, hotplugPortIds, bridgeIds };
}
