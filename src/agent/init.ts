// PID-1 duties of the agent in the guest: the kernel command line, the basic mounts, kernel modules,
// hostname, loopback, cgroup2 controllers, a debug shell, and a clean power-off so that QEMU exits.
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Logger } from '../common/log.js';

export type AgentLogLevel = 'debug' | 'info' | 'warn' | 'error';

/** The agent's options, from the kernel command line (as Kata's agent: `agent.<key>[=value]`). */
export interface AgentConfig {
  logLevel: AgentLogLevel;
  /** `agent.debug_console`: a shell on the virtio console hvc0 (or ttyS1). */
  debugConsole: boolean;
  /** `agent.hostname=NAME` (until CreateSandbox sets the sandbox's). */
  hostname: string;
  /** `agent.server_addr=unix:///path`: an extra listener, used when the agent runs on a host for tests. */
  serverAddr?: string;
  /** `agent.vsock_port=N` (default 1024, Kata's agent port). */
  vsockPort: number;
}

const LOG_LEVELS: Record<string, AgentLogLevel> = {
  trace: 'debug',
  debug: 'debug',
  info: 'info',
  warn: 'warn',
  warning: 'warn',
  error: 'error',
  critical: 'error',
  fatal: 'error',
};

/** Parses the `agent.*` options out of a kernel command line; unknown or malformed ones are reported. */
export function parseKernelCmdline(cmdline: string): { config: AgentConfig; warnings: string[] } {
  const config: AgentConfig = { logLevel: 'info', debugConsole: false, hostname: 'kata', vsockPort: 1024 };
  const warnings: string[] = [];
  for (const param of cmdline.trim().split(/\s+/)) {
    if (!param.startsWith('agent.')) continue;
    const eq = param.indexOf('=');
    const key = eq < 0 ? param.slice(6) : param.slice(6, eq);
    const value = eq < 0 ? undefined : param.slice(eq + 1);
    switch (key) {
      case 'log': {
        const level = value ? LOG_LEVELS[value.toLowerCase()] : undefined;
        if (level) config.logLevel = level;
        else warnings.push(`agent.log: unknown level ${JSON.stringify(value)}`);
        break;
      }
      case 'debug_console':
        config.debugConsole = value === undefined || value === '1' || value === 'true';
        break;
      case 'hostname':
        if (value && /^[A-Za-z0-9][A-Za-z0-9.-]{0,63}$/.test(value)) config.hostname = value;
        else warnings.push(`agent.hostname: not a valid host name: ${JSON.stringify(value)}`);
        break;
      case 'server_addr':
        if (value?.startsWith('unix://') || value?.startsWith('vsock://')) config.serverAddr = value;
        else warnings.push(`agent.server_addr: expected unix:// or vsock://, got ${JSON.stringify(value)}`);
        break;
      case 'vsock_port': {
        const port = Number(value);
        if (Number.isInteger(port) && port > 0 && port < 2 ** 32) config.vsockPort = port;
        else warnings.push(`agent.vsock_port: not a port number: ${JSON.stringify(value)}`);
        break;
      }
      default:
        // Kata has many more agent.* options (timeouts, tracing, ...); they do not apply here.
        warnings.push(`ignoring unsupported option ${param}`);
    }
  }
  return { config, warnings };
}

/** Seconds since the guest kernel booted (CLOCK_MONOTONIC, which is what /proc/uptime counts in a VM). */
export function uptimeSeconds(): number {
  return Number(process.hrtime.bigint() / 1000n) / 1e6;
}

// ---- libc through koffi, bound on first use so that a host test importing this file loads nothing ----

type Koffi = typeof import('koffi');

interface InitLibc {
  mount(source: string, target: string, fstype: string, flags: number, data: string | null): number;
  sethostname(name: string, len: number): number;
  finitModule(fd: number, params: string, flags: number): number;
  socket(domain: number, type: number, protocol: number): number;
  ioctl(fd: number, request: number, arg: Buffer): number;
  close(fd: number): number;
  sync(): void;
  tcdrain(fd: number): number;
  reboot(cmd: number): number;
  errno(): number;
}

let libcCache: InitLibc | undefined;

function libc(): InitLibc {
  if (libcCache) return libcCache;
  const koffi = createRequire(import.meta.url)('koffi') as Koffi;
  const lib = koffi.load('libc.so.6');
  const mount = lib.func('int mount(const char *, const char *, const char *, unsigned long, const char *)');
  const sethostname = lib.func('int sethostname(const char *, size_t)');
  const syscall = lib.func('long syscall(long, ...)');
  const socket = lib.func('int socket(int, int, int)');
  const ioctl = lib.func('int ioctl(int, unsigned long, ...)');
  const close = lib.func('int close(int)');
  const sync = lib.func('void sync()');
  const reboot = lib.func('int reboot(int)');
  const tcdrain = lib.func('int tcdrain(int)');
  const SYS_finit_module = 313; // x86_64; glibc has no wrapper
  libcCache = {
    mount: (s, t, f, fl, d) => mount(s, t, f, fl, d) as number,
    sethostname: (n, l) => sethostname(n, l) as number,
    finitModule: (fd, p, fl) => Number(syscall(SYS_finit_module, 'int', fd, 'const char *', p, 'int', fl)),
    socket: (d, t, p) => socket(d, t, p) as number,
    ioctl: (fd, r, a) => ioctl(fd, r, 'void *', a) as number,
    close: (fd) => close(fd) as number,
    sync: () => void sync(),
    tcdrain: (fd) => tcdrain(fd) as number,
    reboot: (c) => reboot(c) as number,
    errno: () => koffi.errno(),
  };
  return libcCache;
}

const ERRNO: Record<number, string> = {
  1: 'EPERM',
  2: 'ENOENT',
  16: 'EBUSY',
  17: 'EEXIST',
  19: 'ENODEV',
  22: 'EINVAL',
};

/** An Error for a failed libc call, saying what was being done and errno by name. */
export function sysError(what: string, errno: number): Error & { errno: number } {
  return Object.assign(new Error(`${what}: ${ERRNO[errno] ?? `errno ${errno}`}`), { errno });
}

// ---- mounts ----

const MS_NOSUID = 0x2;
const MS_NODEV = 0x4;
const MS_NOEXEC = 0x8;

interface MountSpec {
  source: string;
  target: string;
  fstype: string;
  flags: number;
  data: string | null;
}

const BASE_MOUNTS: MountSpec[] = [
  { source: 'proc', target: '/proc', fstype: 'proc', flags: MS_NOSUID | MS_NODEV | MS_NOEXEC, data: null },
  { source: 'sysfs', target: '/sys', fstype: 'sysfs', flags: MS_NOSUID | MS_NODEV | MS_NOEXEC, data: null },
  { source: 'devtmpfs', target: '/dev', fstype: 'devtmpfs', flags: MS_NOSUID, data: 'mode=0755' },
  {
    source: 'devpts',
    target: '/dev/pts',
    fstype: 'devpts',
    flags: MS_NOSUID | MS_NOEXEC,
    data: 'newinstance,ptmxmode=0666,mode=0620,gid=5',
  },
  { source: 'shm', target: '/dev/shm', fstype: 'tmpfs', flags: MS_NOSUID | MS_NODEV, data: 'mode=1777' },
  { source: 'tmpfs', target: '/run', fstype: 'tmpfs', flags: MS_NOSUID | MS_NODEV, data: 'mode=0755' },
  {
    source: 'cgroup2',
    target: '/sys/fs/cgroup',
    fstype: 'cgroup2',
    flags: MS_NOSUID | MS_NODEV | MS_NOEXEC,
    data: null,
  },
];

function mountedTargets(): Set<string> {
  try {
    return new Set(
      fs
        .readFileSync('/proc/self/mounts', 'utf8')
        .split('\n')
        .map((l) => l.split(' ')[1] ?? ''),
    );
  } catch {
    return new Set(); // /proc is not mounted yet: nothing is
  }
}

function mountAll(specs: MountSpec[]): string[] {
  for (const m of specs) {
    // /init may have mounted /proc already (it reads the CPU flags).
    if (mountedTargets().has(m.target)) continue;
    fs.mkdirSync(m.target, { recursive: true });
    if (libc().mount(m.source, m.target, m.fstype, m.flags, m.data) !== 0) {
      throw sysError(`mounting ${m.fstype} on ${m.target}`, libc().errno());
    }
  }
  const present = mountedTargets();
  const done = specs.map((m) => m.target).filter((t) => present.has(t));
  // The usual /dev links (devtmpfs does not make them); containers and shells expect them.
  for (const [link, target] of [
    ['/dev/fd', '/proc/self/fd'],
    ['/dev/stdin', '/proc/self/fd/0'],
    ['/dev/stdout', '/proc/self/fd/1'],
    ['/dev/stderr', '/proc/self/fd/2'],
  ] as const) {
    if (!fs.existsSync(link)) fs.symlinkSync(target, link);
  }
  return done;
}

// ---- kernel modules ----

/** Where the image builder lists the modules to load at boot (one name a line, `#` comments). */
export const MODULES_LOAD_FILE = '/etc/modules-load.d/kata-agent.conf';

/** The running kernel's module dir. Read from /proc, not os.release(), which a V8 startup snapshot would freeze. */
function modulesDir(): string {
  return path.join('/lib/modules', fs.readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim());
}

/** modules.dep of the running kernel: module name → [its .ko path, then its dependencies' paths]. */
function readModulesDep(dir: string): Map<string, string[]> {
  const deps = new Map<string, string[]>();
  const text = fs.readFileSync(path.join(dir, 'modules.dep'), 'utf8');
  for (const line of text.split('\n')) {
    const colon = line.indexOf(':');
    if (colon < 0) continue;
    const ko = line.slice(0, colon);
    const name = path
      .basename(ko)
      .replace(/\.ko(\.\w+)?$/, '')
      .replace(/-/g, '_');
    deps.set(name, [
      ko,
      ...line
        .slice(colon + 1)
        .trim()
        .split(/\s+/)
        .filter(Boolean),
    ]);
  }
  return deps;
}

const loadedModules = new Set<string>();

function moduleName(ko: string): string {
  return path
    .basename(ko)
    .replace(/\.ko(\.\w+)?$/, '')
    .replace(/-/g, '_');
}

/** The .ko files to insert for these modules, dependencies first, each once; built-in modules are skipped. */
function modulePlan(names: string[]): { dir: string; kos: string[] } {
  const dir = modulesDir();
  const deps = readModulesDep(dir);
  let builtin = '';
  try {
    builtin = fs.readFileSync(path.join(dir, 'modules.builtin'), 'utf8').replace(/-/g, '_');
  } catch {
    // no list: nothing is known to be built in
  }
  const kos: string[] = [];
  for (const raw of names) {
    const name = raw.replace(/-/g, '_');
    const chain = deps.get(name);
    if (!chain) {
      if (new RegExp(`/${name}\\.ko`).test(builtin)) continue;
      throw new Error(`loading kernel module ${name}: not in ${dir}/modules.dep and not built in`);
    }
    // modules.dep lists the deepest dependency last: reversed, each one's dependencies come first.
    for (const ko of [...chain].reverse()) if (!kos.includes(ko)) kos.push(ko);
  }
  return { dir, kos: kos.filter((ko) => !loadedModules.has(moduleName(ko))) };
}

function insertModule(dir: string, ko: string): 'loaded' | 'already' {
  const name = moduleName(ko);
  if (loadedModules.has(name)) return 'already';
  const fd = fs.openSync(path.join(dir, ko), 'r');
  try {
    if (libc().finitModule(fd, '', 0) !== 0) {
      const errno = libc().errno();
      if (errno !== 17) throw sysError(`loading kernel module ${name} (${ko})`, errno);
      loadedModules.add(name);
      return 'already';
    }
  } finally {
    fs.closeSync(fd);
  }
  loadedModules.add(name);
  return 'loaded';
}

/**
 * Loads kernel modules and their dependencies (from modules.dep), like `modprobe`. A module built into the
 * kernel is skipped; a module that is neither built in nor shipped is an error naming it.
 */
export function loadKernelModules(names: string[]): string[] {
  const { dir, kos } = modulePlan(names);
  const loaded: string[] = [];
  for (const ko of kos) if (insertModule(dir, ko) === 'loaded') loaded.push(moduleName(ko));
  return loaded;
}

/**
 * The same on a koffi worker thread, so that the agent answers while the kernel links the modules (about half a
 * second under TCG). Resolves with what was loaded and what failed; never rejects.
 */
export function loadKernelModulesInBackground(
  names: string[],
): Promise<{ loaded: string[]; problems: string[] }> {
  const loaded: string[] = [];
  const problems: string[] = [];
  if (!names.length) return Promise.resolve({ loaded, problems });
  let plan: { dir: string; kos: string[] };
  try {
    plan = modulePlan(names);
  } catch (e) {
    return Promise.resolve({ loaded, problems: [(e as Error).message] });
  }
  const insert = finitModuleAsync();
  return (async () => {
    for (const ko of plan.kos) {
      const name = moduleName(ko);
      const fd = fs.openSync(path.join(plan.dir, ko), 'r');
      try {
        const rc = await insert(fd);
        // errno is the worker thread's: /sys/module tells whether the module is there after all (EEXIST).
        if (rc === 0 || fs.existsSync(`/sys/module/${name}`)) {
          loadedModules.add(name);
          if (rc === 0) loaded.push(name);
        } else {
          problems.push(`loading kernel module ${name} (${ko}) failed`);
        }
      } catch (e) {
        problems.push(`loading kernel module ${name} (${ko}): ${(e as Error).message}`);
      } finally {
        fs.closeSync(fd);
      }
    }
    return { loaded, problems };
  })();
}

type AsyncInsert = (fd: number) => Promise<number>;
let finitAsync: AsyncInsert | undefined;
function finitModuleAsync(): AsyncInsert {
  if (finitAsync) return finitAsync;
  const koffi = createRequire(import.meta.url)('koffi') as Koffi;
  // syscall(2) is variadic; with integer and pointer arguments the x86-64 calling convention is the same as a
  // fixed prototype, which koffi can run on its worker threads.
  const fn = koffi.load('libc.so.6').func('long syscall(long, int, const char *, int)');
  finitAsync = (fd) =>
    new Promise((resolve, reject) => {
      fn.async(313, fd, '', 0, (err: unknown, rc: unknown) => (err ? reject(err) : resolve(Number(rc))));
    });
  return finitAsync;
}

/** Modules the agent's channels need: loaded before it listens. The rest load in the background. */
export const CHANNEL_MODULES = ['virtio_pci', 'virtio_console', 'vsock', 'vmw_vsock_virtio_transport'];
const VSOCK_MODULES = ['vsock', 'vmw_vsock_virtio_transport'];
const VIRTIO_ID_VSOCK = 19;

/** True when the VM has a virtio device of this type (virtio_pci must be loaded to see them). */
export function hasVirtioDevice(id: number): boolean {
  try {
    return fs
      .readdirSync('/sys/bus/virtio/devices')
      .some((d) => Number(fs.readFileSync(`/sys/bus/virtio/devices/${d}/device`, 'utf8').trim()) === id);
  } catch {
    return false;
  }
}

/** Modules the image asked to load at boot, in order. */
export function bootModules(file = MODULES_LOAD_FILE): string[] {
  if (!fs.existsSync(file)) return [];
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .map((l) => l.replace(/#.*/, '').trim())
    .filter(Boolean);
}

// ---- network and host name ----

const AF_INET = 2;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;
const SIOCGIFFLAGS = 0x8913;
const SIOCSIFFLAGS = 0x8914;
const IFF_UP = 0x1;

/** Brings an interface up (the loopback here: the network RPCs configure the rest). */
export function linkUp(ifname: string): void {
  const c = libc();
  const fd = c.socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw sysError(`bringing ${ifname} up: socket`, c.errno());
  try {
    const ifr = Buffer.alloc(40); // struct ifreq: name[16], then a union whose first short is ifr_flags
    ifr.write(ifname, 0, 15, 'latin1');
    if (c.ioctl(fd, SIOCGIFFLAGS, ifr) !== 0)
      throw sysError(`bringing ${ifname} up: SIOCGIFFLAGS`, c.errno());
    ifr.writeUInt16LE(ifr.readUInt16LE(16) | IFF_UP, 16);
    if (c.ioctl(fd, SIOCSIFFLAGS, ifr) !== 0)
      throw sysError(`bringing ${ifname} up: SIOCSIFFLAGS`, c.errno());
  } finally {
    c.close(fd);
  }
}

export function setHostname(name: string): void {
  if (libc().sethostname(name, Buffer.byteLength(name)) !== 0)
    throw sysError(`setting host name ${name}`, libc().errno());
}

// ---- cgroups ----

const WANTED_CONTROLLERS = ['cpuset', 'cpu', 'io', 'memory', 'pids'];

/** Delegates the controllers containers need to child cgroups of the root. Returns the ones enabled. */
function enableCgroupControllers(root = '/sys/fs/cgroup'): string[] {
  const available = fs.readFileSync(path.join(root, 'cgroup.controllers'), 'utf8').trim().split(/\s+/);
  const wanted = WANTED_CONTROLLERS.filter((c) => available.includes(c));
  if (wanted.length) {
    try {
      fs.writeFileSync(path.join(root, 'cgroup.subtree_control'), wanted.map((c) => `+${c}`).join(' '));
    } catch (e) {
      throw new Error(`enabling cgroup controllers ${wanted.join(',')} in ${root}: ${(e as Error).message}`);
    }
  }
  return fs
    .readFileSync(path.join(root, 'cgroup.subtree_control'), 'utf8')
    .trim()
    .split(/\s+/)
    .filter(Boolean);
}

// ---- the whole init ----

export interface InitReport {
  mounted: string[];
  modules: string[];
  /** Time spent loading them (the largest part of init under TCG). */
  modulesMs: number;
  hostname: string;
  cgroupControllers: string[];
  loopback: boolean;
  /** True when / is the initramfs (rootfs), where pivot_root cannot work: runtimes must use --no-pivot. */
  initramfsRoot: boolean;
  /** What went wrong but did not stop the agent. */
  problems: string[];
}

/** The mounts that everything else needs, done first; returns those in place (by the agent or by /init). */
export function mountBasics(): string[] {
  return mountAll(BASE_MOUNTS);
}

/** Everything PID 1 does before serving, after mountBasics(): modules, host name, loopback, cgroups. */
export function initGuest(config: AgentConfig, modules: string[], mounted: string[]): InitReport {
  const problems: string[] = [];
  let loadedMods: string[] = [];
  const t0 = performance.now();
  try {
    // The vsock modules only when the VM has a vsock device: without one they would only delay the agent.
    loadedMods = loadKernelModules(modules.filter((m) => !VSOCK_MODULES.includes(m)));
    const vsock = modules.filter((m) => VSOCK_MODULES.includes(m));
    if (vsock.length && hasVirtioDevice(VIRTIO_ID_VSOCK)) loadedMods.push(...loadKernelModules(vsock));
  } catch (e) {
    problems.push((e as Error).message);
  }
  const modulesMs = Math.round(performance.now() - t0);
  try {
    setHostname(config.hostname);
  } catch (e) {
    problems.push((e as Error).message);
  }
  let loopback = false;
  try {
    linkUp('lo');
    loopback = true;
  } catch (e) {
    problems.push((e as Error).message);
  }
  let cgroupControllers: string[] = [];
  try {
    cgroupControllers = enableCgroupControllers();
  } catch (e) {
    problems.push((e as Error).message);
  }
  return {
    mounted,
    modules: loadedMods,
    modulesMs,
    hostname: os.hostname(),
    cgroupControllers,
    loopback,
    initramfsRoot: isInitramfsRoot(),
    problems,
  };
}

/** True when / is the initramfs itself (Kata's agent then sets no_pivot_root for containers). */
export function isInitramfsRoot(): boolean {
  try {
    const line = fs
      .readFileSync('/proc/self/mounts', 'utf8')
      .split('\n')
      .find((l) => l.split(' ')[1] === '/');
    return line?.split(' ')[0] === 'rootfs' || line?.split(' ')[2] === 'rootfs';
  } catch {
    return false;
  }
}

// ---- debug console ----

/**
 * `agent.debug_console`: a root shell on the virtio console (hvc0) or the second serial port, restarted when it
 * exits. For debugging only: anyone with the host end of that console is root in the guest.
 */
export function startDebugConsole(log: Logger): { stop(): void } {
  const device = ['/dev/hvc0', '/dev/ttyS1'].find((d) => fs.existsSync(d));
  if (!device) {
    log.warn('agent.debug_console: no /dev/hvc0 or /dev/ttyS1 in the guest; no debug console');
    return { stop() {} };
  }
  let child: ChildProcess | undefined;
  let stopped = false;
  const start = () => {
    if (stopped) return;
    let fd: number;
    try {
      fd = fs.openSync(device, 'r+');
    } catch (e) {
      log.error({ err: e }, `debug console: opening ${device} failed`);
      return;
    }
    // setsid -c makes the console the shell's controlling terminal, so ^C and job control work.
    child = spawn('/bin/busybox', ['setsid', '-c', '/bin/sh', '-l'], {
      stdio: [fd, fd, fd],
      env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', HOME: '/', TERM: 'vt100', PS1: 'kata-debug# ' },
    });
    fs.closeSync(fd);
    child.on('error', (e) => log.error({ err: e }, 'debug console: starting the shell failed'));
    child.on('exit', () => {
      child = undefined;
      setTimeout(start, 500);
    });
    log.info({ device }, 'debug console started');
  };
  start();
  return {
    stop() {
      stopped = true;
      child?.kill('SIGKILL');
    },
  };
}

// ---- power off ----

const LINUX_REBOOT_CMD_POWER_OFF = 0x4321fedc;

/**
 * Logs, flushes the log, syncs and powers the VM off; QEMU then exits. Never resolves. The log goes to a serial
 * console: the last lines are only seen if the logger's buffer is written and the tty drained first.
 */
export async function powerOff(log: Logger): Promise<never> {
  log.info('powering off');
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, 1000);
    try {
      log.flush(() => {
        clearTimeout(timer);
        resolve();
      });
    } catch {
      clearTimeout(timer);
      resolve();
    }
  });
  // pino writes from libuv's thread pool: a write may still be on its way after the flush callback.
  await new Promise((r) => setTimeout(r, 100));
  const c = libc();
  c.tcdrain(1);
  c.tcdrain(2);
  c.sync();
  c.reboot(LINUX_REBOOT_CMD_POWER_OFF);
  // reboot(2) only returns on failure: exiting PID 1 panics the kernel, and panic=1 with -no-reboot stops QEMU.
  log.error({ err: sysError('reboot(POWER_OFF)', c.errno()) }, 'power-off failed; exiting PID 1 instead');
  process.exit(1);
}
