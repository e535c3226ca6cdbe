// The network resource's system calls (through libc.ts): opening a tap inside a netns from a worker thread
// that setns(2)'d into it, and a unix socket made with socket()+connect() so that its fd can also carry
// SCM_RIGHTS (sendmsg). Node has no public API for either.
import { Worker } from 'node:worker_threads';
import { type MsgHdr, SyscallError, check, closeFd, koffiPath, libc } from './libc.js';

export { SyscallError, closeFd };

const AF_UNIX = 1;
const SOCK_STREAM = 1;
const SOCK_CLOEXEC = 0o2000000;
const MSG_DONTWAIT = 0x40;
const MSG_NOSIGNAL = 0x4000;
const SOL_SOCKET = 1;
const SCM_RIGHTS = 1;
export const EAGAIN = 11;

/** socket(AF_UNIX) + connect(path): a connected stream socket fd (blocking connect; unix sockets answer at once). */
export function unixConnect(path: string): number {
  const c = libc();
  const addr = Buffer.alloc(110); // struct sockaddr_un: sa_family_t + char sun_path[108]
  if (Buffer.byteLength(path) > 107) throw new Error(`unix socket path too long: ${path}`);
  addr.writeUInt16LE(AF_UNIX, 0);
  addr.write(path, 2, 'utf8');
  const fd = check(c.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), `socket for ${path}`);
  if (c.connect(fd, addr, addr.length) !== 0) {
    const errno = c.errno();
    c.close(fd);
    throw new SyscallError(`connect ${path}`, errno);
  }
  return fd;
}

/**
 * sendmsg(socketFd, payload) with `fds` attached as SCM_RIGHTS. Non-blocking: throws SyscallError with errno
 * EAGAIN when the socket buffer is full (the caller retries). Returns the number of payload bytes sent.
 */
export function sendWithFds(socketFd: number, payload: Buffer, fds: readonly number[]): number {
  const c = libc();
  const dataLen = 4 * fds.length;
  const space = 16 + ((dataLen + 7) & ~7); // CMSG_SPACE on 64-bit: cmsghdr is 16 bytes
  const control = Buffer.alloc(space);
  control.writeBigUInt64LE(BigInt(16 + dataLen), 0); // cmsg_len = CMSG_LEN
  control.writeInt32LE(SOL_SOCKET, 8);
  control.writeInt32LE(SCM_RIGHTS, 12);
  fds.forEach((fd, i) => control.writeInt32LE(fd, 16 + 4 * i));
  const msg: MsgHdr = {
    name: null,
    namelen: 0,
    iov: [{ base: payload, len: payload.length }],
    iovlen: 1,
    control,
    controllen: control.length,
    flags: 0,
  };
  return check(
    c.sendmsg(socketFd, msg, MSG_DONTWAIT | MSG_NOSIGNAL),
    `sendmsg with ${fds.length} fd(s) on fd ${socketFd}`,
  );
}

export interface OpenTapOptions {
  /** virtio-net header on the tap (what QEMU wants for offloads); default true */
  vnetHdr?: boolean;
  /** >1 opens a multiqueue tap with that many fds */
  queues?: number;
  /** per-call deadline; default 5 s */
  timeoutMs?: number;
}

export interface OpenedTap {
  /** the name the kernel gave */
  name: string;
  /** one fd per queue, valid in this process (a thread's netns does not scope fds) */
  fds: number[];
}

// The worker body is plain JS (a string, run with eval) so that it runs the same under vitest, tsx and the
// esbuild bundle; it binds its own few libc calls because a worker thread has its own module instances.
// setns(2) moves only the calling thread, so the main thread stays in the host netns; the
// tap is created in the target netns because /dev/net/tun is opened there, and the fds stay open after the
// worker thread exits. Not O_CLOEXEC-free: spawn() dup2's them into QEMU, which clears the flag on the copy.
const TAP_WORKER = `
const { workerData, parentPort } = require('node:worker_threads');
const koffi = require(workerData.koffiPath);
const lib = koffi.load('libc.so.6');
const open = lib.func('int open(const char *, int)');
const setns = lib.func('int setns(int, int)');
const ioctl = lib.func('int ioctl(int, unsigned long, _Inout_ uint8_t *)');
const close = lib.func('int close(int)');
const strerror = lib.func('const char *strerror(int)');
const fail = (what) => { const e = koffi.errno(); return { error: what + ': ' + strerror(e) + ' (errno ' + e + ')', errno: e }; };
function main() {
  const O_RDWR = 2, O_RDONLY = 0, O_CLOEXEC = 0o2000000, CLONE_NEWNET = 0x40000000, TUNSETIFF = 0x400454ca;
  const ns = open(workerData.netnsPath, O_RDONLY | O_CLOEXEC);
  if (ns < 0) return fail('open ' + workerData.netnsPath);
  const r = setns(ns, CLONE_NEWNET);
  const setnsErr = r !== 0 ? fail('setns ' + workerData.netnsPath) : undefined;
  close(ns);
  if (setnsErr) return setnsErr;
  const fds = [];
  let name = workerData.name;
  for (let q = 0; q < workerData.queues; q++) {
    const fd = open('/dev/net/tun', O_RDWR | O_CLOEXEC);
    if (fd < 0) { fds.forEach((f) => close(f)); return fail('open /dev/net/tun'); }
    const ifr = Buffer.alloc(40);
    ifr.write(name, 0, 15, 'latin1');
    ifr.writeUInt16LE(workerData.flags, 16);
    if (ioctl(fd, TUNSETIFF, ifr) !== 0) { const e = fail('TUNSETIFF ' + name); close(fd); fds.forEach((f) => close(f)); return e; }
    name = ifr.toString('latin1', 0, 16).replace(/\\0.*$/s, '');
    fds.push(fd);
  }
  return { name, fds };
}
parentPort.postMessage(main());
`;

const IFF_TAP = 0x2;
const IFF_NO_PI = 0x1000;
const IFF_VNET_HDR = 0x4000;
const IFF_MULTI_QUEUE = 0x100;

/** The TUNSETIFF flags for a tap (exported for tests). */
export function tapFlags(opts: OpenTapOptions): number {
  let f = IFF_TAP | IFF_NO_PI;
  if (opts.vnetHdr ?? true) f |= IFF_VNET_HDR;
  if ((opts.queues ?? 1) > 1) f |= IFF_MULTI_QUEUE;
  return f;
}

/**
 * Creates (or attaches to) tap `name` inside the netns at `netnsPath` and returns its fds. The tap lives as
 * long as one fd (ours or QEMU's copy) is open; close ours with closeFd once QEMU holds it.
 */
export function openTapInNetns(
  netnsPath: string,
  name: string,
  opts: OpenTapOptions = {},
): Promise<OpenedTap> {
  const queues = Math.max(1, opts.queues ?? 1);
  const timeoutMs = opts.timeoutMs ?? 5000;
  const what = `opening tap ${name} in ${netnsPath}`;
  return new Promise((resolve, reject) => {
    const w = new Worker(TAP_WORKER, {
      eval: true,
      workerData: { koffiPath: koffiPath(), netnsPath, name, queues, flags: tapFlags(opts) },
    });
    let settled = false;
    const timer = setTimeout(() => {
      settled = true;
      void w.terminate();
      reject(new Error(`${what}: no answer within ${timeoutMs} ms`));
    }, timeoutMs);
    w.once('message', (m: { name: string; fds: number[] } | { error: string; errno: number }) => {
      clearTimeout(timer);
      if (settled) {
        if ('fds' in m) for (const fd of m.fds) closeFd(fd); // late answer after the deadline: nothing may leak
        return;
      }
      settled = true;
      if ('error' in m) reject(new Error(`${what}: ${m.error}`));
      else resolve({ name: m.name, fds: m.fds });
    });
    w.once('error', (e) => {
      clearTimeout(timer);
      if (settled) return;
      settled = true;
      reject(new Error(`${what}: worker failed: ${e.message}`, { cause: e }));
    });
  });
}
