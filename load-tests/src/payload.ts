/**
 * What every published payload carries, and how subscribers find it in the bytes they receive.
 *
 * A payload is the JSON object `{"s":<seq>,"p":<publisher>,"t":<send time, ms>}`: `s` counts the
 * publisher's messages to one channel from 0, `t` is `performance.now()` when the request was
 * written (publishers and subscribers share the harness process, so one clock). Plate wraps it in
 * its envelope and Nchan sends it as is; either way the object's bytes arrive contiguous inside an
 * SSE event or a WebSocket text frame, so a subscriber scans raw bytes for `{"s":` and never parses
 * SSE, chunked encoding or WebSocket framing.
 *
 * A payload meant for one filtered subscriber (W1-filtered) ends with the field its filter tests,
 * `"user":"u<n>"` (`userFilter(n)`), so the subscriber that reads it can tell a wrong delivery.
 */

/** The `user` of a payload that has none. */
export const NO_USER = -1;

/** The JSON text of one payload; with `user` (0 or more), the field `"user":"u<user>"` that `userFilter(user)` matches. */
export function encodePayload(seq: number, publisher: number, sentMs: number, user: number = NO_USER): string {
  const head = '{"s":' + seq + ',"p":' + publisher + ',"t":' + sentMs.toFixed(3);
  return user === NO_USER ? head + "}" : head + ',"user":"u' + user + '"}';
}

/** The subscription filter (Koncorde's syntax, as JSON text) that exactly the payloads of `user` match. */
export function userFilter(user: number): string {
  return '{"equals":{"user":"u' + user + '"}}';
}

/** Called for every payload found, with its fields (`user` is `NO_USER` when it has none). */
export type PayloadSink = (seq: number, publisher: number, sentMs: number, user: number) => void;

/** `,"user":"u`, which the digits of a payload's user follow. */
const USER_FIELD = Buffer.from(',"user":"u', "latin1");

const START = Buffer.from('{"s":', "latin1");
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const DOT = 0x2e;
const ZERO = 0x30;
const NINE = 0x39;

/**
 * Scans received bytes for payloads. Holds back a payload cut by a read boundary (a copy of it)
 * until the next chunk completes it; everything else between payloads (headers, framing) is
 * skipped.
 *
 * Bytes, not text: a subscriber decoding what it read as latin1 allocated a string the size of
 * every read on the harness's heap, and the young-generation collections that followed (every
 * ~300 ms at W1 against Plate, whose events carry an envelope and so ~3× Nchan's bytes) paused
 * the harness for 3-8 ms while deliveries waited to be read: that wait counted in the servers'
 * p99. A Buffer's bytes are outside V8's heap. See docs/performance.md, 2026-12-05.
 */
export class PayloadScanner {
  #rest: Buffer | undefined;

  constructor(private readonly sink: PayloadSink) {}

  /** Feeds one chunk as read (the payload is ASCII; framing bytes do not matter). Keeps no reference to it. */
  feed(chunk: Uint8Array): void {
    const bytes = this.#rest === undefined ? asBuffer(chunk) : Buffer.concat([this.#rest, chunk]);
    this.#rest = undefined;
    let at = bytes.indexOf(START);
    while (at !== -1) {
      const end = bytes.indexOf(CLOSE_BRACE, at);
      if (end === -1) {
        this.#rest = Buffer.from(bytes.subarray(at));
        return;
      }
      this.#parse(bytes, at + START.length, end);
      at = bytes.indexOf(START, end);
    }
    // A start cut in the middle of `{"s":` is kept too.
    const tail = bytes.lastIndexOf(OPEN_BRACE);
    if (tail !== -1 && tail > bytes.length - START.length) this.#rest = Buffer.from(bytes.subarray(tail));
  }

  /**
   * Reads `<seq>,"p":<publisher>,"t":<ms>` and an optional `,"user":"u<n>"` from `from` to `end`
   * digit by digit: slicing and `Number()` allocated three strings per delivery, which made the
   * harness, not the server, the busier process in W1 with 1,000 subscribers.
   */
  #parse(bytes: Buffer, from: number, end: number): void {
    let i = from;
    let seq = 0;
    for (let c = bytes[i]!; c >= ZERO && c <= NINE; c = bytes[++i]!) seq = seq * 10 + (c - ZERO);
    i += 5; // ,"p":
    let publisher = 0;
    for (let c = bytes[i]!; c >= ZERO && c <= NINE; c = bytes[++i]!) publisher = publisher * 10 + (c - ZERO);
    i += 5; // ,"t":
    let whole = 0;
    for (let c = bytes[i]!; c >= ZERO && c <= NINE; c = bytes[++i]!) whole = whole * 10 + (c - ZERO);
    let fraction = 0;
    let scale = 1;
    if (bytes[i] === DOT) {
      for (let c = bytes[++i]!; c >= ZERO && c <= NINE; c = bytes[++i]!) {
        fraction = fraction * 10 + (c - ZERO);
        scale *= 10;
      }
    }
    let user = NO_USER;
    if (i + USER_FIELD.length <= end && bytes.compare(USER_FIELD, 0, USER_FIELD.length, i, i + USER_FIELD.length) === 0) {
      i += USER_FIELD.length;
      user = 0;
      for (let c = bytes[i]!; c >= ZERO && c <= NINE; c = bytes[++i]!) user = user * 10 + (c - ZERO);
      i += 1; // "
    }
    if (i !== end) return;
    this.sink(seq, publisher, whole + fraction / scale, user);
  }
}

/** `chunk` as a Buffer over the same memory (a socket's reads already are). */
function asBuffer(chunk: Uint8Array): Buffer {
  return Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
}
