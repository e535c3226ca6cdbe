// Hand-written codec for ttrpc's envelope messages (ttrpc.Request, ttrpc.Response and its google.rpc.Status).
// Every call goes through these, so they skip protobuf-es reflection and are written straight into the frame
// buffer. Wire-compatible with src/protocols/gen/ttrpc_pb.ts (the unit tests check both ways).
import { HEADER_LENGTH, MessageType, writeHeader } from './frame.js';

/** A ttrpc.Request as the server needs it; payload is a view into the frame. */
export interface WireRequest {
  service: string;
  method: string;
  payload: Uint8Array;
  /** int64 nanoseconds; 0 means no deadline. */
  timeoutNano: number;
  /** Key/value pairs in wire order (keys may repeat). */
  metadata: [string, string][];
}

/** A ttrpc.Response; code 0 both for an OK status and for a missing one. */
export interface WireResponse {
  code: number;
  message: string;
  payload: Uint8Array;
}

/** Raised for bytes that are not a valid envelope message. */
export class MalformedMessageError extends Error {
  constructor(what: string, problem: string) {
    super(`malformed ${what}: ${problem}`);
    this.name = 'MalformedMessageError';
  }
}

const EMPTY = Buffer.alloc(0);

// ---- encoding ----

function varintSize(value: number): number {
  let n = 1;
  for (let v = value; v >= 0x80; v = Math.floor(v / 128)) n++;
  return n;
}

/** Writes a non-negative integer below 2^53. */
function writeVarint(b: Buffer, start: number, value: number): number {
  let at = start;
  let v = value;
  while (v >= 0x80) {
    b[at++] = (v & 0x7f) | 0x80;
    v = Math.floor(v / 128);
  }
  b[at++] = v;
  return at;
}

function writeBytesField(b: Buffer, start: number, tag: number, bytes: Uint8Array): number {
  b[start] = tag;
  const at = writeVarint(b, start + 1, bytes.length);
  b.set(bytes, at);
  return at + bytes.length;
}

function writeStringField(b: Buffer, start: number, tag: number, s: string, byteLength: number): number {
  b[start] = tag;
  const at = writeVarint(b, start + 1, byteLength);
  return at + b.write(s, at, byteLength, 'utf8');
}

function fieldSize(byteLength: number): number {
  return 1 + varintSize(byteLength) + byteLength;
}

/** The Request's leading service and method fields; constant per method, so clients cache it. */
export function encodeRequestPrefix(service: string, method: string): Buffer {
  const sl = Buffer.byteLength(service);
  const ml = Buffer.byteLength(method);
  const b = Buffer.alloc((sl ? fieldSize(sl) : 0) + (ml ? fieldSize(ml) : 0));
  let at = 0;
  if (sl) at = writeStringField(b, at, 0x0a, service, sl);
  if (ml) writeStringField(b, at, 0x12, method, ml);
  return b;
}

/** A whole Request frame: header, then the envelope around payload. */
export function encodeRequestFrame(
  streamId: number,
  prefix: Uint8Array,
  payload: Uint8Array,
  timeoutNano: number,
  metadata?: readonly (readonly [string, string])[],
): Buffer {
  let size = prefix.length;
  if (payload.length) size += fieldSize(payload.length);
  if (timeoutNano > 0) size += 1 + varintSize(timeoutNano);
  let mdSizes: number[] | undefined;
  if (metadata?.length) {
    mdSizes = [];
    for (const [k, v] of metadata) {
      const kl = Buffer.byteLength(k);
      const vl = Buffer.byteLength(v);
      const inner = (kl ? fieldSize(kl) : 0) + (vl ? fieldSize(vl) : 0);
      mdSizes.push(kl, vl, inner);
      size += fieldSize(inner);
    }
  }
  const b = Buffer.allocUnsafe(HEADER_LENGTH + size);
  writeHeader(b, 0, size, streamId, MessageType.Request);
  let at = HEADER_LENGTH;
  b.set(prefix, at);
  at += prefix.length;
  if (payload.length) at = writeBytesField(b, at, 0x1a, payload);
  if (timeoutNano > 0) {
    b[at++] = 0x20;
    at = writeVarint(b, at, timeoutNano);
  }
  if (metadata && mdSizes) {
    for (let i = 0; i < metadata.length; i++) {
      const [k, v] = metadata[i]!;
      const kl = mdSizes[i * 3]!;
      const vl = mdSizes[i * 3 + 1]!;
      b[at++] = 0x2a;
      at = writeVarint(b, at, mdSizes[i * 3 + 2]!);
      if (kl) at = writeStringField(b, at, 0x0a, k, kl);
      if (vl) at = writeStringField(b, at, 0x12, v, vl);
    }
  }
  return b;
}

/**
 * A whole Response frame. The status field is always present, empty for OK, as containerd/ttrpc sends it
 * (Go peers treat a missing status as OK too, but this keeps the bytes identical).
 */
export function encodeResponseFrame(
  streamId: number,
  status: number,
  message: string,
  payload: Uint8Array,
): Buffer {
  // Codes are small non-negative int32s; anything else would need sign-extended varints nobody sends.
  const code = Number.isInteger(status) && status >= 0 && status <= 0x7fffffff ? status : 2; // else Unknown
  const ml = message ? Buffer.byteLength(message) : 0;
  const statusSize = (code ? 1 + varintSize(code) : 0) + (ml ? fieldSize(ml) : 0);
  const size = fieldSize(statusSize) + (payload.length ? fieldSize(payload.length) : 0);
  const b = Buffer.allocUnsafe(HEADER_LENGTH + size);
  writeHeader(b, 0, size, streamId, MessageType.Response);
  let at = HEADER_LENGTH;
  b[at++] = 0x0a;
  at = writeVarint(b, at, statusSize);
  if (code) {
    b[at++] = 0x08;
    at = writeVarint(b, at, code);
  }
  if (ml) at = writeStringField(b, at, 0x12, message, ml);
  if (payload.length) writeBytesField(b, at, 0x12, payload);
  return b;
}

/**
 * The head of an OK Response frame whose payload of `payloadLength` bytes follows separately (written after it
 * with writev, so a large payload is never copied into the frame).
 */
export function encodeOkResponseHead(streamId: number, payloadLength: number): Buffer {
  const size = responseOverhead(payloadLength) + payloadLength;
  const b = Buffer.allocUnsafe(HEADER_LENGTH + size - payloadLength);
  writeHeader(b, 0, size, streamId, MessageType.Response);
  let at = HEADER_LENGTH;
  b[at++] = 0x0a; // an empty status, as encodeResponseFrame writes it
  b[at++] = 0x00;
  if (payloadLength) {
    b[at++] = 0x12;
    writeVarint(b, at, payloadLength);
  }
  return b;
}

/**
 * A response message a handler encoded itself, as parts that are written out as they are (writev): for large
 * byte payloads (a process's output) that would otherwise be copied into protobuf's buffer and then the frame.
 */
export class EncodedMessage {
  readonly length: number;
  constructor(readonly parts: readonly Uint8Array[]) {
    this.length = parts.reduce((a, p) => a + p.length, 0);
  }
}

/** The protobuf bytes of a message with one bytes field (number < 16), as parts: key and length, then `data`. */
export function encodeBytesMessage(fieldNumber: number, data: readonly Uint8Array[]): Uint8Array[] {
  const n = data.reduce((a, d) => a + d.length, 0);
  if (n === 0) return [];
  const key = Buffer.allocUnsafe(1 + varintSize(n));
  key[0] = (fieldNumber << 3) | 2;
  writeVarint(key, 1, n);
  return [key, ...data];
}

/** The size of a Response envelope around a payload of n bytes with an OK status. */
export function responseOverhead(n: number): number {
  return 2 + (n ? 1 + varintSize(n) : 0);
}

// ---- decoding ----
// A cursor shared by the decode functions below (they never run re-entrantly), so reading a varint
// allocates nothing.

let pos = 0;
let lo = 0;
let hi = 0;

function asBuffer(b: Uint8Array): Buffer {
  return Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength);
}

/** Reads a varint into lo/hi (the low and high 32 bits). */
function readVarint(b: Uint8Array, end: number, what: string): void {
  let byte = 0;
  lo = 0;
  hi = 0;
  for (let shift = 0; shift < 28; shift += 7) {
    if (pos >= end) throw new MalformedMessageError(what, 'truncated varint');
    byte = b[pos++]!;
    lo |= (byte & 0x7f) << shift;
    if (byte < 0x80) return;
  }
  if (pos >= end) throw new MalformedMessageError(what, 'truncated varint');
  byte = b[pos++]!;
  lo |= (byte & 0x0f) << 28;
  hi = (byte & 0x7f) >> 4;
  if (byte < 0x80) return;
  for (let shift = 3; shift < 32; shift += 7) {
    if (pos >= end) throw new MalformedMessageError(what, 'truncated varint');
    byte = b[pos++]!;
    hi |= (byte & 0x7f) << shift;
    if (byte < 0x80) return;
  }
  throw new MalformedMessageError(what, 'varint longer than 10 bytes');
}

/** Reads a length prefix and returns the end of the bytes it announces (they start at pos). */
function readLength(b: Uint8Array, end: number, what: string): number {
  readVarint(b, end, what);
  const n = lo >>> 0;
  if (hi !== 0 || n > end - pos)
    throw new MalformedMessageError(what, `length ${n} runs past the end of the message`);
  return pos + n;
}

function readTag(b: Uint8Array, end: number, what: string): number {
  const first = b[pos]!;
  if (first < 0x80) {
    pos++;
    return first;
  }
  readVarint(b, end, what);
  if (hi !== 0) throw new MalformedMessageError(what, 'field number out of range');
  return lo >>> 0;
}

function skipField(b: Uint8Array, end: number, tag: number, what: string): void {
  if (tag >>> 3 === 0) throw new MalformedMessageError(what, 'field number 0');
  switch (tag & 7) {
    case 0:
      readVarint(b, end, what);
      return;
    case 1:
      pos += 8;
      break;
    case 2:
      pos = readLength(b, end, what);
      return;
    case 5:
      pos += 4;
      break;
    default:
      throw new MalformedMessageError(what, `unsupported wire type ${tag & 7} for field ${tag >>> 3}`);
  }
  if (pos > end) throw new MalformedMessageError(what, `field ${tag >>> 3} runs past the end of the message`);
}

function checkKnown(tag: number, knownFields: number, what: string): void {
  const field = tag >>> 3;
  if (field >= 1 && field <= knownFields) {
    throw new MalformedMessageError(what, `field ${field} has the wrong wire type ${tag & 7}`);
  }
}

export function decodeRequest(bytes: Uint8Array): WireRequest {
  const b = asBuffer(bytes);
  const what = 'ttrpc.Request';
  const end = b.length;
  const req: WireRequest = { service: '', method: '', payload: EMPTY, timeoutNano: 0, metadata: [] };
  pos = 0;
  while (pos < end) {
    const tag = readTag(b, end, what);
    switch (tag) {
      case 0x0a: {
        const e = readLength(b, end, what);
        req.service = b.toString('utf8', pos, e);
        pos = e;
        break;
      }
      case 0x12: {
        const e = readLength(b, end, what);
        req.method = b.toString('utf8', pos, e);
        pos = e;
        break;
      }
      case 0x1a: {
        const e = readLength(b, end, what);
        req.payload = b.subarray(pos, e);
        pos = e;
        break;
      }
      case 0x20:
        readVarint(b, end, what);
        req.timeoutNano = hi * 0x100000000 + (lo >>> 0);
        break;
      case 0x2a: {
        const e = readLength(b, end, what);
        req.metadata.push(decodeKeyValue(b, e));
        break;
      }
      default:
        checkKnown(tag, 5, what);
        skipField(b, end, tag, what);
    }
  }
  return req;
}

function decodeKeyValue(b: Buffer, end: number): [string, string] {
  const what = 'ttrpc.KeyValue';
  let key = '';
  let value = '';
  while (pos < end) {
    const tag = readTag(b, end, what);
    if (tag === 0x0a || tag === 0x12) {
      const e = readLength(b, end, what);
      if (tag === 0x0a) key = b.toString('utf8', pos, e);
      else value = b.toString('utf8', pos, e);
      pos = e;
    } else {
      checkKnown(tag, 2, what);
      skipField(b, end, tag, what);
    }
  }
  return [key, value];
}

export function decodeResponse(bytes: Uint8Array): WireResponse {
  const b = asBuffer(bytes);
  const what = 'ttrpc.Response';
  const end = b.length;
  const res: WireResponse = { code: 0, message: '', payload: EMPTY };
  pos = 0;
  while (pos < end) {
    const tag = readTag(b, end, what);
    if (tag === 0x0a) {
      // Repeated occurrences of a message field merge, as protobuf says.
      decodeStatus(b, readLength(b, end, what), res);
    } else if (tag === 0x12) {
      const e = readLength(b, end, what);
      res.payload = b.subarray(pos, e);
      pos = e;
    } else {
      checkKnown(tag, 2, what);
      skipField(b, end, tag, what);
    }
  }
  return res;
}

function decodeStatus(b: Buffer, end: number, res: WireResponse): void {
  const what = 'google.rpc.Status';
  while (pos < end) {
    const tag = readTag(b, end, what);
    if (tag === 0x08) {
      readVarint(b, end, what);
      res.code = lo | 0; // int32: the low 32 bits, signed
    } else if (tag === 0x12) {
      const e = readLength(b, end, what);
      res.message = b.toString('utf8', pos, e);
      pos = e;
    } else {
      // details (field 3, repeated Any) are skipped: nothing here reads them.
      if (tag !== 0x1a) checkKnown(tag, 3, what);
      skipField(b, end, tag, what);
    }
  }
}
