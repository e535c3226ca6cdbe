// Host side of the vsock agent channel: Node has no AF_VSOCK, so the socket is made and connected through koffi
// (connect runs on koffi's worker thread), then libuv wraps the connected fd as a stream for the ttrpc client.
// Loaded lazily: only sandboxes on hosts with /dev/vhost-vsock need it. Not testable on hosts without vhost-vsock.
import fs from 'node:fs';
import net from 'node:net';
import { sockaddrVm, vsockLibc, vsockSocket } from '../common/vsock.js';
import { TtrpcClient } from '../protocols/ttrpc/index.js';

interface PipeHandle {
  open(fd: number): number;
}
interface PipeWrap {
  Pipe: new (type: number) => PipeHandle;
  constants: { SOCKET: number };
}

/** A ttrpc client on a vsock connection to cid:port. */
export async function dialVsock(cid: number, port: number): Promise<TtrpcClient> {
  const c = vsockLibc();
  const fd = vsockSocket(`vsock ${cid}:${port}`);
  // errno is per thread; the async call's is lost, so a failure is reported without it.
  if ((await c.connect(fd, sockaddrVm(cid, port), 16)) !== 0) {
    c.close(fd);
    throw new Error(`vsock ${cid}:${port}: connect failed (guest not listening yet?)`);
  }
  const { Pipe, constants } = (process as unknown as { binding(n: 'pipe_wrap'): PipeWrap }).binding(
    'pipe_wrap',
  );
  const handle = new Pipe(constants.SOCKET);
  if (handle.open(fd) !== 0) {
    fs.closeSync(fd);
    throw new Error(`vsock ${cid}:${port}: wrapping the connected fd failed`);
  }
  const sock = new net.Socket({ handle, readable: true, writable: true } as net.SocketConstructorOpts);
  return new TtrpcClient(sock, { peer: `agent (vsock ${cid}:${port})` });
}
