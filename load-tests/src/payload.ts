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
const USER_FIELD = ',"user":"u';

const START = '{"s":';

/**
 * Scans received text for payloads. Holds back a payload cut by a read boundary until the next
 * chunk completes it; everything else between payloads (headers, framing) is skipped.
 */
export class PayloadScanner {
  #rest = "";

  constructor(private readonly sink: PayloadSink) {}

  /** Feeds one chunk, decoded as latin1 (the payload is ASCII; framing bytes do not matter). */
  feed(chunk: string): void {
    const text = this.#rest === "" ? chunk : this.#rest + chunk;
    this.#rest = "";
    let at = text.indexOf(START);
    while (at !== -1) {
      const end = text.indexOf("}", at);
      if (end === -1) {
        this.#rest = text.slice(at);
        return;
      }
      this.#parse(text, at + START.length, end);
      at = text.indexOf(START, end);
    }
    // A start cut in the middle of `{"s":` is kept too.
    const tail = text.lastIndexOf("{");
    if (tail !== -1 && tail > text.length - START.length) this.#rest = text.slice(tail);
  }

  /**
   * Reads `<seq>,"p":<publisher>,"t":<ms>` and an optional `,"user":"u<n>"` from `from` to `end`
   * digit by digit: slicing and `Number()` allocated three strings per delivery, which made the
   * harness, not the server, the busier process in W1 with 1,000 subscribers.
   */
  #parse(text: string, from: number, end: number): void {
    let i = from;
    let seq = 0;
    for (let c = text.charCodeAt(i); c >= 48 && c <= 57; c = text.charCodeAt(++i)) seq = seq * 10 + (c - 48);
    i += 5; // ,"p":
    let publisher = 0;
    for (let c = text.charCodeAt(i); c >= 48 && c <= 57; c = text.charCodeAt(++i)) publisher = publisher * 10 + (c - 48);
    i += 5; // ,"t":
    let whole = 0;
    for (let c = text.charCodeAt(i); c >= 48 && c <= 57; c = text.charCodeAt(++i)) whole = whole * 10 + (c - 48);
    let fraction = 0;
    let scale = 1;
    if (text.charCodeAt(i) === 46) {
      for (let c = text.charCodeAt(++i); c >= 48 && c <= 57; c = text.charCodeAt(++i)) {
        fraction = fraction * 10 + (c - 48);
        scale *= 10;
      }
    }
    let user = NO_USER;
    if (text.startsWith(USER_FIELD, i)) {
      i += USER_FIELD.length;
      user = 0;
      for (let c = text.charCodeAt(i); c >= 48 && c <= 57; c = text.charCodeAt(++i)) user = user * 10 + (c - 48);
      i += 1; // "
    }
    if (i !== end) return;
    this.sink(seq, publisher, whole + fraction / scale, user);
  }
}
