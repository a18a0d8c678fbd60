import type { Server } from "node:http";
import type { Socket } from "node:net";
import { loggablePath, requestIdOf } from "../core/request-id.js";
import type { Services } from "../services.js";
import { tooLarge } from "./body.js";
import { matchPublish, publishAnswer, publishBodyLimit } from "./publish.js";
import type { PublishHeaders } from "./publish.js";
import { answerHeaders, rawHead } from "./raw-response.js";
import { errorAnswer, refuse } from "./refusals.js";
import { atTurnEnd } from "./turn-answers.js";
import type { Matched } from "./routes.js";

/**
 * Longest request head (request line and headers, without the blank line) the lane reads. A
 * longer one goes to Node's parser with the rest of the connection (which takes up to its own
 * 16 KiB); a publish's head is a few hundred bytes.
 */
const FAST_LANE_MAX_HEAD_BYTES = 8192;

/**
 * How often the lane closes its connections past their deadline (idle past the server's
 * `keepAliveTimeout`, or silent past its `headersTimeout`), in ms: one sweep for every connection
 * instead of a timer each, which every SSE stream and WebSocket (on the lane until its first
 * request) would leave behind as garbage. A deadline is kept to within this.
 */
const FAST_LANE_SWEEP_MS = 1000;

/** A request the lane serves: a publish (routes 1, 6, 12) read whole, as Node would read it. */
interface LaneRequest {
  readonly url: string;
  readonly match: Matched;
  readonly headers: PublishHeaders & { readonly "x-request-id"?: string; readonly origin?: string };
  readonly body: string;
  readonly bodyBytes: number;
  /** Where the next request starts in the buffer it was read from. */
  readonly end: number;
  /** `Connection: close` was asked for: the connection ends after the answer. */
  readonly close: boolean;
}

/** Not a request the lane serves: the connection goes to Node's HTTP server from here. */
const ELSEWHERE = 0;
/** The start of a request that may be one the lane serves, its head not all read yet. */
const INCOMPLETE_HEAD = 1;
/** A publish the lane serves whose head is read and body not all yet. */
const INCOMPLETE_BODY = 2;
/** What Node's server writes to a request past its headers or request timeout, before it closes the connection. */
const REQUEST_TIMEOUT_ANSWER = "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n\r\n";

/** One connection on the lane. */
interface LaneConnection {
  readonly lane: FastLane;
  readonly socket: Socket;
  /** Bytes read and not yet served (the start of a next request), or undefined. */
  buffer: Buffer | undefined;
  /** A request is being served: its answer is not yet written. */
  busy: boolean;
  /** The socket is paused by the lane (bytes held past the request in flight, or its answers not drained). */
  paused: boolean;
  /** The buffer holds the start of a request, and the lane waits for one more read to finish it. */
  partial: boolean;
  /** The client ended its side: the connection ends once what it sent is answered. */
  ended: boolean;
  /**
   * When (ms since the epoch) the connection is closed if no request is being served: its first
   * request's head is due, its keep-alive ends, or (`partial`) the request begun is due.
   */
  deadline: number;
  /** When (ms since the epoch) the request being read began: the connection's opening for its first, else the read of its first bytes; 0 between requests. */
  begun: number;
  /** The answer waiting for the end of this event-loop turn ("" when none), and whether the connection ends after it. */
  answer: string;
  closeAfter: boolean;
}

/**
 * Each socket's lane connection, while it is on the lane. Not a property of the socket: a socket
 * handed to Node (every SSE stream and WebSocket) keeps the shape Node's own code sees.
 */
const LANES = new WeakMap<Socket, LaneConnection>();

/**
 * The publish fast lane: keep-alive publishes read and answered on the socket, before Node's HTTP
 * server. A bare Node HTTP server that parses a publish's JSON and answers spends 16.8 µs of CPU a
 * publish on one core (57,300/s, load-tests W3 path); a `net` server that does the same on the
 * socket, 9.8 µs (96,300/s): IncomingMessage, ServerResponse, their streams, events and header
 * checks are most of a publish's cost. The lane takes that out of Plate's publish path.
 *
 * It serves only what it reads whole and plainly: `POST` to a publish route, `HTTP/1.1`, a head of
 * visible ASCII with CRLF line ends and no folded lines, one `Host`, one `Content-Length` within the
 * route's body limit, no `Transfer-Encoding`, `Expect` or `Upgrade`, the body already read. At the
 * first request that is anything else (another route, a WebSocket upgrade, a request not whole
 * after two reads, an oversized or chunked body, a malformed head) the connection goes, from that request's
 * first byte, to Node's HTTP server for the rest of its life (its listener of `connection`, taken
 * over here, is called with the socket and the unread bytes put back): every such case is answered
 * by the code that answered it before, with Node's parser, limits and timeouts. A publish answered
 * here has the same status, headers and body as one answered by Node.
 *
 * Answers are written at the end of the event-loop turn, with every other answer of the turn
 * (`atTurnEnd`, turn-answers.ts, with the measured reason). One request is served at a time per
 * connection, and the next is read once the answer is written and drained, so a client that does
 * not read its answers stops being read. A connection idle for the server's `keepAliveTimeout`
 * (the one its answers announce) and `HTTP_KEEP_ALIVE_GRACE_MS` after an answer, or silent for
 * `headersTimeout` before its first request, is closed; one whose request stalls after its first
 * read is answered 408 and closed when Node's server would close it, `headersTimeout` after the
 * request began while its head is incomplete and `requestTimeout` once its head is read. Each
 * within `FAST_LANE_SWEEP_MS`.
 *
 * Checked against Node 20.20: `http.Server` takes a connection through its `connection` listener
 * (documented: emitting `connection` injects a socket); the hand-over tests of fast-lane.test.ts
 * fail if a Node release stops taking one that way.
 */
export class FastLane {
  readonly #services: Services;
  readonly #server: Server;
  readonly #nodeListeners: ((socket: Socket) => void)[];
  readonly #connections = new Set<LaneConnection>();
  /** The `keepAliveTimeout` the connection headers were written for, and those headers. */
  #keepAliveMs = Number.NaN;
  #keepAlive = "";
  #closing = false;
  readonly #sweeper: NodeJS.Timeout;

  constructor(services: Services, server: Server) {
    this.#services = services;
    this.#server = server;
    this.#nodeListeners = server.listeners("connection") as ((socket: Socket) => void)[];
    server.removeAllListeners("connection");
    server.on("connection", (socket: Socket) => this.#open(socket));
    this.#sweeper = setInterval(() => this.sweep(), FAST_LANE_SWEEP_MS);
    this.#sweeper.unref();
  }

  /**
   * Closes the lane's idle connections; the busy ones close after their answer (`Connection:
   * close`), and one holding the start of a request goes to Node, which answers it as a request
   * in progress when its server closes.
   */
  closeIdle(): void {
    this.#closing = true;
    for (const conn of this.#connections) {
      if (conn.busy) continue;
      if (conn.buffer !== undefined) this.#handOver(conn);
      else conn.socket.destroy();
    }
  }

  /** Closes every connection on the lane, busy or not, and stops its sweep. */
  closeAll(): void {
    this.#closing = true;
    clearInterval(this.#sweeper);
    for (const conn of this.#connections) conn.socket.destroy();
  }

  #open(socket: Socket): void {
    const now = Date.now();
    const conn: LaneConnection = {
      lane: this,
      socket,
      buffer: undefined,
      busy: false,
      paused: false,
      partial: false,
      ended: false,
      // Before its first request, a connection waits as long as Node's would for that request's head.
      deadline: now + this.#server.headersTimeout,
      begun: now,
      answer: "",
      closeAfter: false,
    };
    LANES.set(socket, conn);
    this.#connections.add(conn);
    for (const [event, listener] of LISTENERS) socket.on(event, listener);
  }

  /** Bytes came in on `conn`. */
  read(conn: LaneConnection, chunk: Buffer): void {
    // Past an answer that closes the connection, nothing more is read.
    if (conn.closeAfter) return;
    conn.buffer = conn.buffer === undefined ? chunk : Buffer.concat([conn.buffer, chunk]);
    if (conn.busy) this.#pause(conn);
    else this.#next(conn);
  }

  /**
   * Closes the connections past their deadline but those serving a request (the broker's timeouts
   * bound it); one holding a request begun and stalled is answered 408 first, as Node's server
   * answers a request past its timeouts. Handed to Node instead, it would have them counted again
   * from the hand-over, and outlive them by as much.
   */
  sweep(): void {
    const now = Date.now();
    for (const conn of this.#connections) {
      if (conn.busy || now < conn.deadline) continue;
      try {
        if (conn.partial) conn.socket.write(REQUEST_TIMEOUT_ANSWER);
        conn.socket.destroy();
      } catch (err) {
        this.failed(conn, err);
      }
    }
  }

  /** The client ended its side (Node's server takes half-closed connections): what it sent is still answered. */
  endedBy(conn: LaneConnection): void {
    conn.ended = true;
    if (!conn.busy) this.#next(conn);
  }

  closed(conn: LaneConnection): void {
    this.#connections.delete(conn);
    conn.buffer = undefined;
  }

  drained(conn: LaneConnection): void {
    if (conn.busy || conn.socket.destroyed) return;
    this.#resume(conn);
    this.#next(conn);
  }

  /** Serves the next request in `conn`'s buffer, or hands the connection to Node. */
  #next(conn: LaneConnection): void {
    const buffer = conn.buffer;
    if (buffer === undefined) {
      if (conn.ended) conn.socket.end();
      else this.#resume(conn);
      return;
    }
    if (conn.socket.writableNeedDrain) return this.#pause(conn);
    const request = readRequest(this.#services, buffer);
    if (request === ELSEWHERE) return this.#handOver(conn);
    if (request === INCOMPLETE_HEAD || request === INCOMPLETE_BODY) {
      // A request cut off by the client's end is answered by nobody, as Node's server does.
      if (conn.ended) return void conn.socket.destroy();
      // Requests sent back to back are cut where a read ends: the rest comes with the next read. A
      // request still not whole after it (a large body, or a client sending slowly) goes to Node.
      if (conn.partial) return this.#handOver(conn);
      conn.partial = true;
      // Stalled, it is due when Node's server would have it due: its headers timeout after it
      // began while its head is incomplete, its request timeout once the head is read (0: none).
      if (conn.begun === 0) conn.begun = Date.now();
      const timeoutMs = request === INCOMPLETE_HEAD ? this.#server.headersTimeout : this.#server.requestTimeout;
      conn.deadline = timeoutMs > 0 ? conn.begun + timeoutMs : Number.POSITIVE_INFINITY;
      this.#resume(conn);
      return;
    }
    conn.partial = false;
    conn.begun = 0;
    conn.buffer = request.end === buffer.length ? undefined : buffer.subarray(request.end);
    // Bytes held past the request in flight (a client sending without waiting): the socket is not
    // read further until they are served, so the lane holds one read at most, and a client's end
    // of its side waits behind them (a paused stream keeps its end) for Node, if they go to Node.
    if (conn.buffer !== undefined) this.#pause(conn);
    conn.busy = true;
    this.#serve(conn, request);
  }

  #serve(conn: LaneConnection, request: LaneRequest): void {
    const services = this.#services;
    const started = performance.now();
    const requestId = requestIdOf(request.headers["x-request-id"]);
    const headers = answerHeaders(services, request.headers.origin, requestId);
    const readBody = (maxBytes: number) => {
      if (request.bodyBytes > maxBytes) throw tooLarge(maxBytes);
      return request.body;
    };
    publishAnswer(services, request.match, request.headers, readBody).then(
      (text) => {
        headers["Content-Type"] = "application/json";
        headers["Content-Length"] = String(Buffer.byteLength(text));
        this.#answer(conn, 200, headers, text, request.close);
        if (services.log.debugEnabled) {
          services.log.debug("publish", { requestId, path: loggablePath(request.url), status: 200, ms: Math.round(performance.now() - started) });
        }
      },
      (err: unknown) => {
        const answer = errorAnswer(refuse(services, err, { what: "publish refused", requestId, path: loggablePath(request.url) }));
        this.#answer(conn, answer.status, Object.assign(headers, answer.headers), answer.body, request.close);
      },
    );
  }

  /** Writes an answer at the end of this event-loop turn: the status line, `headers`, Node's `Date` and connection headers, `body`. */
  #answer(conn: LaneConnection, status: number, headers: Record<string, string>, body: string, close: boolean): void {
    conn.closeAfter = close || this.#closing;
    conn.answer = rawHead(status, headers) + "Date: " + httpDate() + (conn.closeAfter ? "\r\nConnection: close\r\n\r\n" : this.#keepAliveHeaders()) + body;
    atTurnEnd(writeAnswer, conn);
  }

  /** `Connection` and `Keep-Alive` as Node writes them for the server's `keepAliveTimeout` (which may change while running). */
  #keepAliveHeaders(): string {
    const ms = this.#server.keepAliveTimeout;
    if (ms !== this.#keepAliveMs) {
      this.#keepAliveMs = ms;
      // Node leaves `Keep-Alive` out when the timeout is 0 (no timeout).
      this.#keepAlive = `\r\nConnection: keep-alive\r\n${ms > 0 ? `Keep-Alive: timeout=${Math.floor(ms / 1000)}\r\n` : ""}\r\n`;
    }
    return this.#keepAlive;
  }

  /** A fault of the lane's own on `conn` (a bug, never a client's bytes): logged, and that connection closed. */
  failed(conn: LaneConnection, err: unknown): void {
    this.#services.log.error("fast lane failed", { error: String(err) });
    conn.socket.destroy();
  }

  /** Writes `conn`'s answer (at the end of the turn it was given in), then serves its next request. */
  writeAnswer(conn: LaneConnection): void {
    const { socket } = conn;
    const answer = conn.answer;
    conn.answer = "";
    conn.busy = false;
    if (socket.destroyed) return;
    if (conn.closeAfter) {
      conn.buffer = undefined;
      socket.end(answer);
      return;
    }
    socket.write(answer);
    // A keep-alive connection idle past the announced timeout and its grace is closed (0: never).
    // Without the grace, a client's request crossing the close on the wire would be reset unread.
    const keepAliveMs = this.#server.keepAliveTimeout;
    conn.deadline = keepAliveMs > 0 ? Date.now() + keepAliveMs + this.#services.config.httpKeepAliveGraceMs : Number.POSITIVE_INFINITY;
    if (this.#connections.has(conn)) this.#next(conn);
  }

  #pause(conn: LaneConnection): void {
    if (conn.paused) return;
    conn.paused = true;
    conn.socket.pause();
  }

  #resume(conn: LaneConnection): void {
    if (!conn.paused) return;
    conn.paused = false;
    conn.socket.resume();
  }

  /**
   * Gives the connection to Node's HTTP server from the first unserved byte: the lane lets go of
   * the socket, puts the unread bytes back, and calls Node's `connection` listener. The socket is
   * paused meanwhile, so Node reads those bytes first (resumed, they come before anything read later).
   */
  #handOver(conn: LaneConnection): void {
    const socket = conn.socket;
    this.#connections.delete(conn);
    for (const [event, listener] of LISTENERS) socket.off(event, listener);
    LANES.delete(socket);
    // Bytes cannot be put back before an end already seen (the lane pauses to keep it from coming first).
    if (socket.readableEnded) {
      socket.destroy();
      return;
    }
    socket.pause();
    if (conn.buffer !== undefined) socket.unshift(conn.buffer);
    conn.buffer = undefined;
    for (const listener of this.#nodeListeners) listener.call(this.#server, socket);
    socket.resume();
  }
}

/*
 * The socket's listeners, once for every connection (nothing allocated per connection). Whatever a
 * client sends cannot throw out of them: a fault of the lane's own closes that one connection.
 */

function onData(this: Socket, chunk: Buffer): void {
  const conn = LANES.get(this);
  if (conn === undefined) return;
  try {
    conn.lane.read(conn, chunk);
  } catch (err) {
    conn.lane.failed(conn, err);
  }
}

function onError(this: Socket): void {
  // A reset or a write to a closed peer: the socket closes, and `onClose` lets it go.
  this.destroy();
}

function onClose(this: Socket): void {
  const conn = LANES.get(this);
  if (conn !== undefined) conn.lane.closed(conn);
}

function onDrain(this: Socket): void {
  const conn = LANES.get(this);
  if (conn !== undefined) guarded(conn, () => conn.lane.drained(conn));
}

function onEnd(this: Socket): void {
  const conn = LANES.get(this);
  if (conn !== undefined) guarded(conn, () => conn.lane.endedBy(conn));
}

/** The lane's listeners of a socket: added when it opens, removed when it goes to Node. */
const LISTENERS = [
  ["data", onData],
  ["error", onError],
  ["close", onClose],
  ["drain", onDrain],
  ["end", onEnd],
] as const satisfies readonly (readonly [string, (this: Socket, ...args: never[]) => void])[];

function guarded(conn: LaneConnection, work: () => void): void {
  try {
    work();
  } catch (err) {
    conn.lane.failed(conn, err);
  }
}

function writeAnswer(conn: LaneConnection): void {
  try {
    conn.lane.writeAnswer(conn);
  } catch (err) {
    conn.lane.failed(conn, err);
  }
}

/**
 * What makes a header line (split at CRLF) not plain: a byte other than visible ASCII, space or
 * tab; so also a CR or LF not in a CRLF pair. One character class per line: the head tested at
 * once with the pairs' lookarounds was 4% of a publish's instructions.
 */
const NOT_PLAIN_LINE = /[^\t\x20-\x7e]/;
/** The request line the lane serves: `POST`, an origin-form target, HTTP/1.1. */
const REQUEST_LINE = /^POST (\/[\x21-\x7e]*) HTTP\/1\.1$/;
/** A header name (RFC 9110 token). */
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** A `Content-Length` the lane takes. */
const LENGTH = /^\d{1,15}$/;
/** Where a request's head ends. */
const HEAD_END = Buffer.from("\r\n\r\n");

/**
 * The publish request at the start of `buffer`, read whole; `ELSEWHERE` when the lane does not
 * serve it (see `FastLane`: another route, or anything not plain), `INCOMPLETE_HEAD` or
 * `INCOMPLETE_BODY` when it may yet be one but is not all in `buffer`.
 */
function readRequest(
  services: Services,
  buffer: Buffer,
): LaneRequest | typeof ELSEWHERE | typeof INCOMPLETE_HEAD | typeof INCOMPLETE_BODY {
  const headEnd = buffer.indexOf(HEAD_END);
  if (headEnd < 0) return buffer.length > FAST_LANE_MAX_HEAD_BYTES ? ELSEWHERE : INCOMPLETE_HEAD;
  if (headEnd > FAST_LANE_MAX_HEAD_BYTES) return ELSEWHERE;
  const head = buffer.toString("latin1", 0, headEnd);
  const lines = head.split("\r\n");
  // Visible ASCII only, as the header lines below are.
  const target = REQUEST_LINE.exec(lines[0]!);
  if (target === null) return ELSEWHERE;
  const url = target[1]!;
  const match = matchPublish(url);
  if (match === undefined) return ELSEWHERE;
  const headers: Record<string, string> = {};
  let length: string | undefined;
  let hosts = 0;
  let close = false;
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    if (NOT_PLAIN_LINE.test(line)) return ELSEWHERE;
    const colon = line.indexOf(":");
    if (colon <= 0) return ELSEWHERE;
    const name = line.slice(0, colon);
    if (!TOKEN.test(name)) return ELSEWHERE;
    const value = line.slice(colon + 1).trim();
    const key = name.toLowerCase();
    switch (key) {
      case "content-length":
        if (length !== undefined || !LENGTH.test(value)) return ELSEWHERE;
        length = value;
        break;
      case "host":
        hosts++;
        break;
      case "connection": {
        const option = value.toLowerCase();
        if (option === "close") close = true;
        else if (option !== "keep-alive") return ELSEWHERE;
        break;
      }
      case "transfer-encoding":
      case "expect":
      case "upgrade":
        return ELSEWHERE;
      case "authorization":
      case "content-type":
      case "idempotency-key":
      case "x-request-id":
      case "origin": {
        // Node keeps the first of some repeated headers and joins others: a repeat goes to Node.
        if (headers[key] !== undefined) return ELSEWHERE;
        headers[key] = value;
        break;
      }
      default:
        break;
    }
  }
  if (hosts !== 1 || length === undefined) return ELSEWHERE;
  const bodyBytes = Number(length);
  if (bodyBytes > publishBodyLimit(services, match)) return ELSEWHERE;
  const bodyStart = headEnd + HEAD_END.length;
  const end = bodyStart + bodyBytes;
  if (buffer.length < end) return INCOMPLETE_BODY;
  return { url, match, headers, body: buffer.toString("utf8", bodyStart, end), bodyBytes, end, close };
}

/** The second `httpDate` last formatted, and its text. */
let dateSecond = -1;
let dateText = "";

/** The `Date` header's value (RFC 9110 IMF-fixdate), formatted once a second as Node does. */
function httpDate(): string {
  const now = Date.now();
  const second = Math.floor(now / 1000);
  if (second !== dateSecond) {
    dateSecond = second;
    dateText = new Date(now).toUTCString();
  }
  return dateText;
}
