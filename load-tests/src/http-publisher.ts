import { connect } from "node:net";
import type { Socket } from "node:net";
import { ACCEPTED, CONNECTION_CLOSED } from "./publisher.js";
import type { Publisher } from "./publisher.js";
import type { Target } from "./targets.js";

/**
 * How long before the server's announced keep-alive timeout (`Keep-Alive: timeout=N`) a connection
 * idle since its last answer is no longer reused, in ms: as Node's HTTP agent does, so a request is
 * not sent into the server's close of an idle connection (reset unread, a failed publish).
 */
const KEEP_ALIVE_REUSE_MARGIN_MS = 1000;

/**
 * One keep-alive HTTP/1.1 connection that publishes one request at a time, over a raw socket:
 * Node's `http` client costs several times more CPU per request, and the harness must not be the
 * bottleneck. Parses just the status line and the body length (Content-Length or chunked).
 */
export class HttpPublisher implements Publisher {
  #socket: Socket | undefined;
  #buffer = "";
  #done: ((status: number) => void) | undefined;
  #closed = false;
  /** When the last answer came, and until when after it the server said it keeps the connection. */
  #answeredAt = 0;
  #keepAliveMs = Number.POSITIVE_INFINITY;

  constructor(
    private readonly target: Target,
    private readonly localAddress: string,
  ) {}

  /** Whether a request is in flight. */
  get busy(): boolean {
    return this.#done !== undefined;
  }

  /** Sends one publish; resolves with the status (0 when the connection failed). */
  send(channel: string, payload: string): Promise<number> {
    const { path, headers, body } = this.target.publish(channel);
    return this.#post(path, headers, body(payload));
  }

  /** Sends several publishes to `channel` in one request (route 12); resolves with the status. */
  sendBatch(channel: string, payloads: readonly string[]): Promise<number> {
    const batch = this.target.publishBatch?.(channel);
    if (batch === undefined) throw new Error(`${this.target.name} has no batch publish`);
    return this.#post(batch.path, batch.headers, batch.body(payloads));
  }

  #post(path: string, headers: string, text: string): Promise<number> {
    if (this.#done !== undefined) throw new Error("HttpPublisher: one request at a time");
    if (this.#socket !== undefined && performance.now() - this.#answeredAt >= this.#keepAliveMs - KEEP_ALIVE_REUSE_MARGIN_MS) {
      this.#socket.destroy();
      this.#socket = undefined;
    }
    const socket = this.#socket ?? this.#open();
    return new Promise((resolve) => {
      this.#done = resolve;
      socket.write(
        `POST ${path} HTTP/1.1\r\nHost: ${this.target.host}\r\n${headers}Content-Length: ${Buffer.byteLength(text)}\r\n\r\n${text}`,
        "latin1",
      );
    });
  }

  /** Sends one publish; resolves with `ACCEPTED` for a 2xx, else `http_<status>` or `CONNECTION_CLOSED`. */
  async publish(channel: string, payload: string): Promise<string> {
    return outcome(await this.send(channel, payload));
  }

  /** Sends `payloads` in one batch request; resolves as `publish` does, for all of them. */
  readonly publishBatch = async (channel: string, payloads: readonly string[]): Promise<string> => outcome(await this.sendBatch(channel, payloads));

  close(): void {
    this.#closed = true;
    this.#socket?.destroy();
  }

  #open(): Socket {
    const socket = connect({ host: this.target.host, port: this.target.port, localAddress: this.localAddress });
    socket.setNoDelay(true);
    socket.setEncoding("latin1");
    socket.on("data", (chunk: string) => this.#feed(chunk));
    // A socket let go of (closed by an answer, or idle too long) fails nothing when it closes.
    const fail = () => {
      if (this.#socket !== socket) return;
      this.#socket = undefined;
      this.#buffer = "";
      this.#finish(0);
    };
    socket.on("error", fail);
    socket.on("close", fail);
    this.#socket = socket;
    return socket;
  }

  #feed(chunk: string): void {
    this.#buffer += chunk;
    const headEnd = this.#buffer.indexOf("\r\n\r\n");
    if (headEnd === -1) return;
    const head = this.#buffer.slice(0, headEnd);
    const status = Number(head.slice(9, 12));
    const length = /\r\ncontent-length:\s*(\d+)/i.exec(head);
    let end: number;
    if (length !== null) {
      end = headEnd + 4 + Number(length[1]);
      if (this.#buffer.length < end) return;
    } else if (/\r\ntransfer-encoding:\s*chunked/i.test(head)) {
      const last = this.#buffer.indexOf("\r\n0\r\n\r\n", headEnd);
      const first = this.#buffer.startsWith("0\r\n\r\n", headEnd + 4);
      if (last === -1 && !first) return;
      end = first ? headEnd + 9 : last + 7;
    } else {
      end = headEnd + 4;
    }
    this.#buffer = this.#buffer.slice(end);
    this.#answeredAt = performance.now();
    const keepAlive = /\r\nkeep-alive:\s*timeout=(\d+)/i.exec(head);
    this.#keepAliveMs = keepAlive === null ? Number.POSITIVE_INFINITY : Number(keepAlive[1]) * 1000;
    if (/\r\nconnection:\s*close/i.test(head)) {
      this.#socket?.destroy();
      this.#socket = undefined;
    }
    this.#finish(status);
  }

  #finish(status: number): void {
    const done = this.#done;
    this.#done = undefined;
    done?.(this.#closed ? 0 : status);
  }
}

/** What a request's status says of its publishes (see `Publisher.publish`). */
function outcome(status: number): string {
  if (status >= 200 && status < 300) return ACCEPTED;
  return status === 0 ? CONNECTION_CLOSED : `http_${status}`;
}
