// What a running QEMU VM gains and loses over QMP: block devices (virtio-blk on a free pcie-root-port, or a
// virtio-scsi disk), vCPUs and memory (pc-dimm). It owns the slot bookkeeping (root ports, SCSI indexes) and
// the list of attached devices the VmState persists. A NIC would take a free root port the same way
// (getfd + netdev_add + device_add, recorded as { kind: 'network', tapName } in attached()).
import { stat } from 'node:fs/promises';
import type { Logger } from '../../common/log.js';
import type { QemuConfig } from '../../config/types.js';
import type { AttachedDevice, Device, DeviceInfo } from '../hypervisor.js';
import { blockDeviceProps, blockdevOptions, scsiAddress, toJson } from './block.js';
import { type BootFsShare, VIRTIOFS_QUEUE_SIZE, qemuId } from './cmdline.js';
import type { RootPorts } from './netdev.js';
import { pciPathOf } from './pci.js';
import type { JsonValue, QmpClient } from './qmp.js';

const MIB = 1024 * 1024;
/** x86 guests online memory in 128 MiB blocks; smaller DIMMs would be wasted. */
const MEMORY_BLOCK_MIB = 128;

interface BlockEntry {
  qemuId: string;
  nodeName: string;
  /** root port (virtio-blk) */
  port?: string;
  /** index on the SCSI controller (virtio-scsi) */
  scsiIndex?: number;
  /** false for cold-plugged devices (part of the command line, not of attached()) */
  hot: boolean;
}

/** The VM's shape as hotplug needs it. */
export interface HotplugShape {
  sandboxId: string;
  /** ids of the empty pcie-root-ports of the command line */
  hotplugPortIds: readonly string[];
  hasScsiController: boolean;
  memoryMiB: number;
  maxMemoryMiB: number;
  maxVcpus: number;
  /** memfd-backed hotplugged memory is needed for vhost-user (virtio-fs) */
  sharesFs: boolean;
}

export class QemuHotplug {
  private readonly portOwner = new Map<string, string>();
  private readonly scsiUsed = new Set<number>();
  private readonly blocks = new Map<string, BlockEntry>();
  /** ids of vCPUs we hot-added, newest last (only those can be removed again). */
  private readonly hotCpus: string[] = [];
  private dimmSeq = 0;
  private shape: HotplugShape | undefined;

  constructor(
    private readonly q: QemuConfig,
    private readonly log: () => Logger,
  ) {}

  /** The VM's shape, once its command line is built. */
  setShape(s: HotplugShape): void {
    this.shape = s;
  }

  allocScsiIndex(): number {
    let i = 0;
    while (this.scsiUsed.has(i)) i++;
    this.scsiUsed.add(i);
    return i;
  }

  /** A device on the command line: tracked so ids stay unique (a root-bus virtio-blk is not removable). */
  registerColdBlock(devId: string, e: { qemuId: string; nodeName: string; scsiIndex?: number }): void {
    this.blocks.set(devId, { ...e, hot: false });
  }

  /** Devices attached since boot, for the persisted VmState. */
  attached(): AttachedDevice[] {
    return [...this.blocks.entries()]
      .filter(([, b]) => b.hot)
      .map(([id, b]) => ({ kind: 'block' as const, id, qemuId: b.qemuId }));
  }

  private need(): HotplugShape {
    if (!this.shape) throw new Error('hotplug: the VM was never prepared');
    return this.shape;
  }

  private freePort(what: string): string {
    const s = this.need();
    const port = s.hotplugPortIds.find((p) => !this.portOwner.has(p));
    if (!port) throw new Error(`${what}: all ${s.hotplugPortIds.length} hotplug root ports are in use`);
    return port;
  }

  /** Root-port bookkeeping for NICs (netdev.ts hotplugs them; block devices share the same ports). */
  nicPorts(): RootPorts {
    return {
      take: (owner) => {
        const s = this.need();
        const port = s.hotplugPortIds.find((p) => !this.portOwner.has(p));
        if (port) this.portOwner.set(port, `nic:${owner}`);
        return port;
      },
      release: (owner) => {
        for (const [p, who] of this.portOwner) if (who === `nic:${owner}`) this.portOwner.delete(p);
      },
    };
  }

  /**
   * A virtio-fs share on a free root port (chardev-add + device_add vhost-user-fs-pci): a VM restored from a
   * template has none on its command line, since vhost-user-fs cannot be migrated. Its virtiofsd already runs.
   */
  async addFsShare(qmp: QmpClient, share: BootFsShare): Promise<void> {
    const port = this.freePort(`virtio-fs share ${share.tag}`);
    this.portOwner.set(port, `fs:${share.qemuId}`);
    const chardev = `char-${share.qemuId}`;
    try {
      await qmp.execute('chardev-add', {
        id: chardev,
        backend: {
          type: 'socket',
          data: { addr: { type: 'unix', data: { path: share.socketPath } }, server: false },
        },
      });
      await qmp.deviceAdd({
        driver: 'vhost-user-fs-pci',
        id: share.qemuId,
        chardev,
        tag: share.tag,
        'queue-size': VIRTIOFS_QUEUE_SIZE,
        bus: port,
      });
    } catch (err) {
      this.portOwner.delete(port);
      throw new Error(
        `hotplugging virtio-fs share ${share.tag} (${share.socketPath}): ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
    this.log().info({ tag: share.tag, port }, 'virtio-fs share hotplugged');
  }

  async addDevice(qmp: QmpClient, dev: Device): Promise<DeviceInfo> {
    if (dev.kind === 'virtio-fs') {
      throw new Error(
        `addDevice(${dev.id}): virtio-fs hotplug is not supported; list the share in VmConfig.devices`,
      );
    }
    if (dev.kind === 'network') throw new Error(`addDevice(${dev.id}): network hotplug is not supported yet`);
    return this.addBlock(qmp, dev);
  }

  private async addBlock(qmp: QmpClient, dev: Extract<Device, { kind: 'block' }>): Promise<DeviceInfo> {
    if (this.blocks.has(dev.id))
      throw new Error(`addDevice(${dev.id}): a device with this id is already attached`);
    const st = await stat(dev.path).catch(() => undefined);
    if (!st) throw new Error(`addDevice(${dev.id}): ${dev.path} does not exist`);
    const q = this.q;
    const id = qemuId('blk', dev.id);
    const nodeName = `drive-${id}`;
    const entry: BlockEntry = { qemuId: id, nodeName, hot: true };
    let props: ReturnType<typeof blockDeviceProps>;
    let scsiAddr: string | undefined;
    if (dev.driver === 'virtio-scsi') {
      if (!this.need().hasScsiController) {
        throw new Error(
          `addDevice(${dev.id}): the VM has no virtio-scsi controller (block_device_driver is not virtio-scsi)`,
        );
      }
      entry.scsiIndex = this.allocScsiIndex();
      const a = scsiAddress(entry.scsiIndex);
      scsiAddr = a.addr;
      props = blockDeviceProps(q, { driver: 'virtio-scsi', id, nodeName, scsiId: a.scsiId, lun: a.lun });
    } else {
      const port = this.freePort(`addDevice(${dev.id})`);
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
          .catch((e) => this.log().warn({ err: String(e) }, 'rollback blockdev-del failed'));
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
    this.log().info(
      { device: dev.id, path: dev.path, driver: dev.driver, pciPath, scsiAddr },
      'block device hotplugged',
    );
    return { id: dev.id, pciPath, scsiAddr };
  }

  async removeDevice(qmp: QmpClient, dev: Device): Promise<void> {
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
    this.log().info({ device: dev.id }, 'block device removed');
  }

  async resizeVcpus(qmp: QmpClient, vcpus: number): Promise<{ old: number; new: number }> {
    const log = this.log();
    const max = this.need().maxVcpus;
    const target = Math.min(Math.max(Math.trunc(vcpus), 1), max);
    if (target !== vcpus) log.warn({ requested: vcpus, target, max }, 'vCPU count clamped');
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
      if (now > target) log.warn({ now, target }, 'only hot-added vCPUs can be removed');
    }
    log.info({ old, new: now }, 'vCPUs resized');
    return { old, new: now };
  }

  async resizeMemory(qmp: QmpClient, memoryMiB: number): Promise<number> {
    const log = this.log();
    const vm = this.need();
    const q = this.q;
    const dimms = (await qmp.queryMemoryDevices()).filter((d) => d.type === 'dimm');
    const hotMiB = dimms.filter((d) => d.data.hotplugged).reduce((n, d) => n + d.data.size / MIB, 0);
    const current = vm.memoryMiB + hotMiB;
    if (memoryMiB <= current) {
      if (memoryMiB < current) {
        log.warn(
          { requested: memoryMiB, current },
          'memory hot-unplug is not supported; keeping the current size',
        );
      }
      return current;
    }
    if (vm.maxMemoryMiB <= vm.memoryMiB || q.memory_slots === 0) {
      log.warn(
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
      log.warn({ requested: memoryMiB, current, max: vm.maxMemoryMiB }, 'memory already at maxmem');
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
        : vm.sharesFs
          ? { 'qom-type': 'memory-backend-memfd', id: memId, size: add * MIB, share: true }
          : { 'qom-type': 'memory-backend-ram', id: memId, size: add * MIB };
    try {
      await qmp.objectAdd(backend);
      try {
        await qmp.deviceAdd({ driver: 'pc-dimm', id: `dimm-hp${seq}`, memdev: memId });
      } catch (err) {
        await qmp.objectDel(memId).catch((e) => log.warn({ err: String(e) }, 'rollback object-del failed'));
        throw err;
      }
    } catch (err) {
      throw new Error(`resizeMemory to ${memoryMiB} MiB (adding ${add} MiB): ${(err as Error).message}`, {
        cause: err,
      });
    }
    log.info({ old: current, new: current + add }, 'memory hotplugged');
    return current + add;
  }
}
