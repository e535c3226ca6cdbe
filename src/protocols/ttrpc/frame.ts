// ttrpc framing: a 10-byte header (length u32 BE, stream id u32 BE, type u8, flags u8) then the payload.
export const HEADER_LENGTH = 10;
/** Upstream's default limit on one message (the payload after the header). */
export const MAX_MESSAGE_SIZE = 4 << 20;

export enum MessageType {
  Request = 1,
  Response = 2,
  Data = 3,
}

export const FLAG_REMOTE_CLOSED = 0x1;
export const FLAG_REMOTE_OPEN = 0x2;
export const FLAG_NO_DATA = 0x4;

export interface Frame {
  streamId: number;
  type: number;
  flags: number;
  /** The message; empty when the frame was oversized. */
  payload: Uint8Array;
  /**
   * Set to the announced length when it was over the reader's limit: the payload bytes were read and thrown
   * away (as containerd/ttrpc does), so the connection stays usable and the peer can be told why.
   */
  oversized?: number;
}

export function encodeFrame(streamId: number, type: MessageType, payload: Uint8Array, flags = 0): Buffer {
  const buf = Buffer.allocUnsafe(HEADER_LENGTH + payload.length);
  writeHeader(buf, 0, payload.length, streamId, type, flags);
  buf.set(payload, HEADER_LENGTH);
  return buf;
}

export function writeHeader(
  buf: Uint8Array,
  at: number,
  length: number,
  streamId: number,
  type: number,
  flags = 0,
): void {
  buf[at] = length >>> 24;
  buf[at + 1] = length >>> 16;
  buf[at + 2] = length >>> 8;
  buf[at + 3] = length;
  buf[at + 4] = streamId >>> 24;
  buf[at + 5] = streamId >>> 16;
  buf[at + 6] = streamId >>> 8;
  buf[at + 7] = streamId;
  buf[at + 8] = type;
  buf[at + 9] = flags;
}

/** Describes a frame whose header announced more than the limit (its payload has been discarded). */
export class OversizedFrameError extends Error {
  constructor(
    readonly streamId: number,
    readonly length: number,
    readonly max: number,
  ) {
    super(`ttrpc message on stream ${streamId} is ${length} bytes, over the maximum message size of ${max}`);
    this.name = 'OversizedFrameError';
  }
}

const EMPTY = new Uint8Array(0);

function u32(b: Uint8Array, at: number): number {
  return ((b[at]! << 24) | (b[at + 1]! << 16) | (b[at + 2]! << 8) | b[at + 3]!) >>> 0;
}

/**
 * Incremental frame parser: feed it chunks as they arrive, get whole frames back, in order.
 * It never throws: any byte sequence is a sequence of frames. A frame over the limit is not buffered; its
 * payload is skipped as it arrives and it comes out with `oversized` set once skipped.
 * Frames that lie whole inside one chunk are returned as views into it (no copy).
 */
export class FrameReader {
  private readonly head = new Uint8Array(HEADER_LENGTH);
  private headLen = 0;
  /** The frame being assembled across chunks, once its header is complete. */
  private cur: Frame | undefined;
  private body: Uint8Array = EMPTY;
  private bodyLen = 0;
  /** Payload bytes still to throw away for an oversized frame. */
  private skip = 0;

  constructor(private readonly maxSize = MAX_MESSAGE_SIZE) {}

  push(chunk: Uint8Array): Frame[] {
    const frames: Frame[] = [];
    const n = chunk.length;
    let at = 0;
    while (at < n) {
      if (this.cur) {
        at = this.continueFrame(chunk, at, frames);
        continue;
      }
      if (this.headLen === 0 && n - at >= HEADER_LENGTH) {
        // Fast path: the header is whole in this chunk, and often the payload too.
        const length = u32(chunk, at);
        const frame: Frame = {
          streamId: u32(chunk, at + 4),
          type: chunk[at + 8]!,
          flags: chunk[at + 9]!,
          payload: EMPTY,
        };
        at += HEADER_LENGTH;
        if (length <= this.maxSize && n - at >= length) {
          frame.payload = chunk.subarray(at, at + length);
          at += length;
          frames.push(frame);
        } else {
          this.startFrame(frame, length);
        }
        continue;
      }
      const take = Math.min(HEADER_LENGTH - this.headLen, n - at);
      this.head.set(chunk.subarray(at, at + take), this.headLen);
      this.headLen += take;
      at += take;
      if (this.headLen < HEADER_LENGTH) break;
      const h = this.head;
      this.headLen = 0;
      this.startFrame({ streamId: u32(h, 4), type: h[8]!, flags: h[9]!, payload: EMPTY }, u32(h, 0));
      if (this.body.length === 0 && this.skip === 0) {
        frames.push(this.cur!);
        this.cur = undefined;
      }
    }
    return frames;
  }

  /** Bytes held that do not yet form a whole frame (a partial header or payload). */
  get pending(): number {
    return this.headLen + (this.cur && !this.cur.oversized ? HEADER_LENGTH + this.bodyLen : 0);
  }

  reset(): void {
    this.headLen = 0;
    this.cur = undefined;
    this.body = EMPTY;
    this.bodyLen = 0;
    this.skip = 0;
  }

  private startFrame(frame: Frame, length: number): void {
    this.cur = frame;
    this.bodyLen = 0;
    if (length > this.maxSize) {
      frame.oversized = length;
      this.skip = length;
      this.body = EMPTY;
    } else {
      // allocUnsafe is fine: the frame is only handed out once every byte has been written.
      this.body = length === 0 ? EMPTY : Buffer.allocUnsafe(length);
    }
  }

  private continueFrame(chunk: Uint8Array, start: number, frames: Frame[]): number {
    const cur = this.cur!;
    let at = start;
    const avail = chunk.length - start;
    if (this.skip > 0) {
      const take = Math.min(this.skip, avail);
      this.skip -= take;
      at += take;
    } else {
      const take = Math.min(this.body.length - this.bodyLen, avail);
      this.body.set(chunk.subarray(at, at + take), this.bodyLen);
      this.bodyLen += take;
      at += take;
      if (this.bodyLen < this.body.length) return at;
      cur.payload = this.body;
    }
    if (this.skip > 0) return at;
    frames.push(cur);
    this.cur = undefined;
    this.body = EMPTY;
    this.bodyLen = 0;
    return at;
  }
}
