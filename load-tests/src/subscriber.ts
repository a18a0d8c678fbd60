import { randomBytes } from "node:crypto";
import { connect } from "node:net";
import type { Socket } from "node:net";
import { PayloadScanner } from "./payload.js";
import type { DeliveryTracker } from "./stats.js";
import type { Target } from "./targets.js";

export type Transport = "sse" | "ws";

/** How long a subscription may take to become live, in ms. */
const SUBSCRIBE_TIMEOUT_MS = 30_000;
/**
 * How much a paused (batch) subscriber's socket reads ahead of its drain, in bytes (characters,
 * latin1): 1, so it reads once after each drain and stops. Node reads a socket until this much
 * waits unread; with a large mark (4 MiB until 2026-12-04) it read each message as it came, one
 * callback per message per socket: at W1's 100,000 deliveries/s that kept the harness at 93-99%
 * of its core, whose queueing then showed in the eager subscribers' latencies. Now what arrives
 * between two drains waits in the kernel and comes up in one read (libuv reads up to 32 × 64 KiB
 * a turn); the kernel still acknowledges it, on its delayed-ACK timer (not at once: with Nagle a
 * server holds its next messages for that ACK, see docs/performance.md, 2026-12-05), so the server
 * sees a reader.
 */
const BATCH_READ_AHEAD_BYTES = 1;

/**
 * One subscriber over a raw socket: an SSE GET or a WebSocket upgrade written by hand, and the
 * bytes that come back scanned for payloads (`PayloadScanner`) without parsing SSE, chunked
 * encoding or WebSocket frames. The server's frames are unmasked and carry each payload whole, so
 * that is enough; the harness sends nothing after the handshake (the servers' protocol pings are
 * turned off for benchmarks).
 *
 * An eager subscriber reads every chunk as it arrives and its deliveries carry latencies; a batch
 * subscriber stays paused and is drained by `drain()` (the harness calls it every few hundred ms),
 * so thousands of subscribers cost the harness one read each per interval instead of one per
 * message: the harness stays cheaper than the server it measures.
 */
export class Subscriber {
  readonly #socket: Socket;
  readonly #scanner: PayloadScanner;
  #live = false;
  #head = "";
  closed = false;

  private constructor(
    socket: Socket,
    tracker: DeliveryTracker,
    /** Reads as data arrives (and samples latency); otherwise drained in batches. */
    readonly eager: boolean,
  ) {
    this.#socket = socket;
    this.#scanner = new PayloadScanner((seq, publisher, sentMs, user) => tracker.record(seq, publisher, sentMs, performance.now(), user));
  }

  /** Opens a subscription to `channel` (with `filter`, JSON text, when given) and resolves once it is live. */
  static open(
    target: Target,
    transport: Transport,
    channel: string,
    options: { tracker: DeliveryTracker; eager: boolean; localAddress: string; filter?: string },
  ): Promise<Subscriber> {
    const socket = connect({
      host: target.host,
      port: target.port,
      localAddress: options.localAddress,
      ...(options.eager ? {} : { readableHighWaterMark: BATCH_READ_AHEAD_BYTES }),
    });
    socket.setNoDelay(true);
    socket.setEncoding("latin1");
    const sub = new Subscriber(socket, options.tracker, options.eager);
    const request = transport === "sse" ? target.sse(channel, options.filter) : target.ws(channel, options.filter);
    const upgrade =
      transport === "ws"
        ? `Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${randomBytes(16).toString("base64")}\r\nSec-WebSocket-Version: 13\r\n`
        : "Accept: text/event-stream\r\n";
    socket.write(`GET ${request.path} HTTP/1.1\r\nHost: ${target.host}\r\n${upgrade}${request.headers}\r\n`);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => fail(new Error(`subscription to ${channel} not live within ${SUBSCRIBE_TIMEOUT_MS} ms`)), SUBSCRIBE_TIMEOUT_MS);
      const fail = (err: Error) => {
        clearTimeout(timer);
        socket.destroy();
        reject(err);
      };
      socket.on("error", (err) => (sub.#live ? (sub.closed = true) : fail(err)));
      socket.on("close", () => {
        sub.closed = true;
        if (!sub.#live) fail(new Error(`closed before live: ${sub.#head.slice(0, 200)}`));
      });
      const onHandshake = (chunk: string) => {
        sub.#head += chunk;
        const headEnd = sub.#head.indexOf("\r\n\r\n");
        if (headEnd === -1) return;
        const status = Number(sub.#head.slice(9, 12));
        if (status !== 200 && status !== 101) return fail(new Error(`status ${status}: ${sub.#head.slice(0, 300)}`));
        if (target.readyMarker !== undefined && !sub.#head.includes(target.readyMarker, headEnd)) return;
        sub.#live = true;
        clearTimeout(timer);
        socket.off("data", onHandshake);
        // Whatever came with the handshake may already hold messages.
        sub.#scanner.feed(sub.#head.slice(headEnd + 4));
        sub.#head = "";
        if (sub.eager) socket.on("data", (data: string) => sub.#scanner.feed(data));
        else socket.pause();
        resolve(sub);
      };
      socket.on("data", onHandshake);
    });
  }

  /** Reads what a batch subscriber has waiting. */
  drain(): void {
    if (this.eager || this.closed) return;
    for (let chunk = this.#socket.read() as string | null; chunk !== null; chunk = this.#socket.read() as string | null) {
      this.#scanner.feed(chunk);
    }
  }

  close(): void {
    this.#socket.destroy();
  }
}
