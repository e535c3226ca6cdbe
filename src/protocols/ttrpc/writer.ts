// Coalesces frames written in the same turn of the event loop into one write: the first frame goes out at
// once (no added latency for a lone call), the rest of that turn's frames are joined and sent together just
// after it, which saves a syscall per frame when many calls are in flight.
import type { Writable } from 'node:stream';

export class FrameWriter {
  private queue: Buffer[] = [];
  private queued = 0;
  private burst = false;

  constructor(private readonly stream: Writable) {}

  /** Writes one frame given as parts (a head, then payload pieces), without joining them. */
  writeParts(parts: readonly Uint8Array[]): void {
    if (!this.burst) {
      this.burst = true;
      setImmediate(this.endBurst);
      this.stream.cork();
      for (const p of parts) this.stream.write(p);
      this.stream.uncork();
      return;
    }
    for (const p of parts) {
      const b = Buffer.isBuffer(p) ? p : Buffer.from(p.buffer, p.byteOffset, p.byteLength);
      this.queue.push(b);
      this.queued += b.length;
    }
  }

  write(frame: Buffer): void {
    if (!this.burst) {
      this.burst = true;
      setImmediate(this.endBurst);
      this.stream.write(frame);
      return;
    }
    this.queue.push(frame);
    this.queued += frame.length;
  }

  /** Writes out whatever is queued now (before an end() or a destroy()). */
  flush(): void {
    if (this.queue.length === 0) return;
    const q = this.queue;
    this.queue = [];
    const total = this.queued;
    this.queued = 0;
    if (this.stream.destroyed || this.stream.writableEnded) return;
    if (q.length === 1) {
      this.stream.write(q[0]!);
    } else if (total <= 64 * 1024) {
      this.stream.write(Buffer.concat(q, total));
    } else {
      // Big frames are not worth copying: cork so the stream hands them to the OS as one writev.
      this.stream.cork();
      for (const f of q) this.stream.write(f);
      this.stream.uncork();
    }
  }

  private readonly endBurst = (): void => {
    this.burst = false;
    this.flush();
  };
}
