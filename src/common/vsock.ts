// AF_VSOCK through koffi, shared by the host's agent dialer and the guest agent's listener: Node has no AF_VSOCK,
// so sockets are made, bound and connected through libc, then handed to libuv as plain fds.
// koffi is loaded on first use: most processes never touch vsock.
import { createRequire } from 'node:module';

export const AF_VSOCK = 40;
const SOCK_STREAM = 1;
const SOCK_CLOEXEC = 0o2000000;
/** Bind to any CID: the guest's own, whatever the host gave it. */
export const VMADDR_CID_ANY = 0xffffffff;

interface VsockLibc {
  socket(domain: number, type: number, protocol: number): number;
  bind(fd: number, addr: Buffer, len: number): number;
  /** Runs on koffi's worker thread: connecting may block until the guest answers. */
  connect(fd: number, addr: Buffer, len: number): Promise<number>;
  close(fd: number): number;
  errno(): number;
}

let bound: VsockLibc | undefined;
export function vsockLibc(): VsockLibc {
  if (bound) return bound;
  const koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi');
  const lib = koffi.load('libc.so.6');
  const socket = lib.func('int socket(int, int, int)');
  const bind = lib.func('int bind(int, const void *, uint32_t)');
  const connect = lib.func('int connect(int, const void *, uint32_t)');
  const close = lib.func('int close(int)');
  bound = {
    socket: (d, t, p) => socket(d, t, p) as number,
    bind: (fd, a, l) => bind(fd, a, l) as number,
    connect: (fd, a, l) =>
      new Promise((resolve, reject) =>
        connect.async(fd, a, l, (err: unknown, rc: number) => (err ? reject(err) : resolve(rc))),
      ),
    close: (fd) => close(fd) as number,
    errno: () => koffi.errno(),
  };
  return bound;
}

/** A new AF_VSOCK stream socket; `what` names it in the error. */
export function vsockSocket(what: string): number {
  const c = vsockLibc();
  const fd = c.socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw new Error(`${what}: socket(AF_VSOCK) failed with errno ${c.errno()}`);
  return fd;
}

/** struct sockaddr_vm: family u16, reserved u16, port u32, cid u32, flags u8, zero[3]. */
export function sockaddrVm(cid: number, port: number): Buffer {
  const sa = Buffer.alloc(16);
  sa.writeUInt16LE(AF_VSOCK, 0);
  sa.writeUInt32LE(port >>> 0, 4);
  sa.writeUInt32LE(cid >>> 0, 8);
  return sa;
}
