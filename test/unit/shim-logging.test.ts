// The shim daemon's log sink: a reader that stops draining containerd's log FIFO must never block the shim; lines
// beyond the bound are dropped, counted, and the count is logged once the reader catches up.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BoundedLogSink } from '../../src/shim/logging.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shim-logging-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Reads what the FIFO holds now (non-blocking). */
function drain(fd: number): string {
  const buf = Buffer.alloc(1 << 16);
  let out = '';
  for (;;) {
    try {
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      if (n <= 0) return out;
      out += buf.toString('utf8', 0, n);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EAGAIN') return out;
      throw e;
    }
  }
}

const tick = () => new Promise((r) => setTimeout(r, 20));

describe('BoundedLogSink', () => {
  it('never blocks on a reader that stops, drops beyond its bound and reports the count later', async () => {
    const fifo = path.join(dir, 'log');
    execFileSync('mkfifo', [fifo]);
    const reader = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    const writer = fs.openSync(fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
    const sink = new BoundedLogSink(writer, 64 << 10);
    const line = `${JSON.stringify({ msg: 'x'.repeat(200) })}\n`;
    // Far more than the pipe (64 KiB) and the bound together: a blocking write would hang here.
    for (let i = 0; i < 5000; i++) sink.write(line);
    expect(sink.droppedTotal).toBeGreaterThan(0);
    expect(sink.queued).toBeLessThanOrEqual((64 << 10) + line.length);

    let got = '';
    for (let i = 0; i < 50 && sink.queued > 0; i++) {
      got += drain(reader);
      await tick();
    }
    got += drain(reader);
    const dropped = sink.droppedTotal;
    const kept = got.split('\n').filter(Boolean).length;
    expect(kept + dropped).toBe(5000); // every line is either delivered whole or counted

    sink.write(line);
    await sink.flush(1000);
    const after = drain(reader).split('\n').filter(Boolean);
    expect(JSON.parse(after[0]!)).toMatchObject({ component: 'log', dropped, level: 40 });
    expect(after[1]).toBe(line.trimEnd());
    fs.closeSync(reader);
  });
});
