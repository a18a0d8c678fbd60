import type { ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { ERROR_CODES, PlateError } from "@plate/protocol";
import type { ReadyFrame, RealtimeReadyFrame } from "@plate/protocol";
import { Connection } from "../core/connection.js";
import type { ConnectionOptions, EndReason } from "../core/connection.js";
import type { Outbound, SharedFrame } from "../core/outbound.js";
import { errorAnswer } from "../http/refusals.js";
import type { SubscriberNoDelay } from "./no-delay.js";
import type { DirectSend } from "@plate/direct-send";
import { takeOverSocket } from "./socket-takeover.js";

/** Output limits of a subscriber connection (settings, see config.ts). */
export interface OutputLimits {
  /** Unsent bytes a subscriber may have waiting before it is dropped as a slow consumer. */
  readonly maxBufferedBytes: number;
  /** How long a dropped connection's last bytes may take to leave before the socket is destroyed. */
  readonly graceMs: number;
  /** `SUBSCRIBER_NO_DELAY`: whether the socket sends each write at once now, or holds small ones for the peer's ACK (Nagle). */
  readonly noDelay: SubscriberNoDelay;
  /** `SUBSCRIBER_DIRECT_SEND`: the addon that writes a message in one send(2), or undefined to write through Node. */
  readonly directSend: DirectSend | undefined;
}

const PING = Buffer.from(": ping\n\n");
/** The bytes of a named event besides its name and data: `event: `, `\ndata: `, `\n\n`. */
const EVENT_OVERHEAD_BYTES = 16;

/**
 * A Server-Sent Events subscriber. Until `start`, it is an ordinary response: ending before it
 * answers with a plain HTTP error (the spec: "errors are plain HTTP answers before any stream
 * starts"). `start` writes the headers by hand and takes the socket over from Node's HTTP server
 * (see takeOverSocket): from then on each message is one `write` of a shared Buffer to the
 * socket, and the bytes waiting unsent are the socket's `writableLength`.
 */
export class SseConnection extends Connection {
  readonly transport = "sse" as const;
  /** The response until `start` takes its socket over; let go then, with the request it holds. */
  #res: ServerResponse | undefined;
  #socket: Socket | undefined;
  /** The answer's own headers (CORS, request id) until `start` writes them; let go then. */
  #headers: Readonly<Record<string, string>> | undefined;

  constructor(
    res: ServerResponse,
    options: ConnectionOptions,
    headers: Readonly<Record<string, string>>,
    private readonly retryMs: number,
    private readonly limits: OutputLimits,
  ) {
    super(options);
    this.#res = res;
    this.#headers = headers;
    res.once("close", this.#onClose);
  }

  readonly #onClose = (): void => this.end("normal");

  protected get output(): Socket | undefined {
    return this.#socket;
  }

  protected get maxBufferedBytes(): number {
    return this.limits.maxBufferedBytes;
  }

  protected get noDelayNow(): boolean {
    return this.limits.noDelay.noDelay;
  }

  protected get directSend(): DirectSend | undefined {
    return this.limits.directSend;
  }

  protected bytesOf(out: Outbound): number {
    return out.sse.length;
  }

  protected frameBytes(type: string, json: string): number {
    return EVENT_OVERHEAD_BYTES + type.length + Buffer.byteLength(json);
  }

  protected writeReady(ready: ReadyFrame | RealtimeReadyFrame, streamId: string | undefined): void {
    let head = "HTTP/1.1 200 OK\r\n";
    for (const [name, value] of Object.entries(this.#headers!)) head += `${name}: ${value}\r\n`;
    head +=
      "Content-Type: text/event-stream; charset=utf-8\r\n" +
      "Cache-Control: no-cache\r\n" +
      "X-Accel-Buffering: no\r\n" +
      // The stream ends when the connection does: no chunked encoding, no second request.
      "Connection: close\r\n\r\n" +
      `retry: ${this.retryMs}\n\n` +
      // The event's id: EventSource sends it back as Last-Event-ID if it reconnects before any
      // message arrives. The starting position, or on a resume the client's own last id (see
      // Connection.start); either is a well-formed position, never text from the request.
      (streamId === undefined ? "" : `id: ${streamId}\n`) +
      `event: ready\ndata: ${JSON.stringify(ready)}\n\n`;
    const res = this.#res!;
    this.#res = undefined;
    this.#headers = undefined;
    res.off("close", this.#onClose);
    const socket = takeOverSocket(res, head);
    if (socket === undefined) {
      this.end("normal");
      return;
    }
    this.#socket = socket;
    // `on`, not `once`: a socket closes once, and `once` keeps a wrapper and its state per stream.
    socket.on("close", this.#onClose);
  }

  /** A named event (so a browser's `onmessage` sees only messages), within the output limit. */
  protected writeFrame(type: string, json: string): void {
    const socket = this.#socket;
    if (socket === undefined) return;
    const event = `event: ${type}\ndata: ${json}\n\n`;
    if (socket.writableLength + Buffer.byteLength(event) > this.limits.maxBufferedBytes) {
      this.end("slow_consumer");
      return;
    }
    this.writeInTurn(socket, event);
  }

  protected writeShared(frame: SharedFrame): void {
    if (this.#socket !== undefined) this.#writeBytes(this.#socket, frame.sse);
  }

  protected write(out: Outbound): boolean {
    return this.#writeBytes(this.#socket!, out.sse);
  }

  #writeBytes(socket: Socket, bytes: Buffer): boolean {
    if (socket.writableLength + bytes.length > this.limits.maxBufferedBytes) {
      this.end("slow_consumer");
      return false;
    }
    this.writeInTurn(socket, bytes);
    return true;
  }

  heartbeat(): void {
    const socket = this.#socket;
    if (socket === undefined || this.ended) return;
    if (socket.writableLength + PING.length > this.limits.maxBufferedBytes) {
      this.end("slow_consumer");
      return;
    }
    socket.write(PING);
  }

  protected close(reason: EndReason, message: string): void {
    const socket = this.#socket;
    if (socket === undefined) {
      const res = this.#res;
      if (res === undefined || res.destroyed || res.writableEnded || res.headersSent) return;
      const code = reason === "normal" ? "internal_error" : reason;
      const status = ERROR_CODES[code].status;
      const answer = errorAnswer(new PlateError(code, message, status === 429 || status === 503 ? { retryAfterS: 1 } : {}));
      res.writeHead(answer.status, { ...this.#headers, ...answer.headers });
      res.end(answer.body);
      return;
    }
    if (socket.destroyed || socket.writableEnded) return;
    if (reason !== "normal" && reason !== "slow_consumer") {
      // A named event, so a browser's onmessage does not see it; the stream ends right after.
      socket.write(`event: error\ndata: ${JSON.stringify({ type: "error", error: { code: reason, message } })}\n\n`);
    }
    socket.end();
    // A client that does not read may never let the end flush: free the socket after a grace.
    setTimeout(() => socket.destroy(), this.limits.graceMs).unref();
  }
}
