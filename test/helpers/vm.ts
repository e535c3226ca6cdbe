// Boots the guest image directly with QEMU (TCG) for agent tests: virtio-serial agent channel on a unix socket,
// serial console to a log file, and optionally a virtio-fs share served by a virtiofsd this helper runs.
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Health } from '../../src/protocols/gen/health_pb.js';
import { TtrpcClient, createClient } from '../../src/protocols/ttrpc/index.js';
import { type GuestImageFiles, ensureGuestImage } from './guest-image.js';

export const QEMU = 'qemu-system-x86_64';
export const VIRTIOFSD = '/usr/lib/qemu/virtiofsd';
/** The virtio-fs tag Kata uses for the sandbox share. */
export const SHARE_TAG = 'kataShared';

export interface BootOptions {
  memoryMiB?: number;
  vcpus?: number;
  /** Host directory shared into the guest with virtio-fs (tag `kataShared`). */
  shareDir?: string;
  /** More QEMU arguments (devices, ...). */
  extraArgs?: string[];
  /** More guest kernel parameters (agent.log=debug, ...). */
  kernelParams?: string[];
  /** A virtio console on a unix socket plus `agent.debug_console`: a root shell for the test. */
  debugConsole?: boolean;
  /** Defaults to ensureGuestImage(). */
  image?: GuestImageFiles;
  /** Directory for sockets and the console log (made here, removed by stop); default a new temp dir. */
  runDir?: string;
}

export interface VmExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface BootedVm {
  runDir: string;
  /** Host end of the agent's virtio-serial port (QEMU chardev socket). */
  agentSocket: string;
  consoleLog: string;
  debugConsoleSocket?: string;
  pid: number;
  virtiofsdPid?: number;
  /** Resolves when QEMU has exited (and been reaped). */
  exited: Promise<VmExit>;
  /** Connects to the agent, retrying until it answers Health.Check (or QEMU dies, or the timeout). */
  connectAgent(timeoutMs?: number): Promise<TtrpcClient>;
  console(): string;
  /** Waits until the console log matches. */
  waitForConsole(re: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  /** Kills QEMU and virtiofsd (TERM, then KILL), waits for both, removes the run dir. Idempotent. */
  stop(): Promise<void>;
}

function waitExit(child: ChildProcess): Promise<VmExit> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null)
      resolve({ code: child.exitCode, signal: child.signalCode });
    else child.once('exit', (code, signal) => resolve({ code, signal }));
  });
}

async function killAndWait(child: ChildProcess, exited: Promise<VmExit>, graceMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

async function waitForFile(
  file: string,
  timeoutMs: number,
  what: string,
  died?: () => string | undefined,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!fs.existsSync(file)) {
    const why = died?.();
    if (why) throw new Error(`${what}: ${why}`);
    if (Date.now() > deadline) throw new Error(`${what}: ${file} did not appear within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export async function bootVm(opts: BootOptions = {}): Promise<BootedVm> {
  const image = opts.image ?? (await ensureGuestImage());
  const memoryMiB = opts.memoryMiB ?? 512;
  let runDir: string;
  if (opts.runDir) {
    fs.mkdirSync(opts.runDir, { recursive: true });
    runDir = opts.runDir;
  } else runDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kata-vm-'));
  const agentSocket = path.join(runDir, 'agent.sock');
  const consoleLog = path.join(runDir, 'console.log');
  const debugConsoleSocket = opts.debugConsole ? path.join(runDir, 'debug-console.sock') : undefined;
  const params = [
    image.kernelParams,
    ...(opts.debugConsole ? ['agent.debug_console'] : []),
    ...(opts.kernelParams ?? []),
  ];

  const args = [
    '-name',
    `kata-test,process=kata-test-${path.basename(runDir)}`,
    '-accel',
    'tcg',
    '-machine',
    'q35',
    '-cpu',
    'max',
    '-smp',
    String(opts.vcpus ?? 1),
    '-m',
    `${memoryMiB}M`,
    '-nodefaults',
    '-no-user-config',
    '-nographic',
    '-no-reboot',
    '-kernel',
    image.kernel,
    '-initrd',
    image.initrd,
    '-append',
    params.join(' '),
    '-serial',
    `file:${consoleLog}`,
    '-device',
    'virtio-rng-pci',
    '-device',
    'virtio-serial-pci,id=serial0',
    '-chardev',
    `socket,id=agent,path=${agentSocket},server=on,wait=off`,
    '-device',
    'virtserialport,bus=serial0.0,chardev=agent,name=agent.channel.0',
  ];
  if (debugConsoleSocket) {
    args.push('-chardev', `socket,id=dbg,path=${debugConsoleSocket},server=on,wait=off`);
    args.push('-device', 'virtconsole,bus=serial0.0,chardev=dbg');
  }

  let virtiofsd: ChildProcess | undefined;
  let virtiofsdExited: Promise<VmExit> | undefined;
  const cleanupEarly = async () => {
    if (virtiofsd && virtiofsdExited) await killAndWait(virtiofsd, virtiofsdExited, 2000);
    fs.rmSync(runDir, { recursive: true, force: true });
  };
  if (opts.shareDir) {
    if (!fs.statSync(opts.shareDir, { throwIfNoEntry: false })?.isDirectory()) {
      await cleanupEarly();
      throw new Error(`bootVm: shareDir ${opts.shareDir} is not a directory`);
    }
    const fsSocket = path.join(runDir, 'vhost-fs.sock');
    let fsStderr = '';
    virtiofsd = spawn(
      VIRTIOFSD,
      [
        `--socket-path=${fsSocket}`,
        '-o',
        `source=${opts.shareDir}`,
        '-o',
        'cache=auto',
        '-o',
        'sandbox=namespace',
      ],
      {
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    virtiofsd.stderr?.on('data', (d: Buffer) => {
      fsStderr = (fsStderr + d.toString()).slice(-4000);
    });
    virtiofsdExited = waitExit(virtiofsd);
    const fsd = virtiofsd;
    try {
      await waitForFile(fsSocket, 10_000, 'starting virtiofsd', () =>
        fsd.exitCode !== null ? `virtiofsd exited with ${fsd.exitCode}: ${fsStderr.trim()}` : undefined,
      );
    } catch (e) {
      await cleanupEarly();
      throw e;
    }
    args.push(
      '-object',
      `memory-backend-memfd,id=mem,size=${memoryMiB}M,share=on`,
      '-numa',
      'node,memdev=mem',
    );
    args.push(
      '-chardev',
      `socket,id=vfs,path=${fsSocket}`,
      '-device',
      `vhost-user-fs-pci,chardev=vfs,tag=${SHARE_TAG}`,
    );
  }
  args.push(...(opts.extraArgs ?? []));

  let qemuStderr = '';
  const qemu = spawn(QEMU, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  qemu.stderr?.on('data', (d: Buffer) => {
    qemuStderr = (qemuStderr + d.toString()).slice(-4000);
  });
  const spawnError = new Promise<Error>((resolve) => qemu.once('error', resolve));
  const exited = waitExit(qemu);
  const dead = (): string | undefined =>
    qemu.exitCode !== null || qemu.signalCode !== null
      ? `QEMU exited (${qemu.exitCode ?? qemu.signalCode}): ${qemuStderr.trim().split('\n').slice(-3).join(' | ')}`
      : undefined;
  try {
    await Promise.race([
      waitForFile(agentSocket, 30_000, 'starting QEMU', dead),
      spawnError.then((e) => Promise.reject(new Error(`starting ${QEMU}: ${e.message}`))),
    ]);
  } catch (e) {
    await killAndWait(qemu, exited, 2000);
    await cleanupEarly();
    throw e;
  }

  let stopped: Promise<void> | undefined;
  const vm: BootedVm = {
    runDir,
    agentSocket,
    consoleLog,
    debugConsoleSocket,
    pid: qemu.pid!,
    virtiofsdPid: virtiofsd?.pid,
    exited,
    console: () => (fs.existsSync(consoleLog) ? fs.readFileSync(consoleLog, 'utf8') : ''),
    async waitForConsole(re, timeoutMs = 120_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const m = vm.console().match(re);
        if (m) return m;
        const why = dead();
        if (why) throw new Error(`waiting for ${re} on the console: ${why}\n${vm.console().slice(-2000)}`);
        if (Date.now() > deadline)
          throw new Error(`waiting for ${re} on the console: timed out\n${vm.console().slice(-2000)}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    async connectAgent(timeoutMs = 180_000) {
      const deadline = Date.now() + timeoutMs;
      let last: unknown;
      while (Date.now() < deadline) {
        const why = dead();
        if (why) throw new Error(`connecting to the agent: ${why}\n${vm.console().slice(-2000)}`);
        let client: TtrpcClient | undefined;
        try {
          client = await TtrpcClient.connect(agentSocket, { timeoutMs: 5000, peer: 'guest agent' });
          // QEMU holds what we send until the guest opens the port, so one long call covers the boot.
          await createClient(Health, client).check(
            {},
            { timeoutMs: Math.min(30_000, Math.max(1000, deadline - Date.now())) },
          );
          return client;
        } catch (e) {
          last = e;
          client?.close();
          await new Promise((r) => setTimeout(r, 100));
        }
      }
      throw new Error(
        `connecting to the agent at ${agentSocket}: no answer within ${timeoutMs} ms (${(last as Error)?.message})\n${vm.console().slice(-2000)}`,
      );
    },
    stop() {
      stopped ??= (async () => {
        await killAndWait(qemu, exited, 5000);
        if (virtiofsd && virtiofsdExited) await killAndWait(virtiofsd, virtiofsdExited, 2000);
        fs.rmSync(runDir, { recursive: true, force: true });
      })();
      return stopped;
    },
  };
  return vm;
}

/** True when a process with this pid exists (zombies included). */
export function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
