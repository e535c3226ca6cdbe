import fs from 'node:fs';
import path from 'node:path';
import type { MessageInitShape } from '@bufbuild/protobuf';
import type { Logger } from '../common/log.js';
// Guest-wide RPCs: CPU and memory hotplug, details, clock, entropy, hostname, DNS, kernel modules, metrics.
import { sleep } from '../common/poll.js';
import type { GuestDetailsResponseSchema, KernelModule } from '../protocols/gen/agent_pb.js';
import { invalidArgument } from './errors.js';
import { ioctlNoArg, setHostname, setTimeOfDay } from './native.js';
import { runTracked } from './reaper.js';

export const AGENT_VERSION = '3.0.0-kata-ts';
export const STORAGE_HANDLERS = ['virtio-fs', '9p', 'local', 'ephemeral', 'blk', 'bind'];

export interface GuestOptions {
  /** sysfs root (tests point it at a fake tree). */
  sysRoot?: string;
  /** Whether guest-global changes (clock, hostname, DNS, modules) are applied; false on a dev host. */
  manageGuest: boolean;
  log: Logger;
}

function readText(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8').trim();
  } catch {
    return undefined;
  }
}

export class Guest {
  private readonly sys: string;

  constructor(private readonly opts: GuestOptions) {
    this.sys = opts.sysRoot ?? '/sys';
  }

  /** Onlines hotplugged CPUs until `nbCpus` were brought up (retrying while they appear), then memory. */
  async onlineCpuMem(
    nbCpus: number,
    cpuOnly: boolean,
    timeoutMs = 5000,
  ): Promise<{ cpus: number; memoryBlocks: number }> {
    const cpuDir = path.join(this.sys, 'devices/system/cpu');
    let onlined = 0;
    const deadline = Date.now() + timeoutMs;
    while (nbCpus > 0) {
      for (const e of safeReaddir(cpuDir)) {
        if (!/^cpu\d+$/.test(e)) continue;
        const f = path.join(cpuDir, e, 'online');
        if (readText(f) !== '0') continue;
        try {
          fs.writeFileSync(f, '1');
          onlined++;
        } catch (err) {
          this.opts.log.warn({ err, cpu: e }, 'onlining cpu failed');
        }
        if (onlined >= nbCpus) break;
      }
      if (onlined >= nbCpus) break;
      if (Date.now() > deadline) {
        throw new Error(`onlined ${onlined} of ${nbCpus} requested CPUs within ${timeoutMs} ms`);
      }
      await sleep(50);
    }
    let blocks = 0;
    if (!cpuOnly) blocks = this.onlineMemory();
    this.opts.log.info({ cpus: onlined, memory_blocks: blocks }, 'onlined hotplugged resources');
    return { cpus: onlined, memoryBlocks: blocks };
  }

  private onlineMemory(): number {
    const memDir = path.join(this.sys, 'devices/system/memory');
    let n = 0;
    for (const e of safeReaddir(memDir)) {
      if (!/^memory\d+$/.test(e)) continue;
      const f = path.join(memDir, e, 'online');
      if (readText(f) !== '0') continue;
      try {
        fs.writeFileSync(f, '1');
        n++;
      } catch (err) {
        this.opts.log.warn({ err, block: e }, 'onlining memory block failed');
      }
    }
    return n;
  }

  /** Tells the kernel about hotplugged memory at these physical addresses. */
  memHotplugByProbe(addrs: readonly bigint[]): void {
    const probe = path.join(this.sys, 'devices/system/memory/probe');
    for (const a of addrs) fs.writeFileSync(probe, `0x${a.toString(16)}`);
    this.onlineMemory();
  }

  details(
    memBlockSize: boolean,
    memHotplugProbe: boolean,
  ): MessageInitShape<typeof GuestDetailsResponseSchema> {
    let blockSize = 0n;
    if (memBlockSize) {
      const t = readText(path.join(this.sys, 'devices/system/memory/block_size_bytes'));
      if (t) blockSize = BigInt(`0x${t}`);
    }
    return {
      memBlockSizeBytes: blockSize,
      supportMemHotplugProbe:
        memHotplugProbe && fs.existsSync(path.join(this.sys, 'devices/system/memory/probe')),
      agentDetails: {
        version: AGENT_VERSION,
        initDaemon: process.pid === 1,
        deviceHandlers: [],
        storageHandlers: STORAGE_HANDLERS,
        supportsSeccomp: true,
        extraFeatures: [],
      },
    };
  }

  setDateTime(sec: bigint, usec: bigint): void {
    if (sec < 0n || usec < 0n || usec >= 1_000_000n) throw invalidArgument(`invalid time ${sec}s ${usec}us`);
    if (!this.opts.manageGuest) {
      this.opts.log.info({ sec: String(sec) }, 'not setting the clock (agent does not manage this machine)');
      return;
    }
    setTimeOfDay(sec, usec);
  }

  /** Mixes host-provided entropy into the pool and asks the kernel to reseed its CRNG. */
  reseedRandom(data: Uint8Array): void {
    if (data.length === 0) throw invalidArgument('reseed: no data');
    const fd = fs.openSync('/dev/random', 'w');
    try {
      fs.writeSync(fd, data);
      const RNDRESEEDCRNG = 0x5207;
      try {
        ioctlNoArg(fd, RNDRESEEDCRNG, 'ioctl(RNDRESEEDCRNG)');
      } catch (e) {
        this.opts.log.warn({ err: e }, 'kernel CRNG reseed failed (entropy was still added)');
      }
    } finally {
      fs.closeSync(fd);
    }
  }

  setHostname(name: string): void {
    if (!name) return;
    if (!/^[A-Za-z0-9][A-Za-z0-9.-]{0,63}$/.test(name))
      throw invalidArgument(`invalid hostname ${JSON.stringify(name)}`);
    if (!this.opts.manageGuest) return;
    setHostname(name);
  }

  /** Writes the sandbox's resolv.conf lines ("nameserver 10.0.0.1", "search ..."). */
  setDns(lines: readonly string[], file = '/etc/resolv.conf'): void {
    if (lines.length === 0) return;
    for (const l of lines)
      if (/[\n\r\0]/.test(l)) throw invalidArgument(`invalid DNS line ${JSON.stringify(l)}`);
    if (!this.opts.manageGuest) return;
    fs.writeFileSync(file, `${lines.join('\n')}\n`);
  }

  async loadModules(mods: readonly KernelModule[]): Promise<void> {
    for (const m of mods) {
      if (!/^[A-Za-z0-9_-]+$/.test(m.name))
        throw invalidArgument(`invalid kernel module name ${JSON.stringify(m.name)}`);
      if (!this.opts.manageGuest) continue;
      const r = await runTracked('modprobe', [m.name, ...m.parameters], { timeoutMs: 30_000 });
      if (r.code !== 0) throw new Error(`modprobe ${m.name} failed: ${r.stderr.trim() || `exit ${r.code}`}`);
    }
  }

  /** Prometheus text exposition of the guest's and agent's basic health. */
  metrics(containers: number): string {
    const lines: string[] = [];
    const add = (name: string, help: string, type: string, samples: [string, number][]) => {
      lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
      for (const [labels, v] of samples) lines.push(`${name}${labels} ${v}`);
    };
    const load = (readText('/proc/loadavg') ?? '').split(/\s+/);
    add('kata_guest_load', 'Guest system load.', 'gauge', [
      ['{item="load1"}', Number(load[0] ?? 0)],
      ['{item="load5"}', Number(load[1] ?? 0)],
      ['{item="load15"}', Number(load[2] ?? 0)],
    ]);
    const mem: [string, number][] = [];
    for (const line of (readText('/proc/meminfo') ?? '').split('\n')) {
      const m = /^(\w+(?:\(\w+\))?):\s+(\d+)(?:\s+kB)?/.exec(line);
      if (m)
        mem.push([
          `{item="${m[1]!.replace(/[()]/g, '_')}"}`,
          Number(m[2]) * (line.includes('kB') ? 1024 : 1),
        ]);
    }
    add('kata_guest_meminfo', 'Guest memory statistics (bytes).', 'gauge', mem);
    const mu = process.memoryUsage();
    add('kata_agent_process_resident_memory_bytes', 'Agent resident memory.', 'gauge', [['', mu.rss]]);
    add('kata_agent_process_heap_used_bytes', 'Agent JavaScript heap in use.', 'gauge', [['', mu.heapUsed]]);
    add('kata_agent_containers', 'Containers the agent manages.', 'gauge', [['', containers]]);
    add('kata_agent_uptime_seconds', 'Agent uptime.', 'gauge', [['', Math.round(process.uptime())]]);
    return `${lines.join('\n')}\n`;
  }
}

function safeReaddir(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}
