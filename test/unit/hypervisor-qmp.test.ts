import { mkdtempSync, rmSync } from 'node:fs';
import { type Server, type Socket, createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { QmpClient, QmpConnectionError, QmpError } from '../../src/hypervisor/qemu/qmp.js';

type Handler = (
  cmd: { execute: string; arguments?: Record<string, unknown>; id?: string },
  sock: Socket,
) => void;

/** A fake QEMU monitor: sends the greeting, answers qmp_capabilities, hands other commands to `handler`. */
class FakeQmp {
  server: Server;
  sockets: Socket[] = [];
  received: { execute: string; arguments?: Record<string, unknown>; id?: string }[] = [];
  handler: Handler = (cmd, s) => reply(s, cmd.id, {});

  constructor(readonly path: string) {
    this.server = createServer((s) => {
      this.sockets.push(s);
      s.write(
        `${JSON.stringify({ QMP: { version: { qemu: { major: 7, minor: 2, micro: 0 }, package: '' }, capabilities: [] } })}\r\n`,
      );
      let buf = '';
      s.on('data', (d) => {
        buf += d.toString();
        let nl = buf.indexOf('\n');
        while (nl >= 0) {
          const cmd = JSON.parse(buf.slice(0, nl));
          buf = buf.slice(nl + 1);
          this.received.push(cmd);
          if (cmd.execute === 'qmp_capabilities') reply(s, cmd.id, {});
          else this.handler(cmd, s);
          nl = buf.indexOf('\n');
        }
      });
      s.on('error', () => undefined);
    });
  }

  listen(): Promise<void> {
    return new Promise((r) => this.server.listen(this.path, r));
  }

  event(name: string, data: Record<string, unknown> = {}): void {
    for (const s of this.sockets) {
      s.write(`${JSON.stringify({ event: name, data, timestamp: { seconds: 1, microseconds: 2 } })}\r\n`);
    }
  }

  close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    return new Promise((r) => this.server.close(() => r()));
  }
}

function reply(s: Socket, id: string | undefined, ret: unknown): void {
  s.write(`${JSON.stringify({ return: ret, id })}\r\n`);
}

let dir: string;
let fake: FakeQmp;
let client: QmpClient | undefined;

beforeEach(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'qmp-test-'));
  fake = new FakeQmp(path.join(dir, 'qmp.sock'));
  await fake.listen();
});

afterEach(async () => {
  client?.close();
  client = undefined;
  await fake.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('QMP client', () => {
  it('does the greeting and capabilities handshake', async () => {
    client = await QmpClient.connect(fake.path);
    expect(client.greeting?.version.qemu.major).toBe(7);
    expect(fake.received.map((c) => c.execute)).toEqual(['qmp_capabilities']);
  });

  it('matches replies to commands by id, even out of order', async () => {
    const held: { id?: string; s: Socket; execute: string }[] = [];
    fake.handler = (cmd, s) => {
      held.push({ id: cmd.id, s, execute: cmd.execute });
      if (held.length === 2) {
        // answer the second first
        reply(held[1]!.s, held[1]!.id, { status: 'running', running: true });
        reply(held[0]!.s, held[0]!.id, [{ type: 'dimm' }]);
      }
    };
    client = await QmpClient.connect(fake.path);
    const [mem, st] = await Promise.all([client.queryMemoryDevices(), client.queryStatus()]);
    expect(st).toEqual({ status: 'running', running: true });
    expect(mem).toEqual([{ type: 'dimm' }]);
  });

  it('sends arguments', async () => {
    client = await QmpClient.connect(fake.path);
    await client.deviceAdd({ driver: 'virtio-blk-pci', id: 'blk-1', drive: 'drive-1', bus: 'rp0' });
    expect(fake.received.at(-1)).toMatchObject({
      execute: 'device_add',
      arguments: { driver: 'virtio-blk-pci', id: 'blk-1', drive: 'drive-1', bus: 'rp0' },
    });
  });

  it('turns an error reply into a QmpError carrying class, desc and command', async () => {
    fake.handler = (cmd, s) =>
      s.write(
        `${JSON.stringify({ error: { class: 'DeviceNotFound', desc: "Device 'x' not found" }, id: cmd.id })}\n`,
      );
    client = await QmpClient.connect(fake.path);
    const err = await client.execute('device_del', { id: 'x' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QmpError);
    expect(err).toMatchObject({
      command: 'device_del',
      errorClass: 'DeviceNotFound',
      desc: "Device 'x' not found",
    });
    expect((err as Error).message).toContain('device_del');
  });

  it('emits async events by name and as "event"', async () => {
    client = await QmpClient.connect(fake.path);
    const all: string[] = [];
    client.on('event', (e: { event: string }) => all.push(e.event));
    const stop = new Promise((r) => client!.once('STOP', r));
    const shutdown = client.waitForEvent('SHUTDOWN', (e) => e.data.guest === true, 5000);
    fake.event('STOP');
    fake.event('SHUTDOWN', { guest: false });
    fake.event('SHUTDOWN', { guest: true, reason: 'guest-shutdown' });
    await stop;
    expect((await shutdown).data).toEqual({ guest: true, reason: 'guest-shutdown' });
    expect(all).toEqual(['STOP', 'SHUTDOWN', 'SHUTDOWN']);
  });

  it('device_del waits for DEVICE_DELETED of that device', async () => {
    fake.handler = (cmd, s) => {
      reply(s, cmd.id, {});
      if (cmd.execute === 'device_del') {
        setTimeout(() => {
          fake.event('DEVICE_DELETED', { path: '/machine/peripheral/blk-1/virtio-backend' });
          fake.event('DEVICE_DELETED', { device: 'other', path: '/machine/peripheral/other' });
          fake.event('DEVICE_DELETED', { device: 'blk-1', path: '/machine/peripheral/blk-1' });
        }, 20);
      }
    };
    client = await QmpClient.connect(fake.path);
    let done = false;
    const p = client.deviceDel('blk-1', 5000).then(() => {
      done = true;
    });
    await p;
    expect(done).toBe(true);
  });

  it('device_del without DEVICE_DELETED times out with a named error', async () => {
    client = await QmpClient.connect(fake.path);
    await expect(client.deviceDel('blk-9', 100)).rejects.toThrow(/DEVICE_DELETED/);
  });

  it('fails every pending command when the connection is lost', async () => {
    fake.handler = () => undefined; // never answers
    client = await QmpClient.connect(fake.path);
    const closed = new Promise((r) => client!.once('close', r));
    const a = client.execute('query-status').catch((e: unknown) => e);
    const b = client.execute('query-pci').catch((e: unknown) => e);
    const ev = client.waitForEvent('SHUTDOWN').catch((e: unknown) => e);
    await new Promise((r) => setTimeout(r, 20));
    for (const s of fake.sockets) s.destroy();
    const [ea, eb, eev] = await Promise.all([a, b, ev]);
    await closed;
    expect(ea).toBeInstanceOf(QmpConnectionError);
    expect((ea as Error).message).toContain('query-status');
    expect((eb as Error).message).toContain('query-pci');
    expect((eev as Error).message).toContain('SHUTDOWN');
    expect(client.isClosed).toBe(true);
    await expect(client.execute('cont')).rejects.toThrow(/closed/);
  });

  it('quit counts a dropped connection as success', async () => {
    fake.handler = (_cmd, s) => s.destroy();
    client = await QmpClient.connect(fake.path);
    await expect(client.quit(1000)).resolves.toBeUndefined();
  });

  it('per-command timeout names the command', async () => {
    fake.handler = () => undefined;
    client = await QmpClient.connect(fake.path);
    await expect(client.execute('query-hotpluggable-cpus', undefined, { timeoutMs: 50 })).rejects.toThrow(
      /query-hotpluggable-cpus: no reply/,
    );
  });

  it('rejects a socket that does not exist', async () => {
    await expect(QmpClient.connect(path.join(dir, 'nope.sock'))).rejects.toThrow(/cannot connect/);
  });

  it('handles replies split across packets and several per packet', async () => {
    fake.handler = (cmd, s) => {
      const line = `${JSON.stringify({ return: { status: 'paused', running: false }, id: cmd.id })}\r\n`;
      s.write(line.slice(0, 5));
      setTimeout(() => s.write(`${line.slice(5)}${JSON.stringify({ event: 'STOP', data: {} })}\r\n`), 10);
    };
    client = await QmpClient.connect(fake.path);
    const stop = new Promise((r) => client!.once('STOP', r));
    expect((await client.queryStatus()).status).toBe('paused');
    await stop;
  });
});
