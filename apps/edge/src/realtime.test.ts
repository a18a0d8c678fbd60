import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { comparePositions, parsePosition } from "@plate/protocol";
import { startRedis } from "@plate/testing";
import type { RedisServer } from "@plate/testing";
import { KEYS, eventually, publish, startTestNode } from "./test-support/node.js";
import type { TestNode } from "./test-support/node.js";
import { createKey } from "./test-support/calls.js";
import { SseClient } from "./test-support/sse.js";
import { WsClient } from "./test-support/ws.js";

/**
 * Route 9, the realtime connection: many subscriptions on one WebSocket or SSE stream, changed
 * while it is open, over real sockets, on the embedded broker and on Redis.
 */

const AUTH = { Authorization: `Bearer ${KEYS.acme}` };
const CHANNELS = Array.from({ length: 50 }, (_, i) => `room-${i}`);

let redis: RedisServer;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis?.stop();
});

const started: TestNode[] = [];
const clients: { close(): void }[] = [];
afterEach(async () => {
  for (const client of clients.splice(0)) client.close();
  await Promise.all(started.splice(0).map((n) => n.cleanup()));
});

async function node(broker: "embedded" | "redis"): Promise<TestNode> {
  const n = await startTestNode(broker === "redis" ? { REDIS_URL: redis.url, REDIS_KEY_PREFIX: `rt${Date.now()}${Math.random()}:` } : {});
  started.push(n);
  return n;
}

async function ws(url: string, headers: Record<string, string> = AUTH): Promise<WsClient> {
  const client = await WsClient.connect(url, { headers });
  clients.push(client);
  return client;
}

async function sse(url: string, headers: Record<string, string> = AUTH): Promise<SseClient> {
  const client = await SseClient.open(url, headers);
  clients.push(client);
  return client;
}

function query(channels: readonly string[], patterns: readonly string[] = []): string {
  return [...channels.map((c) => `channel=${c}`), ...patterns.map((p) => `pattern=${encodeURIComponent(p)}`)].join("&");
}

/** Sends a frame and waits for the reply carrying its ref. */
async function request(client: WsClient, frame: Record<string, unknown>): Promise<any> {
  client.socket.send(JSON.stringify(frame));
  const deadline = Date.now() + 5000;
  for (;;) {
    const reply = client.frames.find((f) => f.ref === frame.ref && f.type !== "message");
    if (reply) return reply;
    if (Date.now() > deadline || client.closeCode !== undefined) throw new Error(`no reply to ${JSON.stringify(frame)} (closed ${client.closeCode})`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

function before(a: string, b: string): boolean {
  return comparePositions(parsePosition(a)!, parsePosition(b)!) < 0;
}

describe.each(["embedded", "redis"] as const)("the realtime connection on the %s broker", (broker) => {
  it("carries 50 channels on one WebSocket: ready lists them, and each gets its own messages once", async () => {
    const n = await node(broker);
    const client = await ws(`${n.wsUrl}/acme/realtime?${query(CHANNELS)}`);
    const ready = await client.waitFor("ready");
    expect(ready.clientId).toEqual(expect.any(String));
    expect(ready.subscriptions.map((s: any) => s.channel)).toEqual(CHANNELS);
    for (const channel of CHANNELS) await publish(n.url, "acme", channel, { on: channel });
    const got = await client.waitForMessages(CHANNELS.length);
    expect(got.map((m) => m.channel)).toEqual(CHANNELS);
    expect(got.every((m) => m.message.on === m.channel)).toBe(true);
    expect(await fetch(`${n.url}/metrics`).then((r) => r.text())).toMatch(/plate_connections\{transport="ws"\} 1\b/);
  });

  it("carries 50 channels on one SSE stream, and a POST adds and removes subscriptions live", async () => {
    const n = await node(broker);
    const stream = await sse(`${n.url}/acme/realtime?${query(CHANNELS)}`);
    expect(stream.status).toBe(200);
    const ready = await stream.waitFor("ready");
    expect(ready.subscriptions).toHaveLength(50);
    for (const channel of CHANNELS) await publish(n.url, "acme", channel, { on: channel });
    expect((await stream.waitForMessages(50)).map((m) => m.channel)).toEqual(CHANNELS);

    const res = await fetch(`${n.url}/acme/realtime/${ready.clientId}`, {
      method: "POST",
      headers: { ...AUTH, "Content-Type": "application/json" },
      body: JSON.stringify({ subscribe: [{ pattern: "news:*" }], unsubscribe: [{ channel: "room-0" }] }),
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as any;
    expect(body.data.subscriptions).toHaveLength(50);
    expect(body.data.subscriptions).toContainEqual({ pattern: "news:*", position: expect.any(String) });
    expect(body.data.subscriptions.some((s: any) => s.channel === "room-0")).toBe(false);
    expect(await stream.waitFor("subscribed")).toMatchObject({ type: "subscribed", pattern: "news:*" });
    expect(await stream.waitFor("unsubscribed")).toMatchObject({ type: "unsubscribed", channel: "room-0" });
    await publish(n.url, "acme", "room-0", "gone");
    await publish(n.url, "acme", "news:today", "fresh");
    const after = await stream.waitForMessages(51);
    expect(after.at(-1)).toMatchObject({ channel: "news:today", message: "fresh" });
    expect(after.filter((m) => m.channel === "room-0")).toHaveLength(1);

    const unknown = await fetch(`${n.url}/acme/realtime/${ready.clientId}x`, {
      method: "POST",
      headers: { ...AUTH, "Content-Type": "application/json" },
      body: JSON.stringify({ subscribe: [{ channel: "a" }] }),
    });
    expect(unknown.status).toBe(404);
    expect(((await unknown.json()) as any).error.code).toBe("not_found");
  });

  it("subscribes and unsubscribes while messages flow: nothing missed after subscribed, nothing after unsubscribed", async () => {
    const n = await node(broker);
    const client = await ws(`${n.wsUrl}/acme/realtime`);
    await client.waitFor("ready");
    const published: { id: string; seq: number }[] = [];
    let flowing = true;
    const publisher = (async () => {
      for (let seq = 1; flowing; seq++) {
        const { body } = await publish(n.url, "acme", "flow", { seq });
        published.push({ id: body.data.id, seq });
      }
    })();
    try {
      await eventually(() => published.length > 20, 5000);
      const subscribed = await request(client, { type: "subscribe", ref: 1, channel: "flow" });
      expect(subscribed).toMatchObject({ type: "subscribed", ref: 1, channel: "flow", position: expect.any(String) });
      await eventually(() => client.messages.length > 30, 5000);
      const unsubscribed = await request(client, { type: "unsubscribe", ref: "two", channel: "flow" });
      expect(unsubscribed).toEqual({ type: "unsubscribed", ref: "two", channel: "flow" });
      await eventually(() => published.length > client.messages.length + 40, 5000);
    } finally {
      flowing = false;
      await publisher;
    }
    const at = client.frames.findIndex((f) => f.type === "unsubscribed");
    expect(client.frames.slice(at + 1).filter((f) => f.type === "message")).toEqual([]);
    const got = client.messages.map((m) => m.message.seq);
    const position = client.frames.find((f) => f.type === "subscribed").position;
    const last = client.messages.at(-1).id;
    // Everything published after the subscription's position, up to the last one received, in
    // order and once; before it, at most what was published while the history was being read
    // (the subscription was already live then): one run of consecutive messages in all.
    const expected = published.filter((p) => before(position, p.id) && !before(last, p.id)).map((p) => p.seq);
    expect(got.slice(got.length - expected.length)).toEqual(expected);
    expect(got).toEqual(Array.from({ length: got.length }, (_, i) => got[0]! + i));
  });

  it("delivers a message once when a channel and a pattern of the connection both match it, on WebSocket and SSE", async () => {
    const n = await node(broker);
    const client = await ws(`${n.wsUrl}/acme/realtime?${query(["orders:1"], ["orders:*"])}`);
    await client.waitFor("ready");
    const stream = await sse(`${n.url}/acme/realtime?${query(["orders:1"], ["orders:*", "*:1"])}`);
    await stream.waitFor("ready");
    for (let i = 1; i <= 5; i++) await publish(n.url, "acme", "orders:1", { i });
    await publish(n.url, "acme", "orders:2", { i: 6 });
    expect((await client.waitForMessages(6)).map((m) => m.message.i)).toEqual([1, 2, 3, 4, 5, 6]);
    expect((await stream.waitForMessages(6)).map((m) => m.message.i)).toEqual([1, 2, 3, 4, 5, 6]);
    await new Promise((r) => setTimeout(r, 100));
    expect(client.messages).toHaveLength(6);
    expect(stream.messages).toHaveLength(6);
  });

  it("resumes several subscriptions with since, each from its own id, and resets a pattern", async () => {
    const n = await node(broker);
    const a1 = (await publish(n.url, "acme", "a", 1)).body.data.id;
    await publish(n.url, "acme", "a", 2);
    await publish(n.url, "acme", "b", 3);
    const b2 = (await publish(n.url, "acme", "b", 4)).body.data.id;
    await publish(n.url, "acme", "b", 5);
    const client = await ws(`${n.wsUrl}/acme/realtime?channel=a&channel=b&pattern=c*&since.a=${a1}&since.b=${b2}`);
    await client.waitFor("ready");
    expect((await client.waitForMessages(2)).map((m) => m.message)).toEqual([2, 5]);
    expect(client.frames.filter((f) => f.type === "reset")).toEqual([]);
    const reset = await request(client, { type: "subscribe", ref: 9, pattern: "a*", since: a1 });
    expect(reset).toMatchObject({ type: "subscribed", pattern: "a*" });
    expect(await client.waitFor("reset")).toMatchObject({ type: "reset", pattern: "a*", reason: "pattern" });
  });

  it("refuses a request with an error frame carrying its ref, and keeps the connection open", async () => {
    const n = await node(broker);
    const limited = await createKey(n.url, "acme", { scopes: ["subscribe"], channels: ["public:*"] });
    const client = await ws(`${n.wsUrl}/acme/realtime?channel=public:1`, { Authorization: `Bearer ${limited.secret}` });
    await client.waitFor("ready");
    expect(await request(client, { type: "subscribe", ref: 1, channel: "private:1" })).toMatchObject({ type: "error", ref: 1, error: { code: "forbidden" } });
    expect(await request(client, { type: "subscribe", ref: 2, channel: "bad channel" })).toMatchObject({ type: "error", ref: 2, error: { code: "invalid_channel" } });
    expect(await request(client, { type: "subscribe", ref: 3, channel: "public:1" })).toMatchObject({ type: "error", ref: 3, error: { code: "conflict" } });
    expect(await request(client, { type: "unsubscribe", ref: 4, channel: "public:2" })).toMatchObject({ type: "error", ref: 4, error: { code: "not_found" } });
    expect(await request(client, { type: "nonsense", ref: 5 })).toMatchObject({ type: "error", ref: 5, error: { code: "bad_request" } });
    expect(await request(client, { type: "ping", ref: 6 })).toEqual({ type: "pong", ref: 6 });
    await publish(n.url, "acme", "public:1", "still here");
    expect((await client.waitForMessages(1))[0].message).toBe("still here");
    expect(client.closeCode).toBeUndefined();
  });

  it("opens a route-9 connection from a client path minted with several channels and a pattern", async () => {
    const n = await node(broker);
    const res = await fetch(`${n.url}/acme/pubsub/alpha/client`, {
      method: "POST",
      headers: { ...AUTH, "Content-Type": "application/json" },
      body: JSON.stringify({ channels: ["beta"], patterns: ["gamma:*"], max_uses: 2 }),
    });
    const minted = ((await res.json()) as any).data;
    expect(minted).toMatchObject({ channel: "alpha", channels: ["alpha", "beta"], patterns: ["gamma:*"], maxUses: 2 });
    const stream = await sse(`${n.url}${minted.path}`, {});
    const ready = await stream.waitFor("ready");
    expect(ready.subscriptions.map((s: any) => s.channel ?? s.pattern)).toEqual(["alpha", "beta", "gamma:*"]);
    const socket = await ws(`${n.wsUrl}${minted.path}`, {});
    await socket.waitFor("ready");
    // The token allows what it names and what its pattern covers; nothing else.
    expect(await request(socket, { type: "subscribe", ref: 1, channel: "gamma:7" })).toMatchObject({ type: "subscribed" });
    expect(await request(socket, { type: "subscribe", ref: 2, channel: "delta" })).toMatchObject({ type: "error", error: { code: "forbidden" } });
    for (const channel of ["alpha", "beta", "gamma:7", "delta"]) await publish(n.url, "acme", channel, channel);
    expect((await stream.waitForMessages(3)).map((m) => m.message)).toEqual(["alpha", "beta", "gamma:7"]);
    expect((await socket.waitForMessages(3)).map((m) => m.message)).toEqual(["alpha", "beta", "gamma:7"]);
    // The stream's own token may change it too.
    const change = await fetch(`${n.url}/acme/realtime/${ready.clientId}`, {
      method: "POST",
      headers: { Authorization: `Bearer ${minted.token}`, "Content-Type": "application/json" },
      body: JSON.stringify({ unsubscribe: [{ channel: "alpha" }], subscribe: [{ channel: "delta" }] }),
    });
    expect(change.status).toBe(403);
    const allowed = await fetch(`${n.url}/acme/realtime/${ready.clientId}`, {
      method: "POST",
      headers: { Authorization: `Bearer ${minted.token}`, "Content-Type": "application/json" },
      body: JSON.stringify({ unsubscribe: [{ channel: "alpha" }] }),
    });
    expect(allowed.status).toBe(200);
    expect(((await allowed.json()) as any).data.subscriptions.map((s: any) => s.channel ?? s.pattern)).toEqual(["beta", "gamma:*"]);
  });
});

describe("the realtime connection across two nodes on Redis", () => {
  it("changes an SSE stream living on the other node through a POST to this one", async () => {
    const prefix = `two${Date.now()}:`;
    const a = await startTestNode({ REDIS_URL: redis.url, REDIS_KEY_PREFIX: prefix });
    const b = await startTestNode({ REDIS_URL: redis.url, REDIS_KEY_PREFIX: prefix });
    started.push(a, b);
    const stream = await sse(`${a.url}/acme/realtime?channel=first`);
    const ready = await stream.waitFor("ready");
    const res = await fetch(`${b.url}/acme/realtime/${ready.clientId}`, {
      method: "POST",
      headers: { ...AUTH, "Content-Type": "application/json" },
      body: JSON.stringify({ subscribe: [{ channel: "second" }], unsubscribe: [{ channel: "first" }] }),
    });
    expect(res.status).toBe(200);
    expect(((await res.json()) as any).data.subscriptions).toEqual([{ channel: "second", position: expect.any(String) }]);
    await stream.waitFor("subscribed");
    await publish(b.url, "acme", "first", "not any more");
    await publish(b.url, "acme", "second", "from b");
    expect((await stream.waitForMessages(1))[0]).toMatchObject({ channel: "second", message: "from b" });
    // Another plate's key cannot reach this stream, whatever node it asks.
    const foreign = await fetch(`${b.url}/globex/realtime/${ready.clientId}`, {
      method: "POST",
      headers: { Authorization: `Bearer ${KEYS.globex}`, "Content-Type": "application/json" },
      body: JSON.stringify({ subscribe: [{ channel: "x" }] }),
    });
    expect(foreign.status).toBe(404);
    // A stream that ended is gone everywhere.
    stream.close();
    await eventually(async () => {
      const gone = await fetch(`${b.url}/acme/realtime/${ready.clientId}`, {
        method: "POST",
        headers: { ...AUTH, "Content-Type": "application/json" },
        body: JSON.stringify({ subscribe: [] }),
      });
      return gone.status === 404;
    }, 3000);
  });
});
