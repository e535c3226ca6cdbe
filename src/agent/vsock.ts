// The agent's AF_VSOCK listener (Kata's default channel, port 1024). Node has no AF_VSOCK: the socket is made
// and bound through koffi, then libuv accepts on it and each connection becomes a net.Socket.
import type net from 'node:net';
import { VMADDR_CID_ANY, sockaddrVm, vsockLibc, vsockSocket } from '../common/vsock.js';
import { listenOnFd } from './channel.js';

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
  const c = vsockLibc();
  const fd = vsockSocket(`vsock port ${port}`);
  if (c.bind(fd, sockaddrVm(VMADDR_CID_ANY, port), 16) !== 0) {
    const errno = c.errno();
    c.close(fd);
    throw new Error(`vsock port ${port}: bind failed with errno ${errno}`);
  }
  // From here the listener owns the fd.
  const srv = listenOnFd(fd, `vsock port ${port}`, onConnection, onError);
  return { port, close: () => srv.close() };
}
