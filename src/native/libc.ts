// The host's one libc binding (koffi): every host-side system call Node lacks is declared here, typed, and
// bound on first use (loading koffi costs 20-35 ms; `shim start` and `shim delete` never need it). Callers get
// raw return values and `errno()`, and report failures with SyscallError, so errno is named one way everywhere.
import { createRequire } from 'node:module';
import util from 'node:util';
import type Koffi from 'koffi';

const require = createRequire(import.meta.url);
let koffiModule: typeof Koffi | undefined;

function koffi(): typeof Koffi {
  koffiModule ??= require('koffi') as typeof Koffi;
  return koffiModule;
}

/** Where koffi lives, for a worker thread that must bind libc itself (netns.ts: setns moves only its thread). */
export function koffiPath(): string {
  return require.resolve('koffi');
}

export interface MountAttr {
  attr_set: bigint;
  attr_clr: bigint;
  propagation: bigint;
  userns_fd: bigint;
}

export interface MsgHdr {
  name: null;
  namelen: number;
  iov: { base: Buffer; len: number }[];
  iovlen: number;
  control: Buffer;
  controllen: number;
  flags: number;
}

/** The new mount API; absent on glibc < 2.36. */
export interface NewMountApi {
  openTree(dfd: number, path: string, flags: number): number;
  mountSetattr(dfd: number, path: string, flags: number, attr: MountAttr, size: number): number;
  moveMount(fromFd: number, fromPath: string, toFd: number, toPath: string, flags: number): number;
}

export interface HostLibc {
  mount(src: string | null, tgt: string, fstype: string | null, flags: number, data: string | null): number;
  umount2(tgt: string, flags: number): number;
  newMountApi: NewMountApi | undefined;
  socket(domain: number, type: number, protocol: number): number;
  connect(fd: number, addr: Buffer, len: number): number;
  /** connect(2) on koffi's worker thread, for a peer that may take long to answer (vsock). errno is lost. */
  connectAsync(fd: number, addr: Buffer, len: number): Promise<number>;
  sendmsg(fd: number, msg: MsgHdr, flags: number): number;
  flock(fd: number, operation: number): number;
  close(fd: number): number;
  strerror(errno: number): string;
  /** errno of the last call made on this thread. */
  errno(): number;
}

let bound: HostLibc | undefined;

export function libc(): HostLibc {
  if (bound) return bound;
  const k = koffi();
  const lib = k.load('libc.so.6');
  // Anonymous struct types: a named koffi type is process-global, and tests may evaluate this module twice.
  const iovec = k.struct({ base: 'void *', len: 'size_t' });
  const msghdr = k.struct({
    name: 'void *',
    namelen: 'uint32',
    iov: k.pointer(iovec),
    iovlen: 'size_t',
    control: 'void *',
    controllen: 'size_t',
    flags: 'int',
  });
  const mountAttr = k.struct({
    attr_set: 'uint64',
    attr_clr: 'uint64',
    propagation: 'uint64',
    userns_fd: 'uint64',
  });
  const sendmsg = lib.func('sendmsg', 'long', ['int', k.pointer(msghdr), 'int']);
  const connect = lib.func('int connect(int, const uint8_t *, uint32)');
  bound = {
    mount: lib.func('int mount(const char *, const char *, const char *, unsigned long, const char *)'),
    umount2: lib.func('int umount2(const char *, int)'),
    newMountApi: bindNewMountApi(lib, k, mountAttr),
    socket: lib.func('int socket(int, int, int)'),
    connect,
    connectAsync: (fd, addr, len) =>
      new Promise((resolve, reject) =>
        connect.async(fd, addr, len, (err: unknown, rc: number) => (err ? reject(err) : resolve(rc))),
      ),
    sendmsg: (fd, msg, flags) => Number(sendmsg(fd, msg, flags)),
    flock: lib.func('int flock(int, int)'),
    close: lib.func('int close(int)'),
    strerror: lib.func('const char *strerror(int)'),
    errno: () => k.errno(),
  };
  return bound;
}

function bindNewMountApi(
  lib: Koffi.IKoffiLib,
  k: typeof Koffi,
  mountAttr: Koffi.IKoffiCType,
): NewMountApi | undefined {
  try {
    return {
      openTree: lib.func('int open_tree(int, const char *, unsigned int)'),
      mountSetattr: lib.func('mount_setattr', 'int', [
        'int',
        'const char *',
        'unsigned int',
        k.pointer(mountAttr),
        'size_t',
      ]),
      moveMount: lib.func('int move_mount(int, const char *, int, const char *, unsigned int)'),
    };
  } catch {
    return undefined; // glibc < 2.36 has no wrappers
  }
}

/** ENOENT, EBUSY, ... (or E<n> for a number Node does not name). */
export function errnoName(errno: number): string {
  try {
    return util.getSystemErrorName(-errno);
  } catch {
    return `E${errno}`;
  }
}

/** A failed system call: the message names what was being done and the errno; `code` is its name. */
export class SyscallError extends Error {
  readonly code: string;
  constructor(
    what: string,
    readonly errno: number,
  ) {
    const code = errnoName(errno);
    super(`${what}: ${code} (${errno ? libc().strerror(errno) : 'failed'})`);
    this.name = 'SyscallError';
    this.code = code;
  }
}

/** Throws SyscallError(what, errno) when a libc call returned < 0; else returns the value. */
export function check(ret: number, what: string): number {
  if (ret < 0) throw new SyscallError(what, libc().errno());
  return ret;
}

export function closeFd(fd: number): void {
  check(libc().close(fd), `close fd ${fd}`);
}
