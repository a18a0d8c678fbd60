/**
 * What every published payload carries, and how subscribers find it in the bytes they receive.
 *
 * A payload is the JSON object `{"s":<seq>,"p":<publisher>,"t":<send time, ms>}`: `s` counts the
 * publisher's messages to one channel from 0, `t` is `performance.now()` when the request was
 * written (publishers and subscribers share the harness process, so one clock). Plate wraps it in
 * its envelope and Nchan sends it as is; either way the object's bytes arrive contiguous inside an
 * SSE event or a WebSocket text frame, so a subscriber scans raw bytes for `{"s":` and never parses
 * SSE, chunked encoding or WebSocket framing.
 */

/** The JSON text of one payload. */
export function encodePayload(seq: number, publisher: number, sentMs: number): string {
  return '{"s":' + seq + ',"p":' + publisher + ',"t":' + sentMs.toFixed(3) + "}";
}

/** Called for every payload found, with its fields. */
export type PayloadSink = (seq: number, publisher: number, sentMs: number) => void;

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

  #parse(text: string, from: number, end: number): void {
    const p = text.indexOf(',"p":', from);
    const t = text.indexOf(',"t":', from);
    if (p === -1 || t === -1 || t > end) return;
    this.sink(Number(text.slice(from, p)), Number(text.slice(p + 5, t)), Number(text.slice(t + 5, end)));
  }
}
