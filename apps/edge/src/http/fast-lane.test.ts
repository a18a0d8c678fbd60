import { connect } from "node:net";
import type { Socket } from "node:net";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KEYS, eventually, publish, startTestNode } from "../test-support/node.js";
import { SseClient } from "../test-support/sse.js";
import type { TestNode } from "../test-support/node.js";

/** One answer read off a keep-alive connection. */
interface Answer {
  readonly status: number;
  /** Header names in lower case, in the order written. */
  readonly names: readonly string[];
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string;
}

/**
 * A keep-alive HTTP/1.1 connection written byte for byte, its answers read one by one (each by its
 * Content-Length): what a backend's HTTP client does, with control over how the bytes are split.
 */
class Connection {
  readonly #socket: Socket;
  #buffer = Buffer.alloc(0);
  #waiting: (() => void) | undefined;
  #closed = false;
  readonly closed: Promise<void>;

  private constructor(socket: Socket) {
    this.#socket = socket;
    socket.on("data", (chunk: Buffer) => {
      this.#buffer = Buffer.concat([this.#buffer, chunk]);
      this.#waiting?.();
    });
    socket.on("error", () => undefined);
    this.closed = new Promise((resolve) =>
      socket.on("close", () => {
        this.#closed = true;
        this.#waiting?.();
        resolve();
      }),
    );
  }

  static open(url: string): Promise<Connection> {
    const { hostname, port } = new URL(url);
    return new Promise((resolve, reject) => {
      const socket = connect(Number(port), hostname, () => resolve(new Connection(socket)));
      socket.once("error", reject);
    });
  }

  write(bytes: string): void {
    this.#socket.write(bytes, "latin1");
  }

  /** Ends the client's side (a half close): answers still come. */
  end(): void {
    this.#socket.end();
  }

  pause(): void {
    this.#socket.pause();
  }

  resume(): void {
    this.#socket.resume();
  }

  /** The next answer; rejects when the connection closes first or nothing comes in `timeoutMs`. */
  async answer(timeoutMs = 5000): Promise<Answer> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const answer = this.#take();
      if (answer !== undefined) return answer;
      if (this.#closed) throw new Error(`closed before an answer; had: ${this.#buffer.toString("latin1")}`);
      if (Date.now() > deadline) throw new Error(`no answer in ${timeoutMs} ms; had: ${this.#buffer.toString("latin1")}`);
      await new Promise<void>((resolve) => {
        this.#waiting = resolve;
        setTimeout(resolve, 50);
      });
      this.#waiting = undefined;
    }
  }

  close(): void {
    this.#socket.destroy();
  }

  #take(): Answer | undefined {
    const end = this.#buffer.indexOf("\r\n\r\n");
    if (end < 0) return undefined;
    const [statusLine = "", ...lines] = this.#buffer.toString("latin1", 0, end).split("\r\n");
    const headers: Record<string, string> = {};
    const names: string[] = [];
    for (const line of lines) {
      const colon = line.indexOf(":");
      const name = line.slice(0, colon).toLowerCase();
      names.push(name);
      headers[name] = line.slice(colon + 1).trim();
    }
    const length = Number(headers["content-length"] ?? "0");
    if (this.#buffer.length < end + 4 + length) return undefined;
    const body = this.#buffer.toString("utf8", end + 4, end + 4 + length);
    this.#buffer = this.#buffer.subarray(end + 4 + length);
    return { status: Number(/^HTTP\/1\.1 (\d{3}) /.exec(statusLine)?.[1] ?? "0"), names, headers, body };
  }
}

/** A publish request to route 1 as a backend's client writes it. */
function publishRequest(channel: string, message: unknown, extraHeaders = ""): string {
  const body = JSON.stringify({ message });
  return (
    `POST /acme/pubsub/${channel}/publish HTTP/1.1\r\nHost: plate.test\r\nAuthorization: Bearer ${KEYS.acme}\r\n` +
    `Content-Type: application/json\r\n${extraHeaders}Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`
  );
}

/** A subscriber of `channel`: `published()` is what reached it, in order, before a last marker published through fetch. */
async function watch(t: TestNode, channel: string): Promise<{ published(): Promise<unknown[]> }> {
  const sub = await SseClient.open(`${t.url}/acme/pubsub/${channel}/subscribe`, { Authorization: `Bearer ${KEYS.acme}` });
  await sub.waitFor("ready");
  return {
    async published() {
      await publish(t.url, "acme", channel, "end of test");
      await eventually(() => sub.messages.some((m: { message: unknown }) => m.message === "end of test"));
      sub.close();
      const all = sub.messages.map((m: { message: unknown }) => m.message);
      return all.slice(0, all.indexOf("end of test"));
    },
  };
}

async function publishedTotal(t: TestNode): Promise<number> {
  return (await t.node.services.metrics.published.get()).values[0]?.value ?? 0;
}

describe("the publish fast lane (keep-alive publishes answered on the socket)", () => {
  let t: TestNode;
  beforeAll(async () => {
    // Unrated: one test publishes 40,000 messages as fast as the node takes them.
    t = await startTestNode({ PUBLISH_RATE_PER_S: "0" });
  });
  afterAll(() => t.cleanup());

  it("answers a publish with the same status, headers and body shape as Node's HTTP server does for a request it takes", async () => {
    const seen = await watch(t, "same");
    const conn = await Connection.open(t.url);
    try {
      conn.write(publishRequest("same", 1, "Origin: https://app.example\r\nX-Request-Id: lane-1\r\n"));
      const lane = await conn.answer();
      // A byte past ASCII in a header (obs-text, which Node takes) is not plain: Node's server answers it.
      conn.write(publishRequest("same", 2, "Origin: https://app.example\r\nX-Request-Id: node-1\r\nUser-Agent: caf\xe9\r\n"));
      const node = await conn.answer();
      expect([lane.status, node.status]).toEqual([200, 200]);
      expect([...lane.names].sort()).toEqual([...node.names].sort());
      for (const name of lane.names) {
        if (name === "date" || name === "x-request-id" || name === "content-length") continue;
        expect(lane.headers[name], name).toBe(node.headers[name]);
      }
      expect([lane.headers["x-request-id"], node.headers["x-request-id"]]).toEqual(["lane-1", "node-1"]);
      expect(lane.headers.date).toMatch(/^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$/);
      expect(Object.keys(JSON.parse(lane.body).data)).toEqual(Object.keys(JSON.parse(node.body).data));
      expect(await seen.published()).toEqual([1, 2]);
    } finally {
      conn.close();
    }
  });

  it("answers a refused publish with the spec's error and keeps the connection", async () => {
    const seen = await watch(t, "refused");
    const conn = await Connection.open(t.url);
    try {
      conn.write(publishRequest("refused", 1).replace(KEYS.acme, "not-a-key"));
      const refused = await conn.answer();
      expect([refused.status, JSON.parse(refused.body).error.code, refused.headers.connection]).toEqual([401, "invalid_api_key", "keep-alive"]);
      conn.write(publishRequest("refused", 2, "Idempotency-Key: \x7f\r\n").replace("\x7f", "a b"));
      expect(JSON.parse((await conn.answer()).body).error.code).toBe("invalid_parameter");
      conn.write(publishRequest("refused", 3));
      expect((await conn.answer()).status).toBe(200);
      expect(await seen.published()).toEqual([3]);
    } finally {
      conn.close();
    }
  });

  it("serves a connection's other routes after its publishes, in order, whether sent one by one or all at once", async () => {
    const seen = await watch(t, "mixed");
    const conn = await Connection.open(t.url);
    try {
      conn.write(publishRequest("mixed", 1));
      expect((await conn.answer()).status).toBe(200);
      conn.write(publishRequest("mixed", 2) + "GET /healthz HTTP/1.1\r\nHost: plate.test\r\n\r\n" + publishRequest("mixed", 3));
      const answers = [await conn.answer(), await conn.answer(), await conn.answer()];
      expect(answers.map((a) => a.status)).toEqual([200, 200, 200]);
      expect(JSON.parse(answers[1]!.body)).toEqual({ data: { status: "ok" } });
      expect(JSON.parse(answers[2]!.body).data.channel).toBe("mixed");
      expect(await seen.published()).toEqual([1, 2, 3]);
    } finally {
      conn.close();
    }
  });

  it("takes chunked, Expect: 100-continue, repeated-header and oversized publishes as Node's server always has", async () => {
    const seen = await watch(t, "unusual");
    const conn = await Connection.open(t.url);
    try {
      conn.write(publishRequest("unusual", 1));
      await conn.answer();
      const body = JSON.stringify({ message: 2 });
      conn.write(
        `POST /acme/pubsub/unusual/publish HTTP/1.1\r\nHost: plate.test\r\nAuthorization: Bearer ${KEYS.acme}\r\nContent-Type: application/json\r\n` +
          `Transfer-Encoding: chunked\r\n\r\n${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`,
      );
      expect((await conn.answer()).status).toBe(200);
      conn.write(publishRequest("unusual", 3));
      expect((await conn.answer()).status).toBe(200);
    } finally {
      conn.close();
    }
    const twice = await Connection.open(t.url);
    try {
      twice.write(publishRequest("unusual", 4, `Authorization: Bearer ${KEYS.acme}\r\n`));
      expect((await twice.answer()).status).toBe(200);
    } finally {
      twice.close();
    }
    const expecting = await Connection.open(t.url);
    try {
      const request = publishRequest("unusual", 5, "Expect: 100-continue\r\n");
      const headEnd = request.indexOf("\r\n\r\n") + 4;
      expecting.write(request.slice(0, headEnd));
      expect((await expecting.answer()).status).toBe(100);
      expecting.write(request.slice(headEnd));
      expect((await expecting.answer()).status).toBe(200);
    } finally {
      expecting.close();
    }
    const oversized = await Connection.open(t.url);
    try {
      oversized.write(publishRequest("unusual", "x".repeat(t.node.services.config.maxMessageBytes + 10)));
      const answer = await oversized.answer();
      expect([answer.status, JSON.parse(answer.body).error.code]).toEqual([413, "payload_too_large"]);
    } finally {
      oversized.close();
    }
    expect(await seen.published()).toEqual([1, 2, 3, 4, 5]);
  });

  it("serves a request split over reads, and one sent a few bytes at a time", async () => {
    const seen = await watch(t, "split");
    const conn = await Connection.open(t.url);
    try {
      const first = publishRequest("split", 1);
      conn.write(first.slice(0, 60));
      await new Promise((resolve) => setTimeout(resolve, 50));
      conn.write(first.slice(60));
      expect((await conn.answer()).status).toBe(200);
      const second = publishRequest("split", 2);
      for (let at = 0; at < second.length; at += 20) {
        conn.write(second.slice(at, at + 20));
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      expect((await conn.answer()).status).toBe(200);
      conn.write(publishRequest("split", 3));
      expect((await conn.answer()).status).toBe(200);
      expect(await seen.published()).toEqual([1, 2, 3]);
    } finally {
      conn.close();
    }
  });

  it("closes the connection after an answer when the client asks (Connection: close)", async () => {
    const seen = await watch(t, "closing");
    const conn = await Connection.open(t.url);
    conn.write(publishRequest("closing", 1, "Connection: close\r\n") + publishRequest("closing", 2));
    const answer = await conn.answer();
    expect([answer.status, answer.headers.connection]).toEqual([200, "close"]);
    await conn.closed;
    expect(await seen.published()).toEqual([1]);
  });

  it("answers what a client sent before ending its side, then closes", async () => {
    const seen = await watch(t, "half-closed");
    const conn = await Connection.open(t.url);
    conn.write(publishRequest("half-closed", 1) + publishRequest("half-closed", 2));
    conn.end();
    expect([(await conn.answer()).status, (await conn.answer()).status]).toEqual([200, 200]);
    await conn.closed;
    // A request the lane does not serve, behind a publish, before the end: Node answers it.
    const mixed = await Connection.open(t.url);
    mixed.write(publishRequest("half-closed", 3) + "GET /healthz HTTP/1.1\r\nHost: plate.test\r\n\r\n");
    mixed.end();
    const answers = [await mixed.answer(), await mixed.answer()];
    expect(answers.map((a) => a.status)).toEqual([200, 200]);
    expect(JSON.parse(answers[1]!.body)).toEqual({ data: { status: "ok" } });
    await mixed.closed;
    expect(await seen.published()).toEqual([1, 2, 3]);
  });

  it("closes a connection idle for the server's keepAliveTimeout and HTTP_KEEP_ALIVE_GRACE_MS after its last answer", async () => {
    const server = t.node.server;
    const before = server.keepAliveTimeout;
    server.keepAliveTimeout = 300;
    try {
      const conn = await Connection.open(t.url);
      conn.write(publishRequest("idle", 1));
      const answer = await conn.answer();
      expect(answer.headers["keep-alive"]).toBe("timeout=0");
      const idleFrom = Date.now();
      await conn.closed;
      // 300 ms and the default grace of 1000 ms, swept once a second.
      expect(Date.now() - idleFrom).toBeGreaterThanOrEqual(1250);
      expect(Date.now() - idleFrom).toBeLessThan(3500);
    } finally {
      server.keepAliveTimeout = before;
    }
  });

  it("stops reading a client that sends publishes without reading their answers, and loses none of them once it reads", async () => {
    const total = 40_000;
    const conn = await Connection.open(t.url);
    try {
      conn.pause();
      const start = await publishedTotal(t);
      let requests = "";
      for (let i = 0; i < total; i++) requests += publishRequest("unread", i);
      conn.write(requests);
      // Published while the client reads nothing: bounded by what the sockets' buffers hold, not by what it sent.
      let stalled = -1;
      const stopped = await eventually(async () => {
        await new Promise((resolve) => setTimeout(resolve, 200));
        const now = (await publishedTotal(t)) - start;
        const same = now === stalled;
        stalled = now;
        return same;
      }, 10_000);
      expect(stopped).toBe(true);
      expect(stalled).toBeGreaterThan(0);
      expect(stalled).toBeLessThan(total);
      conn.resume();
      for (let i = 0; i < total; i++) {
        const answer = await conn.answer();
        if (answer.status !== 200) expect(answer.body).toBe(`answer ${i}: 200`);
      }
      expect((await publishedTotal(t)) - start).toBe(total);
    } finally {
      conn.close();
    }
  }, 60_000);

  it("leaves a publish whose header line holds a bare CR or LF to Node's parser, which refuses it: nothing is published", async () => {
    const start = await publishedTotal(t);
    for (const broken of ["X-Note: a\rb", "X-Note: a\nb", "X-Note: a\r", "X-Note\n: a"]) {
      const conn = await Connection.open(t.url);
      try {
        conn.write(publishRequest("bare", { n: 1 }, `${broken}\r\n`));
        const answer = await conn.answer();
        expect(answer.status, JSON.stringify(broken)).toBe(400);
      } finally {
        conn.close();
      }
    }
    expect(await publishedTotal(t)).toBe(start);
  });

  it("stays up and never answers 5xx whatever bytes a publish's head carries (fuzzed), and still publishes after", async () => {
    const base = publishRequest("fuzzed", { n: 1 });
    await fc.assert(
      fc.asyncProperty(fc.nat(base.length), fc.nat(base.length), fc.string({ unit: "binary-ascii", maxLength: 6 }), async (from, to, insert) => {
        const [a, b] = from < to ? [from, to] : [to, from];
        const conn = await Connection.open(t.url);
        try {
          conn.write(base.slice(0, a) + insert + base.slice(b) + "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
          const answer = await conn.answer(2000).catch(() => undefined);
          if (answer !== undefined) expect(answer.status, answer.body).toBeLessThan(500);
        } finally {
          conn.close();
        }
      }),
      { numRuns: 150 },
    );
    const conn = await Connection.open(t.url);
    try {
      conn.write(publishRequest("fuzzed", "after"));
      expect((await conn.answer()).status).toBe(200);
    } finally {
      conn.close();
    }
  }, 60_000);
});

describe("keep-alive connections past their announced timeout", () => {
  let t: TestNode;
  beforeAll(async () => {
    // A grace longer than the lane's sweep (1 s), so the connection's fate at each wait is certain.
    t = await startTestNode({ HTTP_KEEP_ALIVE_TIMEOUT_MS: "1000", HTTP_KEEP_ALIVE_GRACE_MS: "3000" });
  });
  afterAll(() => t.cleanup());

  it("answers a publish sent after the announced timeout, within the grace, on the same connection", async () => {
    const seen = await watch(t, "grace");
    const conn = await Connection.open(t.url);
    conn.write(publishRequest("grace", 1));
    const first = await conn.answer();
    expect(first.headers["keep-alive"]).toBe("timeout=1");
    // Past the announced second and a sweep: a node closing at the announced time has closed it,
    // and the request would cross its close on the wire (reset unread).
    await new Promise((resolve) => setTimeout(resolve, 2200));
    conn.write(publishRequest("grace", 2));
    expect((await conn.answer()).status).toBe(200);
    expect(await seen.published()).toEqual([1, 2]);
    // And it is still closed once idle past the timeout and the grace (4 s, swept once a second).
    const idleFrom = Date.now();
    await conn.closed;
    expect(Date.now() - idleFrom).toBeGreaterThanOrEqual(3900);
  });
});
