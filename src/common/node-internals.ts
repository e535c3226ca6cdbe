// The only place that reaches below Node's public API. Each use has no public equivalent (said per function);
// test/unit/node-internals.test.ts exercises every one, so a Node upgrade that moves them fails loudly there
// rather than in a VM.
import fs from 'node:fs';
import net from 'node:net';
import type tty from 'node:tty';

// libuv's pipe handle works on any pollable stream fd; net.Socket({ fd }) accepts only what uv_guess_handle
// classifies as TCP or a unix socket, so a virtio-serial char device or an AF_VSOCK socket is
// ERR_INVALID_FD_TYPE there. net itself is built on this binding.
interface PipeHandle {
  open(fd: number): number;
  listen(backlog: number): number;
  close(cb?: () => void): void;
  onconnection: ((status: number, client: PipeHandle | undefined) => void) | null;
}
interface PipeWrapBinding {
  Pipe: new (type: number) => PipeHandle;
  constants: { SOCKET: number; SERVER: number };
}

function pipeWrap(): PipeWrapBinding {
  const proc = process as unknown as { binding(name: 'pipe_wrap'): PipeWrapBinding };
  const b = proc.binding('pipe_wrap');
  if (typeof b?.Pipe !== 'function' || typeof b.constants?.SOCKET !== 'number')
    throw new Error(`process.binding('pipe_wrap') has changed shape in Node ${process.version}`);
  return b;
}

function socketOn(handle: PipeHandle): net.Socket {
  return new net.Socket({ handle, readable: true, writable: true } as net.SocketConstructorOpts);
}

/** Wraps an open, pollable fd (char device or connected socket) into a net.Socket that owns it (even on failure). */
export function streamFromFd(fd: number, what: string): net.Socket {
  const { Pipe, constants } = pipeWrap();
  const handle = new Pipe(constants.SOCKET);
  const rc = handle.open(fd);
  if (rc !== 0) {
    fs.closeSync(fd);
    throw new Error(`wrapping fd ${fd} (${what}) in a stream: libuv error ${rc}`);
  }
  return socketOn(handle);
}

/**
 * Listens on an already bound stream-socket fd; each accepted connection becomes a net.Socket. Takes ownership
 * of the fd: it is closed on failure and by close(). (net.Server.listen({ fd }) has the same type check.)
 */
export function listenOnFd(
  fd: number,
  what: string,
  onConnection: (sock: net.Socket) => void,
  onError: (err: Error) => void,
): { close(): void } {
  const { Pipe, constants } = pipeWrap();
  const handle = new Pipe(constants.SERVER);
  let rc = handle.open(fd);
  if (rc !== 0) {
    fs.closeSync(fd);
    throw new Error(`wrapping listening fd ${fd} (${what}): libuv error ${rc}`);
  }
  handle.onconnection = (status, client) => {
    if (status !== 0 || !client) {
      onError(new Error(`accepting a connection on ${what}: libuv error ${status}`));
      return;
    }
    onConnection(socketOn(client));
  };
  rc = handle.listen(128);
  if (rc !== 0) {
    handle.close();
    throw new Error(`listening on ${what}: libuv error ${rc}`);
  }
  return { close: () => handle.close() };
}

/**
 * The listening fd under a net.Server, to hand to a child process as its inherited socket (the shim v2
 * start/serve split). Node passes servers only over its own IPC channel, which containerd's shim is not.
 */
export function serverFd(srv: net.Server): number {
  const fd = (srv as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0)
    throw new Error(`cannot read the fd of a listening net.Server in Node ${process.version}`);
  return fd;
}

/**
 * Makes a tty.WriteStream's fd non-blocking again: the constructor sets it blocking (right for a local
 * terminal), wrong for a pty master whose reader shares the event loop. There is no public setter.
 */
export function setTtyWriterNonBlocking(writer: tty.WriteStream): void {
  const handle = (writer as unknown as { _handle?: { setBlocking?(b: boolean): number } })._handle;
  if (typeof handle?.setBlocking !== 'function')
    throw new Error(`tty.WriteStream has no _handle.setBlocking in Node ${process.version}`);
  const rc = handle.setBlocking(false);
  if (rc !== 0) throw new Error(`making a tty writer non-blocking: libuv error ${rc}`);
}
