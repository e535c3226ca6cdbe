import { PassThrough, Readable } from 'node:stream';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { InputStream, OutputStream, PipeIo, StreamEofError, fdIsOpen } from '../../src/agent/stdio.js';

/** Reads until EOF with the given read sizes (cycled). */
async function drain(out: OutputStream, sizes: number[] = [7]): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (let i = 0; ; i++) {
    const b = await out.read(sizes[i % sizes.length]);
    if (b.length === 0) return Buffer.concat(parts);
    parts.push(b);
  }
}

const tick = () => new Promise((r) => setImmediate(r));

describe('OutputStream', () => {
  it('hands out every byte once, in order, whatever the chunking and read sizes (property)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.uint8Array({ minLength: 1, maxLength: 50 }), { maxLength: 20 }),
        fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 5 }),
        fc.integer({ min: 16, max: 200 }),
        async (chunks, sizes, high) => {
          const src = new PassThrough();
          const out = new OutputStream(src, { highWater: high });
          const reading = drain(out, sizes);
          for (const c of chunks) {
            src.write(Buffer.from(c));
            await tick();
          }
          src.end();
          const got = await reading;
          expect(got.equals(Buffer.concat(chunks.map((c) => Buffer.from(c))))).toBe(true);
          expect(out.drained).toBe(true);
        },
      ),
      { numRuns: 100 },
    );
  });

  it('pauses its source above the high-water mark and resumes once drained below the low one', async () => {
    const src = new PassThrough({ highWaterMark: 16 });
    const out = new OutputStream(src, { highWater: 100, lowWater: 40 });
    let writes = 0;
    // a producer that respects back-pressure: it stops when write() says so
    const produce = async () => {
      for (let i = 0; i < 50; i++) {
        writes++;
        if (!src.write(Buffer.alloc(10, i))) await new Promise((r) => src.once('drain', r));
      }
      src.end();
    };
    const producing = produce();
    for (let i = 0; i < 20; i++) await tick();
    expect(out.isPaused).toBe(true);
    expect(out.buffered).toBeLessThanOrEqual(110);
    expect(writes).toBeLessThan(50); // the producer is held back, memory does not grow
    const got = await drain(out, [30]);
    await producing;
    expect(got.length).toBe(500);
    for (let i = 0; i < 50; i++) expect(got[i * 10]).toBe(i);
  });

  it('reports EOF only after buffered data was read', async () => {
    const src = new PassThrough();
    const out = new OutputStream(src);
    src.end(Buffer.from('tail'));
    await tick();
    expect((await out.read(2)).toString()).toBe('ta');
    expect((await out.read(10)).toString()).toBe('il');
    expect(out.drained).toBe(false);
    expect((await out.read(10)).length).toBe(0); // EOF, as upstream: an empty answer
    expect(out.drained).toBe(true);
    await expect(out.read(10)).rejects.toThrow(StreamEofError); // then an error status
  });

  it('a canceled read consumes nothing', async () => {
    const src = new PassThrough();
    const out = new OutputStream(src);
    const ac = new AbortController();
    const r = out.read(10, ac.signal);
    ac.abort(new Error('deadline'));
    await expect(r).rejects.toThrow('deadline');
    src.write('abc');
    await tick();
    expect((await out.read(10)).toString()).toBe('abc');
  });

  it('ends a source that stays open but idle after the process exited (a background child holds the pipe)', async () => {
    const src = new PassThrough();
    const out = new OutputStream(src, { exitGraceMs: 30 });
    src.write('last words');
    await tick();
    out.processExited();
    expect((await drain(out)).toString()).toBe('last words');
    expect(src.destroyed).toBe(true);
  });

  it('treats EIO (a pty whose slave closed) as EOF and other errors as EOF with a reason', async () => {
    const eio = Object.assign(new Error('read EIO'), { code: 'EIO' });
    const a = new Readable({ read() {} });
    const outA = new OutputStream(a);
    a.push('x');
    a.destroy(eio);
    expect((await drain(outA)).toString()).toBe('x');
    expect(outA.error).toBeUndefined();
    const b = new Readable({ read() {} });
    const outB = new OutputStream(b);
    b.destroy(Object.assign(new Error('boom'), { code: 'EBADF' }));
    expect((await drain(outB)).length).toBe(0);
    expect(outB.error?.message).toBe('boom');
  });
});

describe('InputStream', () => {
  it('resolves writes once handed on and refuses writes after close', async () => {
    const sink = new PassThrough();
    const got: Buffer[] = [];
    sink.on('data', (c: Buffer) => got.push(c));
    const input = new InputStream(sink);
    expect(await input.write(Buffer.from('abc'))).toBe(3);
    input.close();
    await expect(input.write(Buffer.from('x'))).rejects.toThrow(/closed/);
    expect(Buffer.concat(got).toString()).toBe('abc');
  });
});

describe('PipeIo', () => {
  it('creates real pipes: what goes into the child ends comes out of the agent ends, and closes everything', async () => {
    const io = new PipeIo();
    const [childIn, childOut, childErr] = io.childFds!;
    const fs = await import('node:fs');
    fs.writeSync(childOut, 'out!');
    fs.writeSync(childErr, 'err!');
    await io.stdin.write(Buffer.from('in!'));
    const buf = Buffer.alloc(10);
    const n = fs.readSync(childIn, buf);
    expect(buf.subarray(0, n).toString()).toBe('in!');
    io.closeChildFds();
    expect(fdIsOpen(childOut)).toBe(false);
    expect((await drain(io.stdout)).toString()).toBe('out!');
    expect((await drain(io.stderr)).toString()).toBe('err!');
    io.destroy();
  });

  it('gives every pipe a 1 MiB buffer, so big writes need fewer switches between the process and the agent', async () => {
    const { pipeSize } = await import('../../src/agent/native.js');
    const io = new PipeIo();
    try {
      // pipe-max-size is 1 MiB by default, so any user may grow a pipe that far.
      for (const fd of io.childFds!) expect(pipeSize(fd)).toBe(1 << 20);
    } finally {
      io.destroy();
    }
  });
});
