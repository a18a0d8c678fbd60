import { PlateClientError, errorFromResponse } from "./errors.js";
import type { ErrorCode } from "./errors.js";
import { IdleWatch } from "./transport.js";
import type { Opened, Target, TransportEvents } from "./transport.js";
import type { Envelope, Ready, Reset } from "./types.js";

/**
 * Server-Sent Events over `fetch` (browsers and Node 20 alike), rather than `EventSource`, so that
 * the client can send the API key as a header, read the error code of a refused request (an
 * `EventSource` sees only "error"), and choose its own reconnect policy. Resumes with
 * `?lastEventId=` (a header would make a browser send a CORS preflight).
 */
export function openSse(target: Target, events: TransportEvents, fetchImpl: typeof fetch): Opened {
  const controller = new AbortController();
  let over = false;
  const finish = (error: PlateClientError): void => {
    if (over) return;
    over = true;
    idle.stop();
    controller.abort();
    events.end(error);
  };
  const idle = new IdleWatch(target.idleTimeoutMs, (ms) =>
    finish(new PlateClientError("network_error", `Nothing arrived for ${ms} ms, not even a heartbeat.`)),
  );
  const url = new URL(target.url);
  if (target.since !== undefined) url.searchParams.set("lastEventId", target.since);
  const headers: Record<string, string> = { Accept: "text/event-stream" };
  if (target.key !== undefined) headers.Authorization = `Bearer ${target.key}`;

  let endedWith: PlateClientError | undefined;
  const parser = new SseParser((event, data) => {
    switch (event) {
      case "message":
        events.message(JSON.parse(data) as Envelope);
        break;
      case "ready":
        events.ready(JSON.parse(data) as Ready);
        break;
      case "reset":
        events.reset(JSON.parse(data) as Reset);
        break;
      case "error": {
        // The server says why it ends the stream (max_dur, slow consumer, drain); the end follows.
        const body = JSON.parse(data) as { error: { code: ErrorCode; message: string } };
        endedWith = new PlateClientError(body.error.code, body.error.message);
        break;
      }
    }
  });

  void readEventStream(fetchImpl, url, { headers, signal: controller.signal, cache: "no-store" }, parser, () => idle.touch()).then((error) =>
    finish(endedWith ?? error),
  );

  return {
    close() {
      over = true;
      idle.stop();
      controller.abort();
    },
  };
}

/**
 * Reads the event stream at `url` into `parser` until it ends; answers why it ended (never
 * rejects): the refusal of an answer that is not a stream, or `network_error` for an end or a
 * failure of the stream. `touched` runs on every chunk (for the idle watch). The caller prefers the
 * `event: error` the server sent before the end, when there was one.
 */
export async function readEventStream(
  fetchImpl: typeof fetch,
  url: string | URL,
  init: RequestInit,
  parser: SseParser,
  touched: () => void,
): Promise<PlateClientError> {
  try {
    const res = await fetchImpl(url, init);
    if (!res.ok) return await errorFromResponse(res);
    if (!String(res.headers.get("content-type")).startsWith("text/event-stream") || res.body === null) {
      return new PlateClientError("unexpected_response", `Not an event stream (HTTP ${res.status}).`, { status: res.status });
    }
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      touched();
      parser.push(decoder.decode(value, { stream: true }));
    }
    return new PlateClientError("network_error", "The server ended the stream.");
  } catch (err) {
    return new PlateClientError("network_error", `The stream failed: ${String(err)}`, { cause: err });
  }
}

/**
 * The event-stream format (WHATWG HTML, 9.2.6): lines end with CRLF, LF or CR; `event`, `data` and
 * `id` fields; comments start with `:`; an event is dispatched at a blank line, and one cut off by
 * the end of the stream is dropped.
 */
export class SseParser {
  #buffer = "";
  #event = "";
  #data: string[] = [];
  #afterCr = false;

  constructor(private readonly dispatch: (event: string, data: string) => void) {}

  push(chunk: string): void {
    // The LF of a CRLF cut between chunks: the CR already ended the line.
    const skip = this.#afterCr && chunk.startsWith("\n");
    this.#afterCr = false;
    this.#buffer += skip ? chunk.slice(1) : chunk;
    let start = 0;
    for (;;) {
      const lf = this.#buffer.indexOf("\n", start);
      const cr = this.#buffer.indexOf("\r", start);
      let end: number;
      let next: number;
      if (cr !== -1 && (lf === -1 || cr < lf)) {
        end = cr;
        if (cr === this.#buffer.length - 1) {
          // Maybe the first half of a CRLF: the line ends here, and an LF first in the next chunk is skipped.
          this.#afterCr = true;
          next = cr + 1;
        } else {
          next = this.#buffer[cr + 1] === "\n" ? cr + 2 : cr + 1;
        }
      } else if (lf !== -1) {
        end = lf;
        next = lf + 1;
      } else {
        break;
      }
      this.#line(this.#buffer.slice(start, end));
      start = next;
    }
    this.#buffer = this.#buffer.slice(start);
  }

  #line(line: string): void {
    if (line === "") {
      if (this.#data.length > 0) this.dispatch(this.#event || "message", this.#data.join("\n"));
      this.#event = "";
      this.#data = [];
      return;
    }
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.#event = value;
    else if (field === "data") this.#data.push(value);
  }
}
