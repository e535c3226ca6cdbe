// Every use of Node's internals (src/common/node-internals.ts), exercised for real: a Node upgrade that moves
// one fails here, not inside a VM.
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tty from 'node:tty';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { listenUnix } from '../../src/agent/native.js';
import {
  listenOnFd,
  serverFd,
  setTtyWriterNonBlocking,
  streamFromFd,
} from '../../src/common/node-internals.js';
import { SyscallError, check, libc } from '../../src/native/libc.js';

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kata-internals-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

const AF_UNIX = 1;
const SOCK_STREAM = 1;

function sockaddrUn(p: string): Buffer {
  const sa = Buffer.alloc(110);
  sa.writeUInt16LE(AF_UNIX, 0);
  sa.write(p, 2);
  return sa;
}

function listening(p: string): Promise<net.Server> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.listen(p, () => resolve(srv));
  });
}

describe("Node's internals, each exercised", () => {
  it('serverFd: the listening fd of a net.Server is a real socket fd', async () => {
    const srv = await listening(path.join(dir, 's'));
    try {
      const fd = serverFd(srv);
      expect(fd).toBeGreaterThan(2);
      expect(fs.fstatSync(fd).isSocket()).toBe(true);
    } finally {
      srv.close();
    }
  });

  it('streamFromFd: a libc-connected fd becomes a duplex net.Socket', async () => {
    const p = path.join(dir, 'echo');
    const srv = net.createServer((s) => s.pipe(s));
    await new Promise<void>((r) => srv.listen(p, r));
    const c = libc();
    const fd = check(c.socket(AF_UNIX, SOCK_STREAM, 0), 'socket');
    check(c.connect(fd, sockaddrUn(p), 110), `connect ${p}`);
    const sock = streamFromFd(fd, 'test socket');
    sock.write('ping');
    const got = await new Promise<string>((r) => sock.once('data', (b: Buffer) => r(b.toString())));
    expect(got).toBe('ping');
    sock.destroy();
    srv.close();
  });

  it('listenOnFd: accepts on a libc-bound listening fd (as the agent does on vsock)', async () => {
    const p = path.join(dir, 'l');
    const fd = listenUnix(p);
    const got = new Promise<string>((resolve, reject) => {
      const l = listenOnFd(
        fd,
        'test listener',
        (s) =>
          s.once('data', (b: Buffer) => {
            resolve(b.toString());
            s.destroy();
            l.close();
          }),
        reject,
      );
    });
    const client = net.connect(p, () => client.end('hello'));
    expect(await got).toBe('hello');
  });

  it('setTtyWriterNonBlocking: a pty-like tty writer can be made non-blocking', () => {
    const fd = fs.openSync('/dev/ptmx', fs.constants.O_RDWR | fs.constants.O_NOCTTY);
    const w = new tty.WriteStream(fd);
    expect(() => setTtyWriterNonBlocking(w)).not.toThrow();
    w.destroy();
  });

  it('names errno in a SyscallError', () => {
    const c = libc();
    const fd = c.socket(AF_UNIX, SOCK_STREAM, 0);
    c.close(fd);
    expect(() => check(c.close(fd), `close fd ${fd}`)).toThrow(SyscallError);
    expect(() => check(c.close(fd), `close fd ${fd}`)).toThrow(/close fd \d+: EBADF/);
  });
});
