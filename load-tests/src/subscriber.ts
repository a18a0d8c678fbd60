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
 * The one buffer every subscriber's socket reads into, in bytes (`onread`): a read is scanned
 * before the next one lands in it, so reading allocates nothing. Until 2026-12-05 each read came
 * up as a string or a Buffer of its own, and the harness's collections of them paused its reads
 * for 3-15 ms a few times a second, which counted in the servers' p99 (see `PayloadScanner`).
 * A batch subscriber's drain reads on while a read fills it.
 */
const READ_BUFFER_BYTES = 64 * 1024;
const READ_BUFFER = Buffer.allocUnsafe(READ_BUFFER_BYTES);

/**
 * One subscriber over a raw socket: an SSE GET or a WebSocket upgrade written by hand, and the
 * bytes that come back scanned for payloads (`PayloadScanner`) without parsing SSE, chunked
 * encoding or WebSocket frames. The server's frames are unmasked and carry each payload whole, so
 * that is enough; the harness sends nothing after the handshake (the servers' protocol pings are
 * turned off for benchmarks).
 *
 * An eager subscriber reads every chunk as it arrives and its deliveries carry latencies; a batch
 * subscriber stops reading once live and is drained by `drain()` (the harness calls it every 100 ms,
 * `BATCH_DRAIN_MS`), so thousands of subscribers cost the harness one read each per interval instead of
 * one per message: the harness stays cheaper than the server it measures. Until 2026-12-04 a
 * paused socket still read each message as it came (Node reads ahead to its high-water mark), which
 * kept the harness at 93-99% of its core at W1. Now what arrives between two drains waits in the
 * kernel and comes up in one read; the kernel still acknowledges it, on its delayed-ACK timer (not
 * at once: with Nagle a server holds its next messages for that ACK, see docs/performance.md,
 * 2026-12-05), so the server sees a reader.
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
    // Until the subscription is live, reads go to the handshake; then to the scanner.
    let read: (bytes: Uint8Array) => boolean = () => true;
    const socket = connect({
      host: target.host,
      port: target.port,
      localAddress: options.localAddress,
      onread: { buffer: READ_BUFFER, callback: (n, buffer) => read(buffer.subarray(0, n)) },
    });
    socket.setNoDelay(true);
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
      read = (bytes) => {
        sub.#head += Buffer.from(bytes).toString("latin1");
        const headEnd = sub.#head.indexOf("\r\n\r\n");
        if (headEnd === -1) return true;
        const status = Number(sub.#head.slice(9, 12));
        if (status !== 200 && status !== 101) {
          fail(new Error(`status ${status}: ${sub.#head.slice(0, 300)}`));
          return false;
        }
        if (target.readyMarker !== undefined && !sub.#head.includes(target.readyMarker, headEnd)) return true;
        sub.#live = true;
        clearTimeout(timer);
        // Whatever came with the handshake may already hold messages.
        sub.#scanner.feed(Buffer.from(sub.#head.slice(headEnd + 4), "latin1"));
        sub.#head = "";
        read = (more) => sub.#read(more);
        resolve(sub);
        // A batch subscriber stops reading here until its first drain.
        return sub.eager;
      };
    });
  }

  /**
   * One read: scanned at once. Answers whether to read on: an eager subscriber always does; a batch
   * subscriber's drain only while its reads fill the buffer (the kernel may hold more).
   */
  #read(bytes: Uint8Array): boolean {
    this.#scanner.feed(bytes);
    return this.eager || bytes.length === READ_BUFFER_BYTES;
  }

  /** Has a batch subscriber read what waits for it: its next read is in the event loop's next poll. */
  drain(): void {
    if (this.eager || this.closed) return;
    this.#socket.resume();
  }

  close(): void {
    this.#socket.destroy();
  }
}
