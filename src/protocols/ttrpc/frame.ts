// ttrpc framing: a 10-byte header (length u32 BE, stream id u32 BE, type u8, flags u8) then the payload.
export const HEADER_LENGTH = 10;
/** Upstream's default limit on one message. */
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
  payload: Uint8Array;
}

export function encodeFrame(streamId: number, type: MessageType, payload: Uint8Array, flags = 0): Buffer {
  const buf = Buffer.allocUnsafe(HEADER_LENGTH + payload.length);
  buf.writeUInt32BE(payload.length, 0);
  buf.writeUInt32BE(streamId >>> 0, 4);
  buf[8] = type;
  buf[9] = flags;
  buf.set(payload, HEADER_LENGTH);
  return buf;
}

/** Raised for a frame whose header announces more than the limit. */
export class OversizedFrameError extends Error {
  constructor(
    readonly streamId: number,
    readonly length: number,
    readonly max: number,
  ) {
    super(`ttrpc frame on stream ${streamId} is ${length} bytes, over the limit of ${max}`);
    this.name = 'OversizedFrameError';
  }
}

/**
 * Incremental frame parser: feed it chunks as they arrive, get whole frames back.
 * An oversized frame is reported via OversizedFrameError; the caller closes the connection,
 * since there is no safe way to skip an announced length that may be a lie.
 */
export class FrameReader {
  private chunks: Buffer[] = [];
  private buffered = 0;

  constructor(private readonly maxSize = MAX_MESSAGE_SIZE) {}

  push(chunk: Buffer): Frame[] {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    const frames: Frame[] = [];
    while (this.buffered >= HEADER_LENGTH) {
      const head = this.peek(HEADER_LENGTH);
      const length = head.readUInt32BE(0);
      const streamId = head.readUInt32BE(4);
      if (length > this.maxSize) throw new OversizedFrameError(streamId, length, this.maxSize);
      if (this.buffered < HEADER_LENGTH + length) break;
      const whole = this.take(HEADER_LENGTH + length);
      frames.push({ streamId, type: whole[8]!, flags: whole[9]!, payload: whole.subarray(HEADER_LENGTH) });
    }
    return frames;
  }

  /** Bytes held that do not yet form a whole frame. */
  get pending(): number {
    return this.buffered;
  }

  reset(): void {
    this.chunks = [];
    this.buffered = 0;
  }

  private peek(n: number): Buffer {
    if (this.chunks[0]!.length >= n) return this.chunks[0]!;
    this.chunks = [Buffer.concat(this.chunks)];
    return this.chunks[0]!;
  }

  private take(n: number): Buffer {
    const first = this.chunks[0]!;
    if (first.length < n) this.chunks = [Buffer.concat(this.chunks)];
    const head = this.chunks[0]!;
    const out = head.subarray(0, n);
    if (head.length === n) this.chunks.shift();
    else this.chunks[0] = head.subarray(n);
    this.buffered -= n;
    return out;
  }
}
