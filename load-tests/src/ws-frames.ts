import { randomFillSync } from "node:crypto";

/**
 * The RFC 6455 framing a publishing client needs, and no more: masked text frames out, the
 * server's unmasked frames in. No fragmentation (neither side fragments frames this small), no
 * extensions (the harness offers none in its handshake).
 */

/** Frame opcodes (RFC 6455 §5.2). */
export const OPCODE = { text: 0x1, close: 0x8, ping: 0x9, pong: 0xa } as const;

/**
 * Random bytes drawn at once for masking keys, refilled when used up: one `randomFillSync` per
 * 2,048 frames instead of one per frame (`ws` pools its keys the same way).
 */
const MASK_POOL_BYTES = 8192;
let maskPool = randomFillSync(Buffer.allocUnsafe(MASK_POOL_BYTES));
let maskAt = 0;

/** A fresh masking key (RFC 6455 §5.3: a client draws one per frame). */
function nextMask(): Buffer {
  if (maskAt === MASK_POOL_BYTES) {
    maskPool = randomFillSync(Buffer.allocUnsafe(MASK_POOL_BYTES));
    maskAt = 0;
  }
  maskAt += 4;
  return maskPool.subarray(maskAt - 4, maskAt);
}

/**
 * One final text frame of `text`, masked as a client must (RFC 6455 §5.1), with `mask` or a fresh
 * random key. The key is never left all zero on purpose: `ws` (8.x, `Receiver#getData`) skips
 * unmasking for a zero key, which would spare the server work real clients make it do.
 */
export function maskedTextFrame(text: string, mask: Uint8Array = nextMask()): Buffer {
  const length = Buffer.byteLength(text);
  const header = length < 126 ? 2 : length < 65_536 ? 4 : 10;
  const frame = Buffer.allocUnsafe(header + 4 + length);
  frame[0] = 0x80 | OPCODE.text;
  if (length < 126) {
    frame[1] = 0x80 | length;
  } else if (length < 65_536) {
    frame[1] = 0x80 | 126;
    frame.writeUInt16BE(length, 2);
  } else {
    frame[1] = 0x80 | 127;
    frame.writeBigUInt64BE(BigInt(length), 2);
  }
  const start = header + 4;
  for (let i = 0; i < 4; i++) frame[header + i] = mask[i]!;
  frame.write(text, start, "utf8");
  for (let i = 0; i < length; i++) frame[start + i]! ^= mask[i & 3]!;
  return frame;
}

/** Called for each complete frame the server sent: its opcode and (unmasked) payload. */
export type FrameSink = (opcode: number, payload: Buffer) => void;

/**
 * Reads the server's frames from its bytes, whatever the read boundaries: a frame cut by one is
 * held until the next chunk completes it. A server never masks (RFC 6455 §5.1); a masked frame
 * throws.
 */
export class FrameReader {
  #pending: Buffer | undefined;

  constructor(private readonly sink: FrameSink) {}

  feed(chunk: Buffer): void {
    const bytes = this.#pending === undefined ? chunk : Buffer.concat([this.#pending, chunk]);
    this.#pending = undefined;
    let at = 0;
    for (;;) {
      const left = bytes.length - at;
      if (left < 2) break;
      const second = bytes[at + 1]!;
      if ((second & 0x80) !== 0) throw new Error("FrameReader: a masked frame from the server");
      let length = second & 0x7f;
      let header = 2;
      if (length === 126) {
        if (left < 4) break;
        length = bytes.readUInt16BE(at + 2);
        header = 4;
      } else if (length === 127) {
        if (left < 10) break;
        length = Number(bytes.readBigUInt64BE(at + 2));
        header = 10;
      }
      if (left < header + length) break;
      this.sink(bytes[at]! & 0x0f, bytes.subarray(at + header, at + header + length));
      at += header + length;
    }
    if (at < bytes.length) this.#pending = bytes.subarray(at);
  }
}

/**
 * The offset just past the frame that starts at `at` in `bytes`, or -1 while its header or payload
 * is not all there.
 */
export function frameEnd(bytes: Buffer, at: number): number {
  const left = bytes.length - at;
  if (left < 2) return -1;
  const second = bytes[at + 1]!;
  let length = second & 0x7f;
  let header = 2;
  if (length === 126) {
    if (left < 4) return -1;
    length = bytes.readUInt16BE(at + 2);
    header = 4;
  } else if (length === 127) {
    if (left < 10) return -1;
    length = Number(bytes.readBigUInt64BE(at + 2));
    header = 10;
  }
  if ((second & 0x80) !== 0) header += 4;
  return left < header + length ? -1 : at + header + length;
}

/**
 * Counts the server's frames without reading their payloads: only headers are looked at and no
 * payload is copied, so a socket drained in batches costs one pass over its headers. A frame cut by
 * a read boundary counts once, when its header is whole. For watchers that only need to know how
 * many frames came (`FrameReader` copies every chunk that ends inside a frame).
 */
export class FrameCounter {
  /** Text frames counted so far. */
  text = 0;
  /** Whether a close frame came. */
  closed = false;
  /** Payload bytes of the current frame still to come. */
  #skip = 0;
  /** A header cut by a read boundary (at most 9 bytes). */
  #head: Buffer | undefined;

  feed(chunk: Buffer): void {
    let bytes = chunk;
    let at = 0;
    if (this.#skip > 0) {
      at = Math.min(this.#skip, bytes.length);
      this.#skip -= at;
    } else if (this.#head !== undefined) {
      // Rare (a header split by a read) and short: the copy is of one chunk now and then.
      bytes = Buffer.concat([this.#head, bytes]);
      this.#head = undefined;
    }
    while (at < bytes.length) {
      const left = bytes.length - at;
      const second = left < 2 ? 0 : bytes[at + 1]!;
      const size = second & 0x7f;
      const header = (size === 126 ? 4 : size === 127 ? 10 : 2) + ((second & 0x80) !== 0 ? 4 : 0);
      if (left < 2 || left < header) {
        this.#head = Buffer.from(bytes.subarray(at));
        return;
      }
      const length = size === 126 ? bytes.readUInt16BE(at + 2) : size === 127 ? Number(bytes.readBigUInt64BE(at + 2)) : size;
      const opcode = bytes[at]! & 0x0f;
      if (opcode === OPCODE.text) this.text += 1;
      else if (opcode === OPCODE.close) this.closed = true;
      at += header + length;
      if (at > bytes.length) {
        this.#skip = at - bytes.length;
        return;
      }
    }
  }
}
