// Host side of the vsock agent channel: Node has no AF_VSOCK, so the socket is made and connected through the
// host's libc binding (connect runs on koffi's worker thread), then libuv wraps the connected fd as a stream for
// the ttrpc client. Only sandboxes on hosts with /dev/vhost-vsock use it; not testable on hosts without it.
import { streamFromFd } from '../common/node-internals.js';
import { AF_VSOCK, sockaddrVm } from '../common/vsock.js';
import { check, libc } from '../native/libc.js';
import { TtrpcClient } from '../protocols/ttrpc/index.js';

const SOCK_STREAM = 1;
const SOCK_CLOEXEC = 0o2000000;

/** A ttrpc client on a vsock connection to cid:port. */
export async function dialVsock(cid: number, port: number): Promise<TtrpcClient> {
  const c = libc();
  const what = `vsock ${cid}:${port}`;
  const fd = check(c.socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0), `${what}: socket(AF_VSOCK)`);
  // errno is per thread; the async call's is lost, so a failure is reported without it.
  if ((await c.connectAsync(fd, sockaddrVm(cid, port), 16)) !== 0) {
    c.close(fd);
    throw new Error(`${what}: connect failed (guest not listening yet?)`);
  }
  return new TtrpcClient(streamFromFd(fd, what), { peer: `agent (${what})` });
}
