// Thin, typed wrappers over the libc calls the agent needs and Node lacks (koffi FFI).
// libc is loaded lazily so modules that import this file stay usable where it is never called.
import os from 'node:os';
import koffi from 'koffi';

type Fn = (...args: unknown[]) => unknown;

interface Libc {
  prctl: Fn;
  waitid: Fn;
  waitpid: Fn;
  pipe2: Fn;
  close: Fn;
  fcntl: Fn;
  ioctl: Fn;
  socket: Fn;
  bind: Fn;
  listen: Fn;
  accept4: Fn;
  recvmsg: Fn;
  mount: Fn;
  umount2: Fn;
  sethostname: Fn;
  settimeofday: Fn;
  strerror: Fn;
}

let lib: Libc | undefined;

function libc(): Libc {
  if (lib) return lib;
  const l = koffi.load('libc.so.6');
  const f = (decl: string): Fn => l.func(decl) as Fn;
  lib = {
    prctl: f('int prctl(int, unsigned long, unsigned long, unsigned long, unsigned long)'),
    waitid: f('int waitid(int, uint32, void *, int)'),
    waitpid: f('int waitpid(int, _Out_ int *, int)'),
    pipe2: f('int pipe2(_Out_ int *fds, int flags)'),
    close: f('int close(int)'),
    fcntl: f('int fcntl(int, int, ...)'),
    ioctl: f('int ioctl(int, unsigned long, ...)'),
    socket: f('int socket(int, int, int)'),
    bind: f('int bind(int, void *, uint32)'),
    listen: f('int listen(int, int)'),
    accept4: f('int accept4(int, void *, void *, int)'),
    recvmsg: f('intptr_t recvmsg(int, void *, int)'),
    mount: f('int mount(const char *, const char *, const char *, unsigned long, const char *)'),
    umount2: f('int umount2(const char *, int)'),
    sethostname: f('int sethostname(const char *, size_t)'),
    settimeofday: f('int settimeofday(void *, void *)'),
    strerror: f('const char *strerror(int)'),
  };
  return lib;
}

const errnoNames = new Map<number, string>(Object.entries(os.constants.errno).map(([k, v]) => [v, k]));

/** An error from a failed system call: `code` is the errno name (ENOENT, EBUSY, ...). */
export class SyscallError extends Error {
  readonly code: string;
  constructor(
    readonly what: string,
    readonly errno: number,
  ) {
    const code = errnoNames.get(errno) ?? `errno ${errno}`;
    super(`${what}: ${code} (${String(libc().strerror(errno))})`);
    this.name = 'SyscallError';
    this.code = code;
  }
}

function lastErrno(): number {
  return koffi.errno();
}

function check(ret: unknown, what: string): number {
  const n = Number(ret);
  if (n < 0) throw new SyscallError(what, lastErrno());
  return n;
}

const PR_SET_CHILD_SUBREAPER = 36;
const P_ALL = 0;
const WNOHANG = 1;
const WEXITED = 4;
const WNOWAIT = 0x01000000;
const ECHILD = os.constants.errno.ECHILD;
const EAGAIN = os.constants.errno.EAGAIN;
const EINTR = os.constants.errno.EINTR;
const O_CLOEXEC = 0o2000000;
const F_DUPFD_CLOEXEC = 1030;
const TIOCSWINSZ = 0x5414;
const AF_UNIX = 1;
const SOCK_STREAM = 1;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const MSG_CMSG_CLOEXEC = 0x40000000;
const SOL_SOCKET = 1;
const SCM_RIGHTS = 1;

/** Makes orphaned descendants (container processes whose runtime exited) reparent to this process. */
export function setChildSubreaper(): void {
  check(libc().prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), 'prctl(PR_SET_CHILD_SUBREAPER)');
}

/** The pid of some exited child, left waitable (WNOWAIT); 0 when none has exited. */
export function peekExitedChild(): number {
  const info = Buffer.alloc(128);
  const ret = Number(libc().waitid(P_ALL, 0, info, WEXITED | WNOHANG | WNOWAIT));
  if (ret < 0) {
    const e = lastErrno();
    if (e === ECHILD || e === EINTR) return 0;
    throw new SyscallError('waitid(P_ALL)', e);
  }
  return info.readInt32LE(16); // siginfo_t.si_pid
}

export type ReapResult = { state: 'running' } | { state: 'gone' } | { state: 'exited'; status: number };

/** Non-blocking waitpid on one pid; 'gone' when it is not (or no longer) our child. */
export function reapPid(pid: number): ReapResult {
  const status = [0];
  for (;;) {
    const ret = Number(libc().waitpid(pid, status, WNOHANG));
    if (ret === 0) return { state: 'running' };
    if (ret > 0) return { state: 'exited', status: status[0]! };
    const e = lastErrno();
    if (e === EINTR) continue;
    if (e === ECHILD) return { state: 'gone' };
    throw new SyscallError(`waitpid(${pid})`, e);
  }
}

/** A pipe whose both ends are close-on-exec (spawn's stdio mapping clears it on the child's copy). */
export function pipe(): { read: number; write: number } {
  const fds = [0, 0];
  check(libc().pipe2(fds, O_CLOEXEC), 'pipe2');
  return { read: fds[0]!, write: fds[1]! };
}

export function closeFd(fd: number): void {
  const ret = Number(libc().close(fd));
  if (ret < 0) {
    const e = lastErrno();
    if (e !== EINTR) throw new SyscallError(`close(${fd})`, e);
  }
}

/** A close-on-exec duplicate of fd. */
export function dupFd(fd: number): number {
  return check(libc().fcntl(fd, F_DUPFD_CLOEXEC, 'int', 0), `dup(${fd})`);
}

/** Sets a terminal's window size (TIOCSWINSZ on the pty master). */
export function setWindowSize(fd: number, rows: number, cols: number): void {
  const ws = Buffer.alloc(8);
  ws.writeUInt16LE(rows & 0xffff, 0);
  ws.writeUInt16LE(cols & 0xffff, 2);
  check(libc().ioctl(fd, TIOCSWINSZ, 'void *', ws), `ioctl(TIOCSWINSZ) on fd ${fd}`);
}

/** A non-blocking listening unix socket (for crun's --console-socket). */
export function listenUnix(path: string): number {
  const addr = Buffer.alloc(110);
  if (Buffer.byteLength(path) > 107) throw new Error(`unix socket path too long (${path})`);
  addr.writeUInt16LE(AF_UNIX, 0);
  addr.write(path, 2);
  const fd = check(libc().socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), 'socket(AF_UNIX)');
  try {
    check(libc().bind(fd, addr, addr.length), `bind(${path})`);
    check(libc().listen(fd, 4), `listen(${path})`);
  } catch (e) {
    closeFd(fd);
    throw e;
  }
  return fd;
}

/** accept4 without blocking: the connection's fd, or -1 when nobody is waiting. */
export function tryAccept(fd: number): number {
  const ret = Number(libc().accept4(fd, null, null, SOCK_CLOEXEC | SOCK_NONBLOCK));
  if (ret >= 0) return ret;
  const e = lastErrno();
  if (e === EAGAIN || e === EINTR) return -1;
  throw new SyscallError('accept4', e);
}

/**
 * Receives one file descriptor passed with SCM_RIGHTS, without blocking.
 * Returns the fd, -1 if nothing arrived yet, or throws when the peer closed without sending one.
 */
export function tryReceiveFd(sock: number): number {
  const data = Buffer.alloc(4096);
  const control = Buffer.alloc(64);
  const iov = Buffer.alloc(16);
  iov.writeBigUInt64LE(koffi.address(data), 0);
  iov.writeBigUInt64LE(BigInt(data.length), 8);
  // struct msghdr on LP64: name(8) namelen(4)+pad(4) iov(8) iovlen(8) control(8) controllen(8) flags(4)+pad
  const msg = Buffer.alloc(56);
  msg.writeBigUInt64LE(koffi.address(iov), 16);
  msg.writeBigUInt64LE(1n, 24);
  msg.writeBigUInt64LE(koffi.address(control), 32);
  msg.writeBigUInt64LE(BigInt(control.length), 40);
  const n = Number(libc().recvmsg(sock, msg, MSG_CMSG_CLOEXEC));
  if (n < 0) {
    const e = lastErrno();
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

export function setHostname(name: string): void {
  check(libc().sethostname(name, Buffer.byteLength(name)), `sethostname(${name})`);
}

export function setTimeOfDay(sec: bigint, usec: bigint): void {
  const tv = Buffer.alloc(16);
  tv.writeBigInt64LE(sec, 0);
  tv.writeBigInt64LE(usec, 8);
  check(libc().settimeofday(tv, null), `settimeofday(${sec}.${usec})`);
}

/** An ioctl that takes no argument (e.g. RNDRESEEDCRNG). */
export function ioctlNoArg(fd: number, request: number, what: string): void {
  check(libc().ioctl(fd, request, 'int', 0), what);
}
