// The agent's AF_VSOCK listener (Kata's default channel, port 1024). Node has no AF_VSOCK: the socket is made
// and bound through libc (native.ts), then libuv accepts on it and each connection becomes a net.Socket.
import type net from 'node:net';
import { listenOnFd } from '../common/node-internals.js';
import { bindVsock } from './native.js';

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
  const fd = bindVsock(port);
  // From here the listener owns the fd.
  const srv = listenOnFd(fd, `vsock port ${port}`, onConnection, onError);
  return { port, close: () => srv.close() };
}
