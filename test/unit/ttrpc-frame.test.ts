// Property tests of the ttrpc frame parser and the hand-written envelope codec.
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { RequestSchema, ResponseSchema } from '../../src/protocols/gen/ttrpc_pb.js';
import {
  MalformedMessageError,
  decodeRequest,
  decodeResponse,
  encodeRequestFrame,
  encodeRequestPrefix,
  encodeResponseFrame,
} from '../../src/protocols/ttrpc/envelope.js';
import {
  type Frame,
  FrameReader,
  HEADER_LENGTH,
  MAX_MESSAGE_SIZE,
  encodeFrame,
} from '../../src/protocols/ttrpc/index.js';

const frameArbWith = (maxLength: number) =>
  fc.record({
    streamId: fc.nat({ max: 0xffffffff }),
    type: fc.nat({ max: 255 }),
    flags: fc.nat({ max: 255 }),
    payload: fc.uint8Array({ maxLength }),
  });
const frameArb = frameArbWith(300);

/** Splits bytes at the given cut points (any order, duplicates allowed). */
function chunk(bytes: Uint8Array, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let prev = 0;
  for (const p of [...points, bytes.length]) {
    out.push(Buffer.from(bytes.subarray(prev, p)));
    prev = p;
  }
  return out;
}

function plain(f: Frame) {
  return {
    streamId: f.streamId,
    type: f.type,
    flags: f.flags,
    payload: Buffer.from(f.payload),
    oversized: f.oversized,
  };
}

describe('ttrpc FrameReader', () => {
  it('reassembles a stream of frames exactly, however it is chunked', () => {
    fc.assert(
      fc.property(
        fc.array(frameArb, { maxLength: 20 }),
        fc.array(fc.nat(), { maxLength: 40 }),
        (frames, cuts) => {
          const wire = Buffer.concat(frames.map((f) => encodeFrame(f.streamId, f.type, f.payload, f.flags)));
          const reader = new FrameReader();
          const got = chunk(wire, cuts).flatMap((c) => reader.push(c));
          expect(got.map(plain)).toEqual(
            frames.map((f) => ({ ...f, payload: Buffer.from(f.payload), oversized: undefined })),
          );
          expect(reader.pending).toBe(0);
        },
      ),
      { numRuns: 500 },
    );
  });

  it('skips oversized payloads and reports them in order, keeping the frames around them', () => {
    const max = 64;
    fc.assert(
      fc.property(
        fc.array(frameArbWith(200), { maxLength: 15 }),
        fc.array(fc.nat(), { maxLength: 40 }),
        (frames, cuts) => {
          const wire = Buffer.concat(frames.map((f) => encodeFrame(f.streamId, f.type, f.payload, f.flags)));
          const reader = new FrameReader(max);
          const got = chunk(wire, cuts).flatMap((c) => reader.push(c));
          expect(got.map(plain)).toEqual(
            frames.map((f) =>
              f.payload.length > max
                ? { ...f, payload: Buffer.alloc(0), oversized: f.payload.length }
                : { ...f, payload: Buffer.from(f.payload), oversized: undefined },
            ),
          );
        },
      ),
      { numRuns: 300 },
    );
  });

  it('never throws on garbage and never holds more than one frame', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 50 }), (chunks) => {
        const reader = new FrameReader(128);
        for (const c of chunks) {
          for (const f of reader.push(c)) {
            expect(f.payload.length).toBeLessThanOrEqual(128);
            if (f.oversized !== undefined) expect(f.oversized).toBeGreaterThan(128);
          }
          expect(reader.pending).toBeLessThanOrEqual(128 + HEADER_LENGTH);
        }
      }),
      { numRuns: 500 },
    );
  });

  it('does not buffer an announced 4 GiB frame', () => {
    const reader = new FrameReader();
    const head = Buffer.alloc(HEADER_LENGTH);
    head.writeUInt32BE(0xffffffff, 0);
    head.writeUInt32BE(7, 4);
    head[8] = 1;
    expect(reader.push(head)).toEqual([]);
    expect(reader.push(Buffer.alloc(1 << 20))).toEqual([]);
    expect(reader.pending).toBe(0);
    expect(MAX_MESSAGE_SIZE).toBe(4 << 20);
  });
});

const kvArb = fc.tuple(fc.string({ maxLength: 12 }), fc.string({ maxLength: 20 }));
const requestArb = fc.record({
  service: fc.string({ maxLength: 40 }),
  method: fc.string({ maxLength: 40 }),
  payload: fc.uint8Array({ maxLength: 200 }),
  timeoutNano: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER })),
  metadata: fc.array(kvArb, { maxLength: 5 }),
});

describe('ttrpc envelope codec', () => {
  it('encodes requests that protobuf-es reads back', () => {
    fc.assert(
      fc.property(requestArb, fc.nat({ max: 0xffffffff }), (r, id) => {
        const frame = encodeRequestFrame(
          id,
          encodeRequestPrefix(r.service, r.method),
          r.payload,
          r.timeoutNano,
          r.metadata,
        );
        expect(frame.readUInt32BE(0)).toBe(frame.length - HEADER_LENGTH);
        expect(frame.readUInt32BE(4)).toBe(id);
        expect(frame[8]).toBe(1);
        const msg = fromBinary(RequestSchema, frame.subarray(HEADER_LENGTH));
        expect(msg.service).toBe(r.service);
        expect(msg.method).toBe(r.method);
        expect(Buffer.from(msg.payload)).toEqual(Buffer.from(r.payload));
        expect(msg.timeoutNano).toBe(BigInt(r.timeoutNano));
        expect(msg.metadata.map((kv) => [kv.key, kv.value])).toEqual(r.metadata);
      }),
      { numRuns: 300 },
    );
  });

  it('decodes requests that protobuf-es writes', () => {
    fc.assert(
      fc.property(requestArb, fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }), (r, timeout) => {
        const bytes = toBinary(
          RequestSchema,
          create(RequestSchema, {
            ...r,
            timeoutNano: timeout,
            metadata: r.metadata.map(([key, value]) => ({ key, value })),
          }),
        );
        const got = decodeRequest(bytes);
        expect(got.service).toBe(r.service);
        expect(got.method).toBe(r.method);
        expect(Buffer.from(got.payload)).toEqual(Buffer.from(r.payload));
        expect(got.timeoutNano).toBe(Number(timeout));
        expect(got.metadata).toEqual(r.metadata);
      }),
      { numRuns: 300 },
    );
  });

  it('round-trips responses both ways, always sending a status (empty for OK, like containerd/ttrpc)', () => {
    expect([...encodeResponseFrame(3, 0, '', new Uint8Array(0)).subarray(HEADER_LENGTH)]).toEqual([
      0x0a, 0x00,
    ]);
    fc.assert(
      fc.property(
        fc.nat({ max: 16 }),
        fc.string({ maxLength: 60 }),
        fc.uint8Array({ maxLength: 200 }),
        (code, message, payload) => {
          const frame = encodeResponseFrame(5, code, message, payload);
          expect(frame[8]).toBe(2);
          const msg = fromBinary(ResponseSchema, frame.subarray(HEADER_LENGTH));
          expect(msg.status?.code).toBe(code);
          expect(msg.status?.message).toBe(message);
          expect(Buffer.from(msg.payload)).toEqual(Buffer.from(payload));
          const back = decodeResponse(toBinary(ResponseSchema, msg));
          expect(back).toEqual({ code, message, payload: Buffer.from(payload) });
        },
      ),
      { numRuns: 300 },
    );
  });

  it('reads a missing status as OK and negative codes as int32', () => {
    expect(decodeResponse(new Uint8Array(0)).code).toBe(0);
    const neg = toBinary(ResponseSchema, create(ResponseSchema, { status: { code: -3, message: 'm' } }));
    expect(decodeResponse(neg)).toMatchObject({ code: -3, message: 'm' });
  });

  it('rejects garbage only with MalformedMessageError', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 80 }), (bytes) => {
        for (const decode of [decodeRequest, decodeResponse]) {
          try {
            decode(bytes);
          } catch (e) {
            expect(e).toBeInstanceOf(MalformedMessageError);
            expect((e as Error).message).toMatch(/^malformed (ttrpc\.|google\.rpc\.)/);
          }
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('skips unknown fields of every wire type', () => {
    // field 9 varint, field 10 fixed64, field 11 bytes, field 12 fixed32, then service "s"
    const bytes = Buffer.from([
      0x48, 0x96, 0x01, 0x51, 1, 2, 3, 4, 5, 6, 7, 8, 0x5a, 2, 9, 9, 0x65, 1, 2, 3, 4, 0x0a, 1, 0x73,
    ]);
    expect(decodeRequest(bytes).service).toBe('s');
    expect(() => decodeRequest(Buffer.from([0x0b]))).toThrow(MalformedMessageError); // group wire type
    expect(() => decodeRequest(Buffer.from([0x08, 1]))).toThrow(/field 1 has the wrong wire type/);
  });
});
