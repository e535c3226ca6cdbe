// The shim's stdin copy (src/runtime/io.ts) against an agent that holds its WriteStdin answers: CloseIO arrives
// while the copy is backed up (its FIFO socket paused with chunks read but not handed out); every byte must
// still reach the agent, in order. Hermetic: a FIFO in a temp dir.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { ProcessIo } from '../../src/runtime/io.js';

const log = pino({ level: 'silent' });
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('stdin copy', () => {
  it('keeps every byte, in order, when CloseIO comes while the copy is backed up', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kata-ts-io-'));
    dirs.push(dir);
    const stdin = path.join(dir, 'stdin');
    execFileSync('mkfifo', [stdin]);
    // Like containerd's FIFO: a writer end held open (O_RDWR never blocks) while the shim opens its read end.
    const keep = fs.openSync(stdin, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
    const io = await ProcessIo.open({ stdin, stdout: '', stderr: '', terminal: false }, 'c1', '', log);

    let gate!: () => void;
    const held = new Promise<void>((r) => {
      gate = r;
    });
    const got: Buffer[] = [];
    let closed = false;
    io.start({
      writeStdin: async (r: { data: Uint8Array }) => {
        got.push(Buffer.from(r.data));
        await held; // a slow guest: the answers come later
        return { len: r.data.length };
      },
      closeStdin: async () => {
        closed = true;
        return {};
      },
      readStdout: async () => ({ data: new Uint8Array() }),
      readStderr: async () => ({ data: new Uint8Array() }),
    } as unknown as Parameters<ProcessIo['start']>[0]);

    // Write (never blocking) until the FIFO takes nothing more for a while: the copy is paused, its calls held.
    const sent = createHash('sha256');
    let total = 0;
    let seq = 0;
    for (let idle = 0; idle < 10; ) {
      const chunk = Buffer.alloc(32 << 10, seq % 251);
      try {
        const n = fs.writeSync(keep, chunk);
        sent.update(chunk.subarray(0, n));
        total += n;
        seq++;
        idle = 0;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
        idle++;
        await sleep(20);
      }
    }
    expect(total).toBeGreaterThan(2 << 20); // past the copy's pause threshold
    const closing = io.closeStdin();
    fs.closeSync(keep);
    gate();
    await closing;
    await io.close();
    const recv = Buffer.concat(got);
    expect(recv.length).toBe(total);
    expect(createHash('sha256').update(recv).digest('hex')).toBe(sent.digest('hex'));
    expect(closed).toBe(true);
  });
});
