import { connect } from "node:net";
import { readFile } from "node:fs/promises";
import fc from "fast-check";
import { KEYS } from "./node.js";

/**
 * Hostile traffic for the fuzz test: HTTP requests, upgrade requests and WebSocket frames built
 * byte by byte (what `fetch` and `ws` would refuse to send), and a client that reads whatever the
 * server answers. Each case is data, so fast-check can shrink a failing one and print it.
 */

/** One exchange over one TCP connection: what was written, in order. */
export interface FuzzCase {
  readonly kind: "http" | "raw" | "upgrade";
  /** Written one after the other; WebSocket frames follow an upgrade request. */
  readonly writes: readonly Buffer[];
  /**
   * Whether the client shuts its side down once everything is written (every case but a valid
   * request, which asks for `Connection: close` and waits for the answer: Node ends a connection
   * whose client shut down, so an answer that needs a Redis round trip, such as a publish on the
   * Redis broker, would be lost).
   */
  readonly halfClose: boolean;
}

/** A case that prints as readable text when fast-check reports it (bytes as latin1, cut short). */
function fuzzCase(kind: FuzzCase["kind"], writes: readonly Buffer[], halfClose = true): FuzzCase {
  return {
    kind,
    writes,
    halfClose,
    [fc.toStringMethod]: () => `${kind}: ${writes.map((w) => JSON.stringify(w.subarray(0, 300).toString("latin1")) + (w.length > 300 ? `…(${w.length} bytes)` : "")).join(" + ")}`,
  } as FuzzCase;
}

/** What the server did with a case. */
export interface FuzzOutcome {
  /** Status of the first answer; 0 when the server answered nothing (closing is allowed). */
  readonly status: number;
  /** Close codes of the WebSocket close frames the server sent after a 101. */
  readonly closeCodes: readonly number[];
  /** The first bytes of the answer, for the failure message. */
  readonly head: string;
}

const KEY = KEYS.acme;
const PLATES = ["acme", "globex", "nope", "demo"];
const CHANNELS = ["alerts", "room.lobby", "user:1:events", "*", "user:*", "a?c"];
const WS_ACCEPT_KEY = "dGhlIHNhbXBsZSBub25jZQ==";

const segment = fc.oneof(
  fc.constantFrom(...PLATES, ...CHANNELS, "pubsub", "publish", "subscribe", "ws", "client", "s", "admin", "plates", "keys", "realtime"),
  fc.stringMatching(/^[A-Za-z0-9_.:@=~*?-]{0,24}$/),
  fc.constantFrom("%", "%zz", "%00", "%73", "%2F", "..", ".", "\\", "a\\b", "%E0%A4%A", "\u00e9", "x".repeat(300), ""),
  fc.string({ maxLength: 12 }).map((text) => encodeURIComponent(text)),
);

const query = fc.oneof(
  fc.constant(""),
  fc
    .array(
      fc.tuple(
        fc.constantFrom("pattern", "lastEventId", "since", "max_uses", "ttl", "expiry", "max_dur", "x", "channel", "since.alerts", "channels", "patterns", "token"),
        fc.oneof(fc.constantFrom("true", "1", "-1", "99999999999999999999", "", "%", "pp_1-0"), fc.string({ maxLength: 8 }).map(encodeURIComponent)),
      ),
      { maxLength: 3 },
    )
    .map((pairs) => (pairs.length === 0 ? "" : "?" + pairs.map(([k, v]) => `${k}=${v}`).join("&"))),
);

/** A request target: mostly the spec's routes with odd segments, sometimes a target that is not a path at all. */
const target = fc.oneof(
  { weight: 6, arbitrary: fc.tuple(fc.array(segment, { minLength: 1, maxLength: 5 }), query).map(([parts, q]) => "/" + parts.join("/") + q) },
  {
    weight: 3,
    arbitrary: fc
      .tuple(fc.constantFrom(...PLATES), fc.constantFrom(...CHANNELS), fc.constantFrom("publish", "subscribe", "ws", "client"), query)
      .map(([plate, channel, route, q]) => `/${plate}/pubsub/${channel}/${route}${q}`),
  },
  {
    weight: 1,
    arbitrary: fc.constantFrom("//a:99999/", "http://a:99999/", "*", "http://x/acme/pubsub/a/publish", "/%", "/a\\b", "//", "/healthz/..", "/admin/plates/%zz", "?"),
  },
);

const method = fc.oneof(
  { weight: 8, arbitrary: fc.constantFrom("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD") },
  { weight: 1, arbitrary: fc.stringMatching(/^[A-Z]{1,8}$/) },
);

/** Any JSON value, and a few shapes that broke parsers elsewhere. */
const jsonText = fc.oneof(
  fc.json({ maxDepth: 4 }),
  fc.jsonValue({ maxDepth: 3 }).map((message) => JSON.stringify({ message })),
  fc.integer({ min: 1, max: 30_000 }).map((depth) => `{"message":${"[".repeat(depth)}${"]".repeat(depth)}}`),
  fc.integer({ min: 1, max: 30_000 }).map((depth) => `{"history":${'{"a":'.repeat(depth)}1${"}".repeat(depth)}}`),
  fc.constantFrom('{"message":', "{", '{"message":1}{', '{"__proto__":{"x":1},"message":1}', "\u0000", '"\ud800"', "1e999999"),
);

const body = fc.oneof(
  { weight: 4, arbitrary: jsonText.map((text) => Buffer.from(text, "utf8")) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 256 }).map((bytes) => Buffer.from(bytes)) },
  { weight: 1, arbitrary: fc.constant(Buffer.alloc(0)) },
);

const headerValue = fc.oneof(fc.string({ maxLength: 40 }).filter((v) => !/[\r\n\0]/.test(v)), fc.constantFrom("", " ", "x".repeat(5000)));

/** Headers beside Host and the body's length: each one often missing, often odd. */
const headers = fc.record(
  {
    authorization: fc.oneof(fc.constantFrom(`Bearer ${KEY}`, KEY, "Bearer", "Bearer ", `Bearer ${KEYS.globex}`, "Basic abc"), headerValue),
    contentType: fc.oneof(fc.constantFrom("application/json", "application/json; charset=utf-8", "text/plain", "application/jsonx", ""), headerValue),
    contentLength: fc.oneof(fc.constantFrom("-1", "abc", "99999999999999999999", "0", "1e3", " 5"), fc.nat({ max: 100_000 }).map(String)),
    chunked: fc.constant(true),
    idempotencyKey: headerValue,
    lastEventId: fc.oneof(fc.constantFrom("pp1boh18_0-0", "x_1-1", "_-", "a_99999999999999999999-0"), headerValue),
    origin: fc.oneof(fc.constantFrom("https://evil.example", "null"), headerValue),
    requestId: headerValue,
    extra: fc.array(fc.tuple(fc.stringMatching(/^[A-Za-z-]{1,20}$/), headerValue), { maxLength: 3 }),
  },
  { requiredKeys: [] },
);

type Headers = typeof headers extends fc.Arbitrary<infer H> ? H : never;

function headerLines(h: Headers, bodyLength: number): string {
  let text = "Host: fuzz\r\n";
  if (h.authorization !== undefined) text += `Authorization: ${h.authorization}\r\n`;
  if (h.contentType !== undefined) text += `Content-Type: ${h.contentType}\r\n`;
  if (h.chunked === true) text += "Transfer-Encoding: chunked\r\n";
  else text += `Content-Length: ${h.contentLength ?? bodyLength}\r\n`;
  if (h.idempotencyKey !== undefined) text += `Idempotency-Key: ${h.idempotencyKey}\r\n`;
  if (h.lastEventId !== undefined) text += `Last-Event-ID: ${h.lastEventId}\r\n`;
  if (h.origin !== undefined) text += `Origin: ${h.origin}\r\n`;
  if (h.requestId !== undefined) text += `X-Request-Id: ${h.requestId}\r\n`;
  for (const [name, value] of h.extra ?? []) text += `${name}: ${value}\r\n`;
  return text;
}

function chunk(bytes: Buffer): Buffer {
  return Buffer.concat([Buffer.from(`${bytes.length.toString(16)}\r\n`), bytes, Buffer.from("\r\n0\r\n\r\n")]);
}

/** An HTTP request, well formed or nearly, to any route. */
export const httpCase: fc.Arbitrary<FuzzCase> = fc.tuple(method, target, headers, body).map(([m, t, h, b]) =>
  fuzzCase("http", [Buffer.concat([Buffer.from(`${m} ${t} HTTP/1.1\r\n${headerLines(h, b.length)}Connection: close\r\n\r\n`, "latin1"), h.chunked ? chunk(b) : b])]),
);

/** A well-formed request with a valid key to a real route, with odd but legal values: the paths users take. */
export const validCase: fc.Arbitrary<FuzzCase> = fc
  .tuple(
    fc.constantFrom("publish", "subscribe", "client-get", "client-post"),
    // Often a channel the WebSocket cases subscribe to, so publishes reach subscribers in flight.
    fc.oneof(fc.constantFrom("alerts", "room.lobby"), fc.stringMatching(/^[A-Za-z0-9_.:@=~-]{1,40}$/)),
    fc.jsonValue({ maxDepth: 4 }),
    query,
  )
  .map(([route, channel, value, q]) => {
    const auth = `Authorization: Bearer ${KEY}\r\n`;
    const json = (body: string) => `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`;
    const path = `/acme/pubsub/${channel}`;
    switch (route) {
      case "publish":
        return fuzzCase("http", [Buffer.from(`POST ${path}/publish HTTP/1.1\r\nHost: fuzz\r\n${auth}${json(JSON.stringify({ message: value }))}`)], false);
      case "subscribe":
        return fuzzCase("http", [Buffer.from(`GET ${path}/subscribe${q} HTTP/1.1\r\nHost: fuzz\r\n${auth}Connection: close\r\n\r\n`)], false);
      case "client-get":
        return fuzzCase("http", [Buffer.from(`GET ${path}/client${q} HTTP/1.1\r\nHost: fuzz\r\n${auth}Connection: close\r\n\r\n`)], false);
      default:
        return fuzzCase("http", [Buffer.from(`POST ${path}/client HTTP/1.1\r\nHost: fuzz\r\n${auth}${json(JSON.stringify(value))}`)], false);
    }
  });

/** A valid publish, then mangled: bytes flipped, cut, inserted or repeated anywhere in it. */
export const rawCase: fc.Arbitrary<FuzzCase> = fc
  .tuple(
    fc.constantFrom(
      `POST /acme/pubsub/alerts/publish HTTP/1.1\r\nHost: fuzz\r\nAuthorization: Bearer ${KEY}\r\nContent-Type: application/json\r\nContent-Length: 17\r\nConnection: close\r\n\r\n{"message":"hi"}`,
      `GET /acme/pubsub/alerts/ws HTTP/1.1\r\nHost: fuzz\r\nAuthorization: Bearer ${KEY}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: ${WS_ACCEPT_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
      `POST /acme/pubsub/alerts/client HTTP/1.1\r\nHost: fuzz\r\nAuthorization: Bearer ${KEY}\r\nContent-Type: application/json\r\nContent-Length: 15\r\nConnection: close\r\n\r\n{"max_uses":2}`,
    ),
    fc.array(
      fc.record({ at: fc.nat(), op: fc.constantFrom("flip", "cut", "insert", "repeat"), bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }), size: fc.nat({ max: 40 }) }),
      { minLength: 1, maxLength: 4 },
    ),
  )
  .map(([request, mutations]) => {
    let bytes = Buffer.from(request, "latin1");
    for (const { at, op, bytes: extra, size } of mutations) {
      const i = at % (bytes.length + 1);
      if (op === "flip" && i < bytes.length) bytes[i] = bytes[i]! ^ (extra[0]! | 1);
      else if (op === "cut") bytes = Buffer.concat([bytes.subarray(0, i), bytes.subarray(i + size)]);
      else if (op === "insert") bytes = Buffer.concat([bytes.subarray(0, i), Buffer.from(extra), bytes.subarray(i)]);
      else if (op === "repeat") bytes = Buffer.concat([bytes.subarray(0, i), bytes.subarray(i, i + size), bytes.subarray(i)]);
    }
    return fuzzCase("raw", [bytes]);
  });

/** A client-to-server WebSocket frame, valid or not (RFC 6455, 5.2). */
const frame = fc
  .record({
    fin: fc.boolean(),
    rsv: fc.oneof({ weight: 9, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 7 }) }),
    opcode: fc.oneof({ weight: 6, arbitrary: fc.constantFrom(0x1, 0x2, 0x0, 0x8, 0x9, 0xa) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 15 }) }),
    masked: fc.oneof({ weight: 9, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
    payload: fc.oneof(
      fc.constantFrom('{"type":"ping"}', `{"auth":"${KEY}"}`, `{"auth":"${KEY}","since":"x_1-0"}`, '{"type":"subscribe"}', "{", "null", "[]", '{"auth":1}',
        `{"type":"auth","key":"${KEY}"}`, '{"type":"subscribe","ref":1,"channel":"alerts"}', '{"type":"subscribe","ref":"r","pattern":"user:*","since":"x_1-0"}',
        '{"type":"unsubscribe","ref":2,"channel":"alerts"}', '{"type":"subscribe","ref":[1],"channel":"a b"}').map((t) => Buffer.from(t)),
      fc.json({ maxDepth: 3 }).map((t) => Buffer.from(t)),
      fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)),
      fc.integer({ min: 4000, max: 70_000 }).map((n) => Buffer.alloc(n, 0x61)),
    ),
    declaredLength: fc.option(fc.constantFrom(0, 125, 126, 65_535, 65_536, 2 ** 31, Number.MAX_SAFE_INTEGER), { freq: 8 }),
  })
  .map(encodeFrame);

function encodeFrame(f: { fin: boolean; rsv: number; opcode: number; masked: boolean; payload: Buffer; declaredLength: number | null }): Buffer {
  const length = f.declaredLength ?? f.payload.length;
  const head = [((f.fin ? 1 : 0) << 7) | (f.rsv << 4) | f.opcode];
  const mask = f.masked ? 0x80 : 0;
  let ext = Buffer.alloc(0);
  if (length < 126) head.push(mask | length);
  else if (length < 65_536) {
    head.push(mask | 126);
    ext = Buffer.alloc(2);
    ext.writeUInt16BE(length);
  } else {
    head.push(mask | 127);
    ext = Buffer.alloc(8);
    ext.writeBigUInt64BE(BigInt(length));
  }
  const key = Buffer.from([0x12, 0x34, 0x56, 0x78]);
  const payload = Buffer.from(f.payload);
  if (f.masked) for (let i = 0; i < payload.length; i++) payload[i] = payload[i]! ^ key[i % 4]!;
  return Buffer.concat([Buffer.from(head), ext, f.masked ? key : Buffer.alloc(0), payload]);
}

/** An upgrade request (valid, or odd in its route, headers or key), then WebSocket frames. */
export const upgradeCase: fc.Arbitrary<FuzzCase> = fc
  .tuple(
    fc.oneof(
      {
        weight: 3,
        arbitrary: fc.constantFrom(
          "/acme/pubsub/alerts/ws",
          "/acme/ws/subscribe/alerts",
          "/acme/pubsub/user:*/ws?pattern=true",
          "/acme/pubsub/alerts/ws?since=x_1-0",
          "/acme/realtime?channel=alerts&pattern=user:*",
          "/acme/realtime?channel=alerts&since.alerts=x_1-0",
        ),
      },
      { weight: 2, arbitrary: target },
    ),
    fc.boolean(),
    fc.record(
      {
        // Mostly a valid handshake, so most frames reach the node's own handling.
        upgrade: fc.oneof({ weight: 4, arbitrary: fc.constant("websocket") }, { weight: 1, arbitrary: headerValue }),
        key: fc.oneof({ weight: 4, arbitrary: fc.constant(WS_ACCEPT_KEY) }, { weight: 1, arbitrary: headerValue }),
        version: fc.oneof({ weight: 4, arbitrary: fc.constant("13") }, { weight: 1, arbitrary: headerValue }),
        protocol: headerValue,
        extensions: fc.constantFrom("permessage-deflate", "x; y=1", ""),
      },
      { requiredKeys: ["upgrade", "key", "version"] },
    ),
    fc.array(frame, { maxLength: 6 }),
  )
  .map(([path, withKey, h, frames]) => {
    let text = `GET ${path} HTTP/1.1\r\nHost: fuzz\r\nConnection: Upgrade\r\nUpgrade: ${h.upgrade}\r\n`;
    if (h.key !== undefined) text += `Sec-WebSocket-Key: ${h.key}\r\n`;
    if (h.version !== undefined) text += `Sec-WebSocket-Version: ${h.version}\r\n`;
    if (h.protocol !== undefined) text += `Sec-WebSocket-Protocol: ${h.protocol}\r\n`;
    if (h.extensions !== undefined) text += `Sec-WebSocket-Extensions: ${h.extensions}\r\n`;
    if (withKey) text += `Authorization: Bearer ${KEY}\r\n`;
    return fuzzCase("upgrade", [Buffer.from(text + "\r\n", "latin1"), ...frames]);
  });

/** How long a case may wait for the server once everything is written, in ms. */
const SETTLE_MS = 400;

/**
 * Runs one case against `port`: writes everything, reads until the server closes, or until the
 * answer is a stream that would stay open (SSE, WebSocket) and `SETTLE_MS` has passed.
 */
export function runCase(port: number, c: FuzzCase): Promise<FuzzOutcome> {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    const chunks: Buffer[] = [];
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(outcome(Buffer.concat(chunks)));
    };
    let timer = setTimeout(finish, 5_000);
    socket.on("connect", () => {
      for (const bytes of c.writes) socket.write(bytes);
      if (c.kind !== "upgrade" && c.halfClose) socket.end();
      clearTimeout(timer);
      timer = setTimeout(finish, c.kind === "upgrade" ? SETTLE_MS : 3_000);
    });
    socket.on("data", (data: Buffer) => {
      chunks.push(data);
      // An SSE stream stays open: its status is all this case needs.
      if (c.kind !== "upgrade" && /^HTTP\/1\.1 200[^]*text\/event-stream/.test(Buffer.concat(chunks).subarray(0, 2048).toString("latin1"))) finish();
    });
    socket.on("error", () => undefined);
    socket.on("close", finish);
  });
}

function outcome(bytes: Buffer): FuzzOutcome {
  const text = bytes.toString("latin1");
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(text)?.[1] ?? "0");
  const closeCodes: number[] = [];
  if (status === 101) {
    let i = text.indexOf("\r\n\r\n") + 4;
    while (i + 2 <= bytes.length) {
      const opcode = bytes[i]! & 0x0f;
      let length = bytes[i + 1]! & 0x7f;
      let start = i + 2;
      if (length === 126) {
        if (start + 2 > bytes.length) break;
        length = bytes.readUInt16BE(start);
        start += 2;
      } else if (length === 127) {
        if (start + 8 > bytes.length) break;
        length = Number(bytes.readBigUInt64BE(start));
        start += 8;
      }
      if (start + length > bytes.length) break;
      if (opcode === 0x8 && length >= 2) closeCodes.push(bytes.readUInt16BE(start));
      i = start + length;
    }
  }
  return { status, closeCodes, head: text.slice(0, 300) };
}

/**
 * What a client's mistake may never get: a 5xx answer, or a WebSocket closed for an internal
 * error (1011). Answers a reason, or undefined when the outcome is fine.
 */
export function serverFault(result: FuzzOutcome): string | undefined {
  if (result.status >= 500) return `answered ${result.status}: ${JSON.stringify(result.head)}`;
  if (result.closeCodes.includes(1011)) return `closed the WebSocket with 1011: ${JSON.stringify(result.head)}`;
  return undefined;
}

/** Resident memory of a process, in MB (Linux). */
export async function rssMb(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? "0") / 1024;
}
