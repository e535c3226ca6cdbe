// Host side of the vsock agent channel: Node has no AF_VSOCK, so the socket is made and connected through koffi
// (connect runs on koffi's worker thread), then libuv wraps the connected fd as a stream for the ttrpc client.
// Loaded lazily: only sandboxes on hosts with /dev/vhost-vsock need it. Not testable on hosts without vhost-vsock.
import fs from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import { TtrpcClient } from '../protocols/ttrpc/index.js';

const AF_VSOCK = 40;
const SOCK_STREAM = 1;
const SOCK_CLOEXEC = 0o2000000;

interface Libc {
  socket(domain: number, type: number, protocol: number): number;
  connect(fd: number, addr: Buffer, len: number): Promise<number>;
  close(fd: number): number;
  errno(): number;
}

let bound: Libc | undefined;
function libc(): Libc {
  if (bound) return bound;
  const koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi');
  const lib = koffi.load('libc.so.6');
  const socket = lib.func('int socket(int, int, int)');
  const connect = lib.func('int connect(int, const void *, uint32_t)');
  const close = lib.func('int close(int)');
  bound = {
    socket: (d, t, p) => socket(d, t, p) as number,
    connect: (fd, a, l) =>
      new Promise((resolve, reject) =>
        connect.async(fd, a, l, (err: unknown, rc: number) => (err ? reject(err) : resolve(rc))),
      ),
    close: (fd) => close(fd) as number,
    errno: () => koffi.errno(),
  };
  return bound;
}

function sockaddrVm(cid: number, port: number): Buffer {
  const sa = Buffer.alloc(16);
  sa.writeUInt16LE(AF_VSOCK, 0);
  sa.writeUInt32LE(port >>> 0, 4);
  sa.writeUInt32LE(cid >>> 0, 8);
  return sa;
}

interface PipeHandle {
  open(fd: number): number;
}
interface PipeWrap {
  Pipe: new (type: number) => PipeHandle;
  constants: { SOCKET: number };
}

/** A ttrpc client on a vsock connection to cid:port. */
export async function dialVsock(cid: number, port: number): Promise<TtrpcClient> {
  const c = libc();
  const fd = c.socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw new Error(`vsock ${cid}:${port}: socket(AF_VSOCK) failed with errno ${c.errno()}`);
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
