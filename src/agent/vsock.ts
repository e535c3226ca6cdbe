// The agent's AF_VSOCK listener (Kata's default channel, port 1024). Node has no AF_VSOCK: the socket is made
// and bound through koffi, then libuv accepts on it and each connection becomes a net.Socket.
import { createRequire } from 'node:module';
import type net from 'node:net';
import { listenOnFd } from './channel.js';

const AF_VSOCK = 40;
const SOCK_STREAM = 1;
const SOCK_CLOEXEC = 0o2000000;
/** Bind to any CID: the guest's own, whatever the host gave it. */
export const VMADDR_CID_ANY = 0xffffffff;

interface VsockLibc {
  socket(domain: number, type: number, protocol: number): number;
  bind(fd: number, addr: Buffer, len: number): number;
  close(fd: number): number;
  errno(): number;
}

let bound: VsockLibc | undefined;
function libc(): VsockLibc {
  if (bound) return bound;
  const koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi');
  const lib = koffi.load('libc.so.6');
  const socket = lib.func('int socket(int, int, int)');
  const bind = lib.func('int bind(int, const void *, uint32_t)');
  const close = lib.func('int close(int)');
  bound = {
    socket: (d, t, p) => socket(d, t, p) as number,
    bind: (fd, a, l) => bind(fd, a, l) as number,
    close: (fd) => close(fd) as number,
    errno: () => koffi.errno(),
  };
  return bound;
}

/** struct sockaddr_vm: family u16, reserved u16, port u32, cid u32, flags u8, zero[3]. */
export function sockaddrVm(cid: number, port: number): Buffer {
  const sa = Buffer.alloc(16);
  sa.writeUInt16LE(AF_VSOCK, 0);
  sa.writeUInt32LE(port >>> 0, 4);
  sa.writeUInt32LE(cid >>> 0, 8);
  return sa;
}

export interface VsockListener {
  port: number;
  close(): void;
}

/** Listens on AF_VSOCK `port` for any CID; each accepted connection goes to onConnection. */
export function listenVsock(
  port: number,
  onConnection: (sock: net.Socket) => void,
  onError: (err: Error) => void,
): VsockListener {
  const c = libc();
  const fd = c.socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw new Error(`vsock port ${port}: socket(AF_VSOCK) failed with errno ${c.errno()}`);
  if (c.bind(fd, sockaddrVm(VMADDR_CID_ANY, port), 16) !== 0) {
    const errno = c.errno();
    c.close(fd);
    throw new Error(`vsock port ${port}: bind failed with errno ${errno}`);
  }
  // From here the listener owns the fd.
  const srv = listenOnFd(fd, `vsock port ${port}`, onConnection, onError);
  return { port, close: () => srv.close() };
}
