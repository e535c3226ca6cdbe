// The guest agent's one libc binding (koffi): every system call the agent makes that Node lacks is declared here,
// typed, and wrapped. koffi is required on first use, so a host test that imports an agent module loads nothing,
// and the V8 startup snapshot (src/image/snapshot.ts) holds no native state. Failures are SyscallErrors.
import { createRequire } from 'node:module';
import os from 'node:os';
import util from 'node:util';
import type Koffi from 'koffi';
import { AF_VSOCK, VMADDR_CID_ANY, sockaddrVm } from '../common/vsock.js';

/** The libc calls as bound: raw return values (negative: see errno()), one TS signature per C prototype. */
interface GuestLibc {
  prctl(option: number, arg2: number, arg3: number, arg4: number, arg5: number): number;
  waitid(idtype: number, id: number, info: Buffer, options: number): number;
  /** `status` is an out-parameter: koffi writes the exit status into status[0]. */
  waitpid(pid: number, status: number[], options: number): number;
  pipe2(fds: number[], flags: number): number;
  close(fd: number): number;
  fcntlInt(fd: number, cmd: number, arg: number): number;
  ioctlInt(fd: number, request: number, arg: number): number;
  ioctlPtr(fd: number, request: number, arg: Buffer): number;
  socket(domain: number, type: number, protocol: number): number;
  bind(fd: number, addr: Buffer, len: number): number;
  listen(fd: number, backlog: number): number;
  accept4(fd: number, addr: null, len: null, flags: number): number;
  recvmsg(fd: number, msg: Buffer, flags: number): number | bigint;
  mount(source: string, target: string, fstype: string | null, flags: number, data: string | null): number;
  umount2(target: string, flags: number): number;
  sethostname(name: string, len: number): number;
  settimeofday(tv: Buffer, tz: null): number;
  /** syscall(SYS_finit_module, fd, params, flags): glibc has no wrapper. */
  finitModule(fd: number, params: string, flags: number): number;
  /** The same on koffi's worker thread (the kernel links a module for ~0.5 s under TCG). errno is that thread's. */
  finitModuleAsync(fd: number, params: string, flags: number): Promise<number>;
  sync(): void;
  tcdrain(fd: number): number;
  reboot(cmd: number): number;
  /** errno of the last call made on this thread. */
  errno(): number;
  /** A buffer's address, for structs that point at other buffers (msghdr → iovec → data). */
  address(buf: Buffer): bigint;
}

const FINIT_MODULE_SYSCALL: Readonly<Record<string, number>> = { x64: 313, arm64: 273 };

/** finit_module's syscall number on this CPU architecture (Node's process.arch names). */
export function finitModuleSyscall(arch: string = process.arch): number {
  const nr = FINIT_MODULE_SYSCALL[arch];
  if (nr === undefined) {
    const known = Object.keys(FINIT_MODULE_SYSCALL).join(', ');
    throw new Error(`finit_module: no syscall number known for architecture ${arch} (known: ${known})`);
  }
  return nr;
}

let bound: GuestLibc | undefined;

function libc(): GuestLibc {
  if (bound) return bound;
  const koffi = createRequire(import.meta.url)('koffi') as typeof Koffi;
  const lib = koffi.load('libc.so.6');
  // Variadic C functions take each extra argument's C type in koffi; the wrappers below fix them.
  const fcntl = lib.func('int fcntl(int, int, ...)');
  const ioctl = lib.func('int ioctl(int, unsigned long, ...)');
  // syscall(2) is variadic, but koffi runs only fixed prototypes on its worker threads. glibc's syscall() is
  // assembly that only moves registers, so this fixed form is the same call on x86-64 and aarch64.
  const syscall = lib.func('long syscall(long, int, const char *, int)');
  bound = {
    prctl: lib.func('int prctl(int, unsigned long, unsigned long, unsigned long, unsigned long)'),
    waitid: lib.func('int waitid(int, uint32, void *, int)'),
    waitpid: lib.func('int waitpid(int, _Out_ int *, int)'),
    pipe2: lib.func('int pipe2(_Out_ int *fds, int flags)'),
    close: lib.func('int close(int)'),
    fcntlInt: (fd, cmd, arg) => fcntl(fd, cmd, 'int', arg),
    ioctlInt: (fd, request, arg) => ioctl(fd, request, 'int', arg),
    ioctlPtr: (fd, request, arg) => ioctl(fd, request, 'void *', arg),
    socket: lib.func('int socket(int, int, int)'),
    bind: lib.func('int bind(int, void *, uint32)'),
    listen: lib.func('int listen(int, int)'),
    accept4: lib.func('int accept4(int, void *, void *, int)'),
    recvmsg: lib.func('intptr_t recvmsg(int, void *, int)'),
    mount: lib.func('int mount(const char *, const char *, const char *, unsigned long, const char *)'),
    umount2: lib.func('int umount2(const char *, int)'),
    sethostname: lib.func('int sethostname(const char *, size_t)'),
    settimeofday: lib.func('int settimeofday(void *, void *)'),
    finitModule: (fd, params, flags) => Number(syscall(finitModuleSyscall(), fd, params, flags)),
    finitModuleAsync: (fd, params, flags) =>
      new Promise((resolve, reject) => {
        syscall.async(finitModuleSyscall(), fd, params, flags, (err: unknown, rc: number | bigint) =>
          err ? reject(err) : resolve(Number(rc)),
        );
      }),
    sync: lib.func('void sync()'),
    tcdrain: lib.func('int tcdrain(int)'),
    reboot: lib.func('int reboot(int)'),
    errno: () => koffi.errno(),
    address: (buf) => koffi.address(buf),
  };
  return bound;
}

// ---- errors ----

const errnoNames = new Map<number, string>(Object.entries(os.constants.errno).map(([k, v]) => [v, k]));
/** libuv's description of each errno it knows (keyed by the negated errno), so no libc call is needed. */
const errnoTexts = util.getSystemErrorMap();

/** The errno's name (ENOENT, EBUSY, ...), or `errno N` for one Node does not name. */
export function errnoName(errno: number): string {
  return errnoNames.get(errno) ?? `errno ${errno}`;
}

/** An error from a failed system call: `code` is the errno name (ENOENT, EBUSY, ...), `what` the context. */
export class SyscallError extends Error {
  readonly code: string;
  constructor(
    readonly what: string,
    readonly errno: number,
  ) {
    const code = errnoName(errno);
    const text = errnoTexts.get(-errno)?.[1];
    super(text ? `${what}: ${code} (${text})` : `${what}: ${code}`);
    this.name = 'SyscallError';
    this.code = code;
  }
}

function check(ret: number, what: string): number {
  if (ret < 0) throw new SyscallError(what, libc().errno());
  return ret;
}

const PR_SET_CHILD_SUBREAPER = 36;
const P_ALL = 0;
const WNOHANG = 1;
const WEXITED = 4;
const WNOWAIT = 0x01000000;
const { ECHILD, EAGAIN, EINTR, EEXIST } = os.constants.errno;
const O_CLOEXEC = 0o2000000;
const F_DUPFD_CLOEXEC = 1030;
const F_SETPIPE_SZ = 1031;
const F_GETPIPE_SZ = 1032;
const TIOCSWINSZ = 0x5414;
const AF_UNIX = 1;
const AF_INET = 2;
const SOCK_STREAM = 1;
const SOCK_DGRAM = 2;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const MSG_CMSG_CLOEXEC = 0x40000000;
const SOL_SOCKET = 1;
const SCM_RIGHTS = 1;
const SIOCGIFFLAGS = 0x8913;
const SIOCSIFFLAGS = 0x8914;
const IFF_UP = 0x1;
const LINUX_REBOOT_CMD_POWER_OFF = 0x4321fedc;

// ---- processes ----

/** Makes orphaned descendants (container processes whose runtime exited) reparent to this process. */
export function setChildSubreaper(): void {
  check(libc().prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), 'prctl(PR_SET_CHILD_SUBREAPER)');
}

/** The pid of some exited child, left waitable (WNOWAIT); 0 when none has exited. */
export function peekExitedChild(): number {
  const c = libc();
  const info = Buffer.alloc(128);
  if (c.waitid(P_ALL, 0, info, WEXITED | WNOHANG | WNOWAIT) < 0) {
    const e = c.errno();
    if (e === ECHILD || e === EINTR) return 0;
    throw new SyscallError('waitid(P_ALL)', e);
  }
  return info.readInt32LE(16); // siginfo_t.si_pid
}

export type ReapResult = { state: 'running' } | { state: 'gone' } | { state: 'exited'; status: number };

/** Non-blocking waitpid on one pid; 'gone' when it is not (or no longer) our child. */
export function reapPid(pid: number): ReapResult {
  const c = libc();
  const status = [0];
  for (;;) {
    const ret = c.waitpid(pid, status, WNOHANG);
    if (ret === 0) return { state: 'running' };
    if (ret > 0) return { state: 'exited', status: status[0] ?? 0 };
    const e = c.errno();
    if (e === EINTR) continue;
    if (e === ECHILD) return { state: 'gone' };
    throw new SyscallError(`waitpid(${pid})`, e);
  }
}

// ---- file descriptors ----

/** A pipe whose both ends are close-on-exec (spawn's stdio mapping clears it on the child's copy). */
export function pipe(): { read: number; write: number } {
  const fds = [0, 0];
  check(libc().pipe2(fds, O_CLOEXEC), 'pipe2');
  return { read: fds[0] ?? -1, write: fds[1] ?? -1 };
}

/** Resizes a pipe's kernel buffer (F_SETPIPE_SZ); returns the size the kernel chose (a page multiple). */
export function setPipeSize(fd: number, bytes: number): number {
  return check(libc().fcntlInt(fd, F_SETPIPE_SZ, bytes), `F_SETPIPE_SZ(${fd}, ${bytes})`);
}

/** A pipe's kernel buffer size (F_GETPIPE_SZ). */
export function pipeSize(fd: number): number {
  return check(libc().fcntlInt(fd, F_GETPIPE_SZ, 0), `F_GETPIPE_SZ(${fd})`);
}

export function closeFd(fd: number): void {
  const c = libc();
  if (c.close(fd) < 0) {
    const e = c.errno();
    if (e !== EINTR) throw new SyscallError(`close(${fd})`, e);
  }
}

/** A close-on-exec duplicate of fd. */
export function dupFd(fd: number): number {
  return check(libc().fcntlInt(fd, F_DUPFD_CLOEXEC, 0), `dup(${fd})`);
}

/** Sets a terminal's window size (TIOCSWINSZ on the pty master). */
export function setWindowSize(fd: number, rows: number, cols: number): void {
  const ws = Buffer.alloc(8);
  ws.writeUInt16LE(rows & 0xffff, 0);
  ws.writeUInt16LE(cols & 0xffff, 2);
  check(libc().ioctlPtr(fd, TIOCSWINSZ, ws), `ioctl(TIOCSWINSZ) on fd ${fd}`);
}

/** An ioctl that takes no argument (e.g. RNDRESEEDCRNG). */
export function ioctlNoArg(fd: number, request: number, what: string): void {
  check(libc().ioctlInt(fd, request, 0), what);
}

// ---- sockets ----

/** A non-blocking listening unix socket (for crun's --console-socket). */
export function listenUnix(path: string): number {
  const c = libc();
  const addr = Buffer.alloc(110);
  if (Buffer.byteLength(path) > 107) throw new Error(`unix socket path too long (${path})`);
  addr.writeUInt16LE(AF_UNIX, 0);
  addr.write(path, 2);
  const fd = boundSocket(AF_UNIX, SOCK_NONBLOCK, addr, `unix socket ${path}`);
  try {
    check(c.listen(fd, 4), `listen(${path})`);
  } catch (e) {
    closeFd(fd);
    throw e;
  }
  return fd;
}

/** A close-on-exec stream socket of `domain` bound to addr; closed again if binding fails. */
function boundSocket(domain: number, flags: number, addr: Buffer, what: string): number {
  const c = libc();
  const fd = check(c.socket(domain, SOCK_STREAM | SOCK_CLOEXEC | flags, 0), `${what}: socket`);
  try {
    check(c.bind(fd, addr, addr.length), `${what}: bind`);
  } catch (e) {
    closeFd(fd);
    throw e;
  }
  return fd;
}

/** An AF_VSOCK stream socket bound to `port` for any CID; the caller listens on it (libuv does, via its fd). */
export function bindVsock(port: number): number {
  return boundSocket(AF_VSOCK, 0, sockaddrVm(VMADDR_CID_ANY, port), `vsock port ${port}`);
}

/** accept4 without blocking: the connection's fd, or -1 when nobody is waiting. */
export function tryAccept(fd: number): number {
  const c = libc();
  const ret = c.accept4(fd, null, null, SOCK_CLOEXEC | SOCK_NONBLOCK);
  if (ret >= 0) return ret;
  const e = c.errno();
  if (e === EAGAIN || e === EINTR) return -1;
  throw new SyscallError('accept4', e);
}

/**
 * Receives one file descriptor passed with SCM_RIGHTS, without blocking.
 * Returns the fd, -1 if nothing arrived yet, or throws when the peer closed without sending one.
 */
export function tryReceiveFd(sock: number): number {
  const c = libc();
  const data = Buffer.alloc(4096);
  const control = Buffer.alloc(64);
  const iov = Buffer.alloc(16);
  iov.writeBigUInt64LE(c.address(data), 0);
  iov.writeBigUInt64LE(BigInt(data.length), 8);
  // struct msghdr on LP64: name(8) namelen(4)+pad(4) iov(8) iovlen(8) control(8) controllen(8) flags(4)+pad
  const msg = Buffer.alloc(56);
  msg.writeBigUInt64LE(c.address(iov), 16);
  msg.writeBigUInt64LE(1n, 24);
  msg.writeBigUInt64LE(c.address(control), 32);
  msg.writeBigUInt64LE(BigInt(control.length), 40);
  const n = Number(c.recvmsg(sock, msg, MSG_CMSG_CLOEXEC));
  if (n < 0) {
    const e = c.errno();
    if (e === EAGAIN || e === EINTR) return -1;
    throw new SyscallError('recvmsg', e);
  }
  const controlLen = Number(msg.readBigUInt64LE(40));
  // struct cmsghdr: len(8) level(4) type(4) data
  if (controlLen >= 20 && control.readInt32LE(8) === SOL_SOCKET && control.readInt32LE(12) === SCM_RIGHTS) {
    return control.readInt32LE(16);
  }
  if (n === 0) throw new Error('console socket peer closed without sending a file descriptor');
  throw new Error(`console socket message of ${n} bytes carried no file descriptor`);
}

/** Brings a network interface up (SIOCSIFFLAGS |= IFF_UP), as `ip link set up` does. */
export function linkUp(ifname: string): void {
  const c = libc();
  const fd = check(c.socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), `bringing ${ifname} up: socket`);
  try {
    const ifr = Buffer.alloc(40); // struct ifreq: name[16], then a union whose first short is ifr_flags
    ifr.write(ifname, 0, 15, 'latin1');
    check(c.ioctlPtr(fd, SIOCGIFFLAGS, ifr), `bringing ${ifname} up: SIOCGIFFLAGS`);
    ifr.writeUInt16LE(ifr.readUInt16LE(16) | IFF_UP, 16);
    check(c.ioctlPtr(fd, SIOCSIFFLAGS, ifr), `bringing ${ifname} up: SIOCSIFFLAGS`);
  } finally {
    c.close(fd);
  }
}

// ---- mounts ----

export function mount(source: string, target: string, fstype: string, flags: number, data: string): void {
  check(
    libc().mount(source, target, fstype || null, flags, data || null),
    `mount ${source} on ${target} (type ${fstype || 'none'}, flags 0x${flags.toString(16)}, data '${data}')`,
  );
}

export const MNT_DETACH = 2;

export function umount(target: string, flags = 0): void {
  check(libc().umount2(target, flags), `umount ${target}`);
}

// ---- kernel modules ----

/** Inserts the module open at fd (finit_module); 'exists' when the kernel already has it (EEXIST). */
export function finitModule(fd: number, what: string): 'loaded' | 'exists' {
  const c = libc();
  if (c.finitModule(fd, '', 0) === 0) return 'loaded';
  const e = c.errno();
  if (e === EEXIST) return 'exists';
  throw new SyscallError(what, e);
}

/**
 * finit_module on a koffi worker thread, so the event loop keeps serving while the kernel links the module.
 * Resolves with the raw return value: errno stays on that thread, so the caller checks the outcome otherwise.
 */
export function finitModuleInBackground(fd: number): Promise<number> {
  return libc().finitModuleAsync(fd, '', 0);
}

// ---- the machine ----

export function setHostname(name: string): void {
  check(libc().sethostname(name, Buffer.byteLength(name)), `sethostname(${name})`);
}

export function setTimeOfDay(sec: bigint, usec: bigint): void {
  const tv = Buffer.alloc(16);
  tv.writeBigInt64LE(sec, 0);
  tv.writeBigInt64LE(usec, 8);
  check(libc().settimeofday(tv, null), `settimeofday(${sec}.${usec})`);
}

/** sync(2): every filesystem's dirty data written out. */
export function syncFilesystems(): void {
  libc().sync();
}

/**
 * Drains the console (stdout, stderr), syncs the filesystems and powers the machine off. Returns only when
 * reboot(2) failed, with that error.
 */
export function syncAndPowerOff(): SyscallError {
  const c = libc();
  // tcdrain fails (ENOTTY) when stdout is not a terminal: nothing to drain then.
  c.tcdrain(1);
  c.tcdrain(2);
  c.sync();
  c.reboot(LINUX_REBOOT_CMD_POWER_OFF);
  return new SyscallError('reboot(POWER_OFF)', c.errno());
}
