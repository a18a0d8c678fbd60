import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startRedis } from "@plate/testing";
import type { RedisServer } from "@plate/testing";
import { adminCall } from "../test-support/admin.js";
import { call, mintPath, sleep } from "../test-support/calls.js";
import { KEYS, eventually, publish, startTestNode } from "../test-support/node.js";
import type { TestNode } from "../test-support/node.js";
import { SseClient } from "../test-support/sse.js";
import { WsClient } from "../test-support/ws.js";

describe("publish rate limit (PUBLISH_RATE_PER_S=1, PUBLISH_BURST=5)", () => {
  let t: TestNode;
  beforeAll(async () => {
    // A refill of 1 a second: the test's quick publishes (well under a second, even on a busy machine) get no new token.
    t = await startTestNode({ PUBLISH_RATE_PER_S: "1", PUBLISH_BURST: "5" });
  });
  afterAll(() => t.cleanup());

  it("answers the 6th quick publish with 429 rate_limited and a Retry-After of whole seconds, leaving another plate unaffected", async () => {
    for (let i = 0; i < 5; i += 1) {
      const res = await publish(t.url, "acme", "alerts", i);
      expect(res.status, `publish ${i + 1}`).toBe(200);
    }
    const res = await call(t.url, "POST", "/acme/pubsub/alerts/publish", {
      headers: { Authorization: `Bearer ${KEYS.acme}`, "Content-Type": "application/json" },
      body: '{"message":6}',
    });
    expect(res.status).toBe(429);
    expect(res.body).toEqual({ error: { code: "rate_limited", message: expect.any(String) } });
    const retryAfter = res.headers.get("retry-after");
    expect(retryAfter).toMatch(/^\d+$/);
    expect(Number(retryAfter)).toBeGreaterThanOrEqual(1);

    // The legacy alias shares the plate's budget.
    const legacy = await call(t.url, "POST", "/acme/publish/alerts", {
      headers: { Authorization: `Bearer ${KEYS.acme}`, "Content-Type": "application/json" },
      body: '{"message":7}',
    });
    expect(legacy.status).toBe(429);
    expect(legacy.body.error.code).toBe("rate_limited");

    const other = await publish(t.url, "globex", "alerts", "fine", KEYS.globex);
    expect(other.status).toBe(200);
  });

  it("does not deliver a refused publish to subscribers", async () => {
    const sub = await SseClient.open(`${t.url}/globex/pubsub/counted/subscribe`, { Authorization: `Bearer ${KEYS.globex}` });
    try {
      await sub.waitFor("ready");
      const statuses: number[] = [];
      for (let i = 0; i < 8; i += 1) statuses.push((await publish(t.url, "globex", "counted", i, KEYS.globex)).status);
      const accepted = statuses.filter((s) => s === 200).length;
      expect(statuses.filter((s) => s === 429).length).toBeGreaterThan(0);
      await sub.waitForMessages(accepted);
      await new Promise((r) => setTimeout(r, 50));
      expect(sub.messages).toHaveLength(accepted);
    } finally {
      sub.close();
    }
  });
});

describe("connection limit per plate (MAX_CONNECTIONS_PER_PLATE=2)", () => {
  let t: TestNode;
  beforeAll(async () => {
    t = await startTestNode({ MAX_CONNECTIONS_PER_PLATE: "2" });
  });
  afterAll(() => t.cleanup());

  const auth = { Authorization: `Bearer ${KEYS.acme}` };

  it("answers a third SSE subscription with 429 rate_limited and Retry-After, and accepts a new one after one closes", async () => {
    const first = await SseClient.open(`${t.url}/acme/pubsub/a/subscribe`, auth);
    const second = await WsClient.connect(`${t.wsUrl}/acme/pubsub/b/ws`, { headers: auth });
    const open: { close(): void }[] = [first, second];
    try {
      await Promise.all([first.waitFor("ready"), second.waitFor("ready")]);
      const third = await SseClient.open(`${t.url}/acme/pubsub/c/subscribe`, auth);
      open.push(third);
      expect(third.status).toBe(429);
      expect(third.headers["retry-after"]).toMatch(/^\d+$/);
      await third.waitForEnd(1000);
      expect(JSON.parse(third.body).error.code).toBe("rate_limited");

      // Another plate has its own budget.
      const globex = await SseClient.open(`${t.url}/globex/pubsub/c/subscribe`, { Authorization: `Bearer ${KEYS.globex}` });
      open.push(globex);
      expect(globex.status).toBe(200);

      first.close();
      let replacement: SseClient | undefined;
      const accepted = await eventually(async () => {
        replacement?.close();
        replacement = await SseClient.open(`${t.url}/acme/pubsub/c/subscribe`, auth);
        return replacement.status === 200;
      }, 2000);
      if (replacement !== undefined) open.push(replacement);
      expect(accepted).toBe(true);
      await replacement!.waitFor("ready");
    } finally {
      for (const client of open) client.close();
    }
  });

  it("closes a third WebSocket with 1013 rate_limited, and accepts a new one after one closes", async () => {
    // The previous test's connections may take a moment to be counted out.
    await eventually(() => t.node.services.connections.size === 0, 2000);
    const first = await WsClient.connect(`${t.wsUrl}/acme/pubsub/a/ws`, { headers: auth });
    const second = await SseClient.open(`${t.url}/acme/pubsub/b/subscribe`, auth);
    const open: { close(): void }[] = [first, second];
    try {
      await Promise.all([first.waitFor("ready"), second.waitFor("ready")]);
      const third = await WsClient.connect(`${t.wsUrl}/acme/pubsub/c/ws`, { headers: auth });
      open.push(third);
      expect(await third.waitForClose(2000)).toBe(1013);
      expect(third.closeReason).toBe("rate_limited");
      expect(third.frames.find((f) => f.type === "error")?.error.code).toBe("rate_limited");
      expect(third.frames.some((f) => f.type === "ready")).toBe(false);

      // A client token counts against the same limit.
      const { path } = await mintPath(t.url, "acme", "c", { max_uses: "0" });
      const tokenWs = await WsClient.connect(`${t.wsUrl}${path}`);
      open.push(tokenWs);
      expect(await tokenWs.waitForClose(2000)).toBe(1013);

      first.close();
      let replacement: WsClient | undefined;
      const accepted = await eventually(async () => {
        replacement?.close();
        replacement = await WsClient.connect(`${t.wsUrl}${path}`);
        await Promise.race([replacement.waitFor("ready").catch(() => undefined), replacement.waitForClose(1000)]);
        return replacement.frames.some((f) => f.type === "ready") && replacement.closeCode === undefined;
      }, 2000);
      if (replacement !== undefined) open.push(replacement);
      expect(accepted).toBe(true);
    } finally {
      for (const client of open) client.close();
    }
  });
});

// On Redis, claiming a token's use is a round trip. Redis is kept busy while the connects race for
// the one slot, so every one of them is past the limit check before any claim is answered.
describe("connection limit per plate with client tokens on Redis (MAX_CONNECTIONS_PER_PLATE=1)", () => {
  let t: TestNode;
  let redis: RedisServer;
  let busy: Redis;
  beforeAll(async () => {
    redis = await startRedis();
    busy = new Redis(redis.url);
    t = await startTestNode({ MAX_CONNECTIONS_PER_PLATE: "1", REDIS_URL: redis.url });
  });
  afterAll(async () => {
    await t.cleanup();
    busy.disconnect();
    await redis.stop();
  });

  /** How many tries race for the one slot. */
  const RACERS = 10;
  /** How long Redis is kept busy while they race, in ms. */
  const BUSY_MS = 300;

  /** Runs `connect` RACERS times at once while a script holds Redis (one script runs at a time). */
  async function race<T>(connect: () => Promise<T>): Promise<T[]> {
    const held = busy.eval(
      "local t = redis.call('TIME'); local stop = t[1] * 1000000 + t[2] + ARGV[1] * 1000; " +
        "repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] >= stop; return 1",
      0,
      BUSY_MS,
    );
    await sleep(20);
    const racers = Promise.all(Array.from({ length: RACERS }, connect));
    await held;
    return racers;
  }

  it("spends no use of a client token on SSE connects refused at the limit, even when they race", async () => {
    const { path } = await mintPath(t.url, "acme", "slots.sse", { max_uses: "2" });
    const racers = await race(() => SseClient.open(`${t.url}${path}`));
    try {
      const accepted = racers.filter((s) => s.status === 200);
      expect(accepted).toHaveLength(1);
      const refused = racers.filter((s) => s.status !== 200);
      await Promise.all(refused.map((s) => s.waitForEnd(1000)));
      expect(refused.map((s) => `${s.status} ${JSON.parse(s.body).error.code}`)).toEqual(Array(RACERS - 1).fill("429 rate_limited"));
      await accepted[0]!.waitFor("ready");
    } finally {
      for (const s of racers) s.close();
    }
    expect(await eventually(() => t.node.services.connections.size === 0, 2000)).toBe(true);
    // The token's second use is still there, and then it is used up.
    const second = await SseClient.open(`${t.url}${path}`);
    try {
      expect(second.status).toBe(200);
      await second.waitFor("ready");
    } finally {
      second.close();
    }
    expect(await eventually(() => t.node.services.connections.size === 0, 2000)).toBe(true);
    const third = await SseClient.open(`${t.url}${path}`);
    expect(third.status).toBe(410);
    third.close();
  });

  it("spends no use of a client token on WebSockets closed 1013 at the limit, even when they race", async () => {
    await eventually(() => t.node.services.connections.size === 0, 2000);
    const { path } = await mintPath(t.url, "acme", "slots.ws", { max_uses: "2" });
    const racers = await race(() => WsClient.connect(`${t.wsUrl}${path}`));
    try {
      const settled = await eventually(
        () => racers.every((ws) => ws.closeCode !== undefined || ws.frames.some((f) => f.type === "ready")),
        5000,
      );
      expect(settled).toBe(true);
      const accepted = racers.filter((ws) => ws.closeCode === undefined);
      expect(accepted).toHaveLength(1);
      expect(racers.filter((ws) => ws.closeCode !== undefined).map((ws) => `${ws.closeCode} ${ws.closeReason}`)).toEqual(
        Array(RACERS - 1).fill("1013 rate_limited"),
      );
    } finally {
      for (const ws of racers) ws.close();
    }
    expect(await eventually(() => t.node.services.connections.size === 0, 2000)).toBe(true);
    const second = await WsClient.connect(`${t.wsUrl}${path}`);
    try {
      await second.waitFor("ready");
    } finally {
      second.close();
    }
    expect(await eventually(() => t.node.services.connections.size === 0, 2000)).toBe(true);
    const third = await WsClient.connect(`${t.wsUrl}${path}`);
    expect(await third.waitForClose(2000)).toBe(4429);
    third.close();
  });
});

describe("WebSocket client frame limit (WS_MAX_CLIENT_FRAME_BYTES=64)", () => {
  let t: TestNode;
  beforeAll(async () => {
    t = await startTestNode({ WS_MAX_CLIENT_FRAME_BYTES: "64" });
  });
  afterAll(() => t.cleanup());

  it("closes an authenticated client that sends a frame over the limit with 1009", async () => {
    const ws = await WsClient.connect(`${t.wsUrl}/acme/pubsub/alerts/ws`, { headers: { Authorization: `Bearer ${KEYS.acme}` } });
    try {
      await ws.waitFor("ready");
      ws.socket.send(JSON.stringify({ type: "ping", pad: "x".repeat(100) }));
      expect(await ws.waitForClose(2000)).toBe(1009);
    } finally {
      ws.close();
    }
  });

  it("still answers a small ping frame with pong", async () => {
    const ws = await WsClient.connect(`${t.wsUrl}/acme/pubsub/alerts/ws`, { headers: { Authorization: `Bearer ${KEYS.acme}` } });
    try {
      await ws.waitFor("ready");
      ws.socket.send(JSON.stringify({ type: "ping" }));
      await ws.waitFor("pong");
      expect(ws.closeCode).toBeUndefined();
    } finally {
      ws.close();
    }
  });
});

describe("health, readiness and metrics", () => {
  let t: TestNode;
  beforeAll(async () => {
    t = await startTestNode();
  });
  afterAll(() => t.cleanup());

  it("answers /healthz with 200 {data:{status:ok}}", async () => {
    const res = await call(t.url, "GET", "/healthz");
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ data: { status: "ok" } });
  });

  it("answers /readyz with 200 while the broker is up", async () => {
    const res = await call(t.url, "GET", "/readyz");
    expect(res.status).toBe(200);
    expect(res.body.data).toBeDefined();
  });

  it("exposes Prometheus metrics for connections, messages, tokens and the broker, with no plate or channel names", async () => {
    const plate = "zanzibarplate42";
    const channel = "quokka-channel-7731";
    const created = await adminCall(t.url, "POST", "/admin/plates", { body: { id: plate } });
    expect(created.status).toBe(201);
    const secret: string = created.body.data.key.secret;
    const auth = { Authorization: `Bearer ${secret}` };

    const sse = await SseClient.open(`${t.url}/${plate}/pubsub/${channel}/subscribe`, auth);
    const ws = await WsClient.connect(`${t.wsUrl}/${plate}/pubsub/${channel}/ws`, { headers: auth });
    const { path } = await mintPath(t.url, plate, `${channel}*`, { pattern: "true" }, secret);
    const token = await SseClient.open(`${t.url}${path}`);
    try {
      await Promise.all([sse.waitFor("ready"), ws.waitFor("ready"), token.waitFor("ready")]);
      expect((await publish(t.url, plate, channel, "counted", secret)).status).toBe(200);
      await Promise.all([sse.waitForMessages(1), ws.waitForMessages(1), token.waitForMessages(1)]);
      // A refused attempt too, so error outcomes are counted.
      const refused = await SseClient.open(`${t.url}${path}`);
      expect(refused.status).toBe(410);
      refused.close();

      const res = await call(t.url, "GET", "/metrics");
      expect(res.status).toBe(200);
      expect(res.headers.get("content-type")).toMatch(/^text\/plain/);
      const text = res.text;
      expect(text).toMatch(/^# TYPE plate_connections gauge$/m);
      expect(text).toMatch(/^plate_connections\{transport="sse"\} 2$/m);
      expect(text).toMatch(/^plate_connections\{transport="ws"\} 1$/m);
      expect(text).toMatch(/^# TYPE plate_messages_published_total counter$/m);
      expect(text).toMatch(/^plate_messages_published_total [1-9]\d*$/m);
      expect(text).toMatch(/^# TYPE plate_messages_delivered_total counter$/m);
      expect(text).toMatch(/^plate_messages_delivered_total\{transport="sse"\} [2-9]\d*$/m);
      expect(text).toMatch(/^plate_messages_delivered_total\{transport="ws"\} [1-9]\d*$/m);
      expect(text).toMatch(/^# TYPE plate_client_tokens_total counter$/m);
      expect(text).toMatch(/^plate_client_tokens_total\{outcome="minted"\} [1-9]\d*$/m);
      expect(text).toMatch(/^plate_client_tokens_total\{outcome="exhausted_client_socket"\} [1-9]\d*$/m);
      expect(text).toMatch(/^plate_broker_up 1$/m);
      expect(text).not.toContain(channel);
      expect(text).not.toContain("quokka");
      expect(text).not.toContain(plate);
      expect(text).not.toContain("acme");
    } finally {
      sse.close();
      ws.close();
      token.close();
    }
  });
});

describe("per-plate metrics (METRICS_PLATE_LABELS)", () => {
  let t: TestNode;
  beforeAll(async () => {
    t = await startTestNode({ METRICS_PLATE_LABELS: "2" });
  });
  afterAll(() => t.cleanup());

  it("labels the first 2 plates seen and counts every later one under _other", async () => {
    const secrets: Record<string, string> = {};
    for (const plate of ["first", "second", "third", "fourth"]) {
      const created = await adminCall(t.url, "POST", "/admin/plates", { body: { id: plate } });
      secrets[plate] = created.body.data.key.secret;
    }
    for (const plate of ["first", "second", "third", "fourth", "first"]) {
      expect((await publish(t.url, plate, "c", "x", secrets[plate])).status).toBe(200);
    }
    const sub = await SseClient.open(`${t.url}/third/pubsub/c/subscribe`, { Authorization: `Bearer ${secrets.third}` });
    await sub.waitFor("ready");
    const listener = await SseClient.open(`${t.url}/first/pubsub/c/subscribe`, { Authorization: `Bearer ${secrets.first}` });
    await listener.waitFor("ready");
    expect((await publish(t.url, "first", "c", "yy", secrets.first)).status).toBe(200);
    await listener.waitForMessages(1);
    expect((await call(t.url, "GET", "/first/pubsub/c/client", { headers: { Authorization: `Bearer ${secrets.first}` } })).status).toBe(200);
    try {
      const text = (await call(t.url, "GET", "/metrics")).text;
      expect(text).toMatch(/^plate_plate_messages_published_total\{plate="first"\} 3$/m);
      // "x" twice and "yy" once, as JSON: 3 + 3 + 4 bytes.
      expect(text).toMatch(/^plate_plate_published_bytes_total\{plate="first"\} 10$/m);
      expect(text).toMatch(/^plate_plate_messages_delivered_total\{plate="first"\} 1$/m);
      expect(text).toMatch(/^plate_plate_client_tokens_minted_total\{plate="first"\} 1$/m);
      expect(text).toMatch(/^plate_plate_messages_published_total\{plate="second"\} 1$/m);
      expect(text).toMatch(/^plate_plate_messages_published_total\{plate="_other"\} 2$/m);
      expect(text).toMatch(/^plate_plate_connections\{plate="_other"\} 1$/m);
      expect(text).not.toContain('plate="third"');
      expect(text).not.toContain('plate="fourth"');
      expect(text).toMatch(/^plate_broker_probe_lost_total 0$/m);
      expect(text).toMatch(/^plate_plate_connections\{plate="first"\} 1$/m);
    } finally {
      sub.close();
      listener.close();
    }
    // Each ended connection is taken off its own plate's series, "third"'s off _other.
    const gone = async () => {
      const text = (await call(t.url, "GET", "/metrics")).text;
      return /^plate_plate_connections\{plate="first"\} 0$/m.test(text) && /^plate_plate_connections\{plate="_other"\} 0$/m.test(text);
    };
    expect(await eventually(gone)).toBe(true);
  });
});
