// virtio-net NICs for QEMU over tap fds opened elsewhere (in the pod's netns): cold plug on the command line
// (fds passed as extra stdio entries of the spawned QEMU) and hotplug through QMP (getfd with SCM_RIGHTS,
// netdev_add, device_add on a free pcie-root-port). QEMU itself stays in the host netns.
import { Socket } from 'node:net';
import type { Logger } from '../../common/log.js';
import { sleep } from '../../common/poll.js';
import { EAGAIN, SyscallError, closeFd, sendWithFds, unixConnect } from '../../native/netns.js';
import type { NicSink, NicSpec } from '../hypervisor.js';
import { deviceArg } from './block.js';
import { type JsonValue, QmpClient, type QmpConnectOptions } from './qmp.js';

export const netdevId = (nicId: string) => `netdev-${nicId}`;
export const nicDeviceId = (nicId: string) => `nic-${nicId}`;

/** virtio-net-pci properties, as Kata sets them (mq + vectors for multiqueue; no option ROM). */
export function nicDeviceProps(
  spec: Pick<NicSpec, 'id' | 'mac' | 'queues'>,
  bus?: string,
): Record<string, string | number | boolean> & { driver: string; id: string } {
  const props: Record<string, string | number | boolean> & { driver: string; id: string } = {
    driver: 'virtio-net-pci',
    id: nicDeviceId(spec.id),
    netdev: netdevId(spec.id),
    mac: spec.mac,
    'disable-modern': false,
    romfile: '',
  };
  if (spec.queues > 1) {
    props.mq = true;
    props.vectors = 2 * spec.queues + 2;
  }
  if (bus) {
    props.bus = bus;
    props.addr = '0';
  }
  return props;
}

/** `-netdev` value for a tap given by fd numbers as QEMU sees them. */
export function netdevArg(nicId: string, tapFds: number[], vhostFds: number[]): string {
  const parts = ['tap', `id=${netdevId(nicId)}`];
  parts.push(tapFds.length > 1 ? `fds=${tapFds.join(':')}` : `fd=${tapFds[0]}`);
  if (vhostFds.length) {
    parts.push('vhost=on', vhostFds.length > 1 ? `vhostfds=${vhostFds.join(':')}` : `vhostfd=${vhostFds[0]}`);
  }
  return parts.join(',');
}

/**
 * NicSink for boot: collects NICs, then gives the QEMU args and the fds to put in spawn()'s stdio array from
 * index `firstFd` on (stdio[N] becomes fd N in QEMU). Call release() once QEMU has been spawned (or failed).
 */
export class ColdPlugNics implements NicSink {
  private readonly specs: NicSpec[] = [];

  async attachNic(spec: NicSpec): Promise<void> {
    if (this.specs.some((s) => s.id === spec.id)) throw new Error(`NIC ${spec.id} is already planned`);
    this.specs.push(spec);
  }

  async detachNic(id: string): Promise<void> {
    const i = this.specs.findIndex((s) => s.id === id);
    if (i < 0) return;
    const [s] = this.specs.splice(i, 1);
    for (const fd of [...s!.tapFds, ...s!.vhostFds]) closeFd(fd);
  }

  /** args for QEMU and `extraFds` (host fds) whose positions are firstFd, firstFd+1, ... in the child. */
  build(firstFd = 3, bus?: (nicId: string) => string | undefined): { args: string[]; extraFds: number[] } {
    const args: string[] = [];
    const extraFds: number[] = [];
    const place = (fd: number) => {
      extraFds.push(fd);
      return firstFd + extraFds.length - 1;
    };
    for (const s of this.specs) {
      const tap = s.tapFds.map(place);
      const vhost = s.vhostFds.map(place);
      args.push('-netdev', netdevArg(s.id, tap, vhost), '-device', deviceArg(nicDeviceProps(s, bus?.(s.id))));
    }
    return { args, extraFds };
  }

  /** Closes the host copies (QEMU has its own after spawn). */
  release(): void {
    closeNicFds(this.specs.splice(0));
  }

  /** Hands the planned NICs (and their fds) to the caller: a VM restored from a template hotplugs them. */
  take(): NicSpec[] {
    return this.specs.splice(0);
  }
}

export function closeNicFds(specs: readonly NicSpec[]): void {
  for (const s of specs) for (const fd of [...s.tapFds, ...s.vhostFds]) closeFd(fd);
}

/**
 * Opens a QMP connection whose socket fd can carry SCM_RIGHTS: socket()+connect() via koffi, wrapped in a
 * net.Socket for ordinary I/O. `sendFds` is what QmpNicHotplug needs.
 */
export async function connectQmpWithFdPassing(
  path: string,
  opts: QmpConnectOptions = {},
): Promise<{ qmp: QmpClient; sendFds: FdSender }> {
  const fd = unixConnect(path);
  const socket = new Socket({ fd, readable: true, writable: true });
  const qmp = await QmpClient.connect(path, { ...opts, socket });
  return { qmp, sendFds: fdSender(qmp, fd) };
}

/** Runs one QMP command whose line carries `fds` (SCM_RIGHTS). */
export type FdSender = (
  command: string,
  args: object,
  fds: number[],
  timeoutMs?: number,
) => Promise<JsonValue>;

function fdSender(qmp: QmpClient, socketFd: number): FdSender {
  return async (command, args, fds, timeoutMs = 10_000) => {
    // A raw sendmsg must not interleave with bytes net.Socket still holds.
    const deadline = Date.now() + timeoutMs;
    while (qmp.pendingWriteBytes > 0) {
      if (Date.now() > deadline) throw new Error(`QMP ${command}: socket writes did not drain`);
      await sleep(5);
    }
    return qmp.executeWith(command, args, { timeoutMs }, (line) => {
      let off = 0;
      let first = true;
      while (off < line.length) {
        try {
          off += sendWithFds(socketFd, line.subarray(off), first ? fds : []);
          first = false;
        } catch (e) {
          if (!(e instanceof SyscallError && e.errno === EAGAIN)) throw e;
          if (Date.now() > deadline)
            throw new Error(`QMP ${command}: socket stayed full for ${timeoutMs} ms`);
        }
      }
    });
  };
}

export interface RootPorts {
  /** a free pcie-root-port id, now reserved for `owner`, or undefined when all are in use */
  take(owner: string): string | undefined;
  release(owner: string): void;
}

/** The simplest RootPorts: a fixed list (the cmdline's hotplugPortIds) and a map of owners. */
export function rootPorts(ids: readonly string[]): RootPorts {
  const owner = new Map<string, string>();
  return {
    take(o) {
      const p = ids.find((id) => !owner.has(id));
      if (p) owner.set(p, o);
      return p;
    },
    release(o) {
      for (const [p, who] of owner) if (who === o) owner.delete(p);
    },
  };
}

/** NicSink after boot: getfd + netdev_add + device_add on a free root port; detach is device_del + netdev_del. */
export class QmpNicHotplug implements NicSink {
  constructor(
    private readonly qmp: QmpClient,
    private readonly sendFds: FdSender,
    private readonly ports: RootPorts,
    private readonly log: Logger,
    private readonly timeoutMs = 10_000,
  ) {}

  async attachNic(spec: NicSpec): Promise<void> {
    const names: string[] = [];
    const all = [...spec.tapFds, ...spec.vhostFds];
    let netdevAdded = false;
    const port = this.ports.take(spec.id);
    try {
      if (!port) throw new Error('all hotplug root ports are in use');
      const send = async (kind: string, fds: number[]) => {
        const got: string[] = [];
        for (const [i, fd] of fds.entries()) {
          const fdname = `${kind}-${spec.id}-${i}`;
          await this.sendFds('getfd', { fdname }, [fd], this.timeoutMs);
          names.push(fdname);
          got.push(fdname);
        }
        return got;
      };
      const tap = await send('tap', spec.tapFds);
      const vhost = await send('vhost', spec.vhostFds);
      const netdev: Record<string, JsonValue> = { type: 'tap', id: netdevId(spec.id) };
      if (tap.length > 1) netdev.fds = tap.join(':');
      else netdev.fd = tap[0]!;
      if (vhost.length) {
        netdev.vhost = true;
        if (vhost.length > 1) netdev.vhostfds = vhost.join(':');
        else netdev.vhostfd = vhost[0]!;
      }
      await this.qmp.execute('netdev_add', netdev, { timeoutMs: this.timeoutMs });
      netdevAdded = true;
      // netdev_add consumed the named fds; nothing to closefd from here on.
      names.length = 0;
      await this.qmp.deviceAdd(nicDeviceProps(spec, port));
      this.log.info({ nic: spec.id, mac: spec.mac, port, vhost: vhost.length > 0 }, 'NIC hotplugged');
    } catch (e) {
      if (netdevAdded)
        await this.qmp
          .execute('netdev_del', { id: netdevId(spec.id) })
          .catch((err) => this.rollbackFailed(err));
      for (const fdname of names)
        await this.qmp.execute('closefd', { fdname }).catch((err) => this.rollbackFailed(err));
      this.ports.release(spec.id);
      throw new Error(`hotplugging NIC ${spec.id} (${spec.mac}): ${(e as Error).message}`, { cause: e });
    } finally {
      for (const fd of all) closeFd(fd); // QEMU has its copies (or the attach failed): ours go either way
    }
  }

  async detachNic(id: string): Promise<void> {
    try {
      await this.qmp.deviceDel(nicDeviceId(id), this.timeoutMs);
      await this.qmp.execute('netdev_del', { id: netdevId(id) }, { timeoutMs: this.timeoutMs });
    } catch (e) {
      throw new Error(`unplugging NIC ${id}: ${(e as Error).message}`, { cause: e });
    }
    this.ports.release(id);
    this.log.info({ nic: id }, 'NIC unplugged');
  }

  private rollbackFailed(err: unknown): void {
    this.log.warn({ err: String(err) }, 'NIC hotplug rollback step failed');
  }
}
