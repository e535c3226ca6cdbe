import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from '../common/log.js';
// Storages the host asks for (CreateSandbox, CreateContainer): mounted once per mount point and
// reference-counted, so containers sharing one (the virtio-fs share) do not unmount it for each other.
import { PollTimeoutError, pollUntil } from '../common/poll.js';
import type { Storage } from '../protocols/gen/agent_pb.js';
import { doMount, doUnmount, mountAt } from './mount.js';
import { SyscallError } from './native.js';
import { SafePathError, inKataDir, mkdirUnder, pinUnder, resolveUnder } from './safe-path.js';

/** A storage request the agent cannot carry out as asked (bad driver, source or options). */
export class StorageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StorageError';
  }
}

interface Entry {
  mountPoint: string;
  driver: string;
  refs: number;
  /** False when something else had mounted it already (e.g. the share premounted by init). */
  ours: boolean;
  createdDirs: string[];
}

export interface StorageOptions {
  /** Every mount point, and every bind source, must be under this (the guest's /run/kata-containers). */
  root: string;
  log: Logger;
  /** sysfs root, for finding hotplugged block devices. */
  sysRoot?: string;
  /** How long to wait for a hotplugged device to appear. */
  deviceTimeoutMs?: number;
}

const VIRTIOFS = new Set(['virtio-fs', 'virtiofs']);
const BLOCK = new Set(['blk', 'virtio-blk', 'mmioblk', 'virtio-blk-pci']);
const BIND = new Set(['bind', 'watchable-bind']);

export class StorageManager {
  private readonly entries = new Map<string, Entry>();

  constructor(private readonly opts: StorageOptions) {}

  /** Mount points currently held, for diagnostics and tests. */
  get mountPoints(): string[] {
    return [...this.entries.keys()];
  }

  /**
   * Sets up each storage (or takes another reference on one already set up). All or nothing: on failure
   * the ones added by this call are released again. Returns the mount points, to pass to release().
   */
  async add(storages: readonly Storage[]): Promise<string[]> {
    const added: string[] = [];
    try {
      for (const s of storages) {
        added.push(await this.addOne(s));
      }
    } catch (e) {
      this.release(added);
      throw e;
    }
    return added;
  }

  /** Drops one reference per mount point; the last one unmounts and removes what we created. */
  release(mountPoints: readonly string[]): void {
    for (const mp of [...mountPoints].reverse()) {
      const e = this.entries.get(mp);
      if (!e) continue;
      if (--e.refs > 0) continue;
      this.entries.delete(mp);
      try {
        if (e.ours) doUnmount(mp);
      } catch (err) {
        this.opts.log.error({ err, mountPoint: mp }, 'unmounting storage failed');
      }
      removeDirs(e.createdDirs);
    }
  }

  releaseAll(): void {
    for (const e of [...this.entries.values()].reverse()) {
      e.refs = 1;
      this.release([e.mountPoint]);
    }
  }

  private async addOne(s: Storage): Promise<string> {
    if (!s.mountPoint) throw new StorageError(`storage (driver ${s.driver || 'none'}) has no mount point`);
    const mp = resolveUnder(this.opts.root, inKataDir(this.opts.root, s.mountPoint), 'storage mount point');
    const existing = this.entries.get(mp);
    if (existing) {
      existing.refs++;
      return mp;
    }
    const driver = s.driver;
    if (
      !(
        VIRTIOFS.has(driver) ||
        BLOCK.has(driver) ||
        BIND.has(driver) ||
        ['local', 'ephemeral', '9p'].includes(driver)
      )
    ) {
      throw new StorageError(`unsupported storage driver ${JSON.stringify(driver)} for ${s.mountPoint}`);
    }
    const { created } = mkdirUnder(this.opts.root, mp, 0o755, 'storage mount point');
    const entry: Entry = { mountPoint: mp, driver, refs: 1, ours: true, createdDirs: created };
    try {
      await this.setUp(s, mp, entry);
    } catch (e) {
      removeDirs(created);
      throw e;
    }
    this.entries.set(mp, entry);
    this.opts.log.info({ driver, source: s.source, mountPoint: mp, ours: entry.ours }, 'storage ready');
    return mp;
  }

  private async setUp(s: Storage, mp: string, entry: Entry): Promise<void> {
    const driver = s.driver;
    if (driver === 'local') {
      const mode = optionValue(s.options, 'mode');
      if (mode !== undefined) {
        if (!/^[0-7]{1,4}$/.test(mode))
          throw new StorageError(`local storage ${s.mountPoint}: bad mode ${mode}`);
        fs.chmodSync(mp, Number.parseInt(mode, 8));
      }
      setFsGid(mp, fsGid(s));
      entry.ours = false; // a plain directory: nothing to unmount
      return;
    }
    if (VIRTIOFS.has(driver) || driver === '9p') {
      const fstype = driver === '9p' ? '9p' : 'virtiofs';
      const current = mountAt(mp);
      if (current && current.fstype === fstype && current.source === s.source) {
        entry.ours = false; // premounted (e.g. the share mounted by init): leave it alone
        return;
      }
      if (fstype === 'virtiofs') await this.mountVirtiofs(s, mp);
      else this.mount(s.source, mp, fstype, s.options, s);
      return;
    }
    if (driver === 'ephemeral') {
      // fsgid is Kata's option for the volume's group (kubelet's fsGroup), not a tmpfs one.
      const gid = fsGid(s);
      const options = s.options.filter((o) => !o.startsWith('fsgid='));
      this.mount(s.source || 'tmpfs', mp, s.fstype || 'tmpfs', options, s);
      setFsGid(mp, gid);
      return;
    }
    if (BLOCK.has(driver)) {
      const dev = await this.blockDevice(s.source);
      this.mount(dev, mp, s.fstype, s.options, s);
      return;
    }
    // bind: the source must itself be under the allowed root; pinned so it cannot be swapped meanwhile.
    const src = pinUnder(this.opts.root, s.source, 'bind storage source');
    try {
      this.mount(src.procPath, mp, '', ['rbind', ...s.options], s);
    } finally {
      src.close();
    }
  }

  private mount(
    source: string,
    target: string,
    fstype: string,
    options: readonly string[],
    s: Storage,
  ): void {
    try {
      doMount(source, target, fstype, options);
    } catch (e) {
      throw new StorageError(
        `mounting ${s.driver} storage ${s.source} on ${s.mountPoint}: ${(e as Error).message}`,
      );
    }
  }

  /**
   * A virtio-fs share hot-plugged a moment ago (a VM restored from a template gets its share that way) is not
   * known to the kernel until its driver probes: mount says EINVAL ("tag not found") until then, so retry.
   */
  private async mountVirtiofs(s: Storage, mp: string): Promise<void> {
    const timeoutMs = this.opts.deviceTimeoutMs ?? 10_000;
    let last: unknown;
    try {
      await pollUntil(
        () => {
          try {
            doMount(s.source, mp, 'virtiofs', s.options);
            return true;
          } catch (e) {
            if (!(e instanceof SyscallError && e.code === 'EINVAL')) throw e;
            last = e;
            return false;
          }
        },
        { timeoutMs, intervalMs: 20, what: `virtio-fs tag ${s.source}` },
      );
    } catch (e) {
      const why =
        e instanceof PollTimeoutError
          ? `${(last as Error).message} for ${timeoutMs} ms`
          : (e as Error).message;
      throw new StorageError(`mounting virtio-fs storage ${s.source} on ${s.mountPoint}: ${why}`);
    }
  }

  /** /dev/xxx for a block storage source: a device path, or a PCI path ("02/01") of a hotplugged disk. */
  private async blockDevice(source: string): Promise<string> {
    if (source.startsWith('/dev/')) {
      if (source.split('/').includes('..')) throw new SafePathError(`block device ${source} contains '..'`);
      await waitFor(
        () => fs.existsSync(source),
        this.opts.deviceTimeoutMs ?? 10_000,
        `block device ${source}`,
      );
      return source;
    }
    const sysRoot = this.opts.sysRoot ?? '/sys';
    let name: string | undefined;
    await waitFor(
      () => {
        name = pciBlockDeviceName(sysRoot, source);
        return name !== undefined;
      },
      this.opts.deviceTimeoutMs ?? 10_000,
      `block device at PCI path ${source}`,
    );
    return `/dev/${name}`;
  }
}

/** Removes directories we created, innermost first; stops at one that is not empty or busy. */
function removeDirs(dirs: readonly string[]): void {
  for (const d of [...dirs].reverse()) {
    try {
      fs.rmdirSync(d);
    } catch {
      return;
    }
  }
}

function optionValue(options: readonly string[], key: string): string | undefined {
  for (const o of options) if (o.startsWith(`${key}=`)) return o.slice(key.length + 1);
  return undefined;
}

/**
 * The block device name under a PCI path such as "02/01": slot 02 on the root bus is a bridge whose
 * secondary bus holds slot 01. Undefined while the device (or its driver) is not there yet.
 */
export function pciBlockDeviceName(sysRoot: string, pciPath: string): string | undefined {
  const slots = pciPath.split('/');
  if (slots.length === 0 || !slots.every((s) => /^[0-9a-fA-F]{1,2}(\.[0-7])?$/.test(s))) {
    throw new StorageError(`invalid PCI path ${JSON.stringify(pciPath)}`);
  }
  let bus = '0000:00';
  let dir = path.join(sysRoot, 'devices', 'pci0000:00');
  for (let i = 0; i < slots.length; i++) {
    const [slot, fn = '0'] = slots[i]!.split('.') as [string, string?];
    dir = path.join(dir, `${bus}:${slot.padStart(2, '0').toLowerCase()}.${fn}`);
    if (!fs.existsSync(dir)) return undefined;
    if (i < slots.length - 1) {
      let buses: string[];
      try {
        buses = fs.readdirSync(path.join(dir, 'pci_bus'));
      } catch {
        return undefined;
      }
      if (buses.length === 0) return undefined;
      bus = buses[0]!;
    }
  }
  for (const entry of safeReaddir(dir)) {
    if (!entry.startsWith('virtio')) continue;
    const names = safeReaddir(path.join(dir, entry, 'block'));
    if (names.length > 0) return names[0];
  }
  const direct = safeReaddir(path.join(dir, 'block'));
  return direct[0];
}

function safeReaddir(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}

async function waitFor(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  try {
    await pollUntil(cond, { timeoutMs, intervalMs: 50, what });
  } catch (e) {
    if (e instanceof PollTimeoutError)
      throw new StorageError(`${what} did not appear within ${timeoutMs} ms`);
    throw e;
  }
}

/** Kata's fsgid option (kubelet's fsGroup), checked before anything is mounted. */
function fsGid(s: Storage): number | undefined {
  const gid = optionValue(s.options, 'fsgid');
  if (gid === undefined) return undefined;
  if (!/^\d+$/.test(gid)) throw new StorageError(`${s.driver} storage ${s.mountPoint}: bad fsgid ${gid}`);
  return Number(gid);
}

/** The storage's root gets the group, setgid so new files inherit it. */
function setFsGid(mp: string, gid: number | undefined): void {
  if (gid === undefined) return;
  fs.chownSync(mp, -1, gid);
  fs.chmodSync(mp, fs.statSync(mp).mode | 0o2000);
}
