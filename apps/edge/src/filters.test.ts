import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startRedis } from "@plate/testing";
import type { RedisServer } from "@plate/testing";
import { call, mintPath, mintToken } from "./test-support/calls.js";
import { KEYS, eventually, startTestNode } from "./test-support/node.js";
import type { TestNode } from "./test-support/node.js";
import { SseClient } from "./test-support/sse.js";
import { WsClient } from "./test-support/ws.js";

/**
 * Filtered subscriptions (route 13): a subscriber gets only the messages its Koncorde filter
 * matches, on every route that subscribes (v1 SSE, v1 WebSocket, client paths, route 9's frames,
 * query and POST), live and in a resume; invalid filters are refused with `invalid_filter`; a
 * client path enforces the filter it was minted with; `volatile` reaches live subscribers only.
 * On the embedded default, and on two nodes sharing a real redis-server (subscribers on one node,
 * publishers on the other). Real sockets throughout.
 */

const clients: { close(): void }[] = [];
afterAll(() => {
  for (const c of clients) c.close();
});

/** Publishes `message` (with `event` and `volatile` when given) on `node`; answers the id. */
async function publish(node: TestNode, channel: string, message: unknown, extra: { event?: string; volatile?: unknown } = {}): Promise<string> {
  const res = await call(node.url, "POST", `/acme/pubsub/${channel}/publish`, {
    headers: { Authorization: `Bearer ${KEYS.acme}`, "Content-Type": "application/json" },
    body: JSON.stringify({ message, ...extra }),
  });
  expect(res.status, res.text).toBe(200);
  return res.body.data.id as string;
}

async function sse(url: string, headers: Record<string, string> = { Authorization: `Bearer ${KEYS.acme}` }): Promise<SseClient> {
  const client = await SseClient.open(url, headers);
  clients.push(client);
  return client;
}

async function ws(url: string, headers: Record<string, string> = { Authorization: `Bearer ${KEYS.acme}` }): Promise<WsClient> {
  const client = await WsClient.connect(url, { headers });
  clients.push(client);
  return client;
}

const q = (filter: unknown) => encodeURIComponent(JSON.stringify(filter));

/** Sends a frame with `ref` and answers the frame that answers it. */
async function request(client: WsClient, frame: { ref: string | number } & Record<string, unknown>): Promise<any> {
  client.socket.send(JSON.stringify(frame));
  expect(await eventually(() => client.frames.some((f) => f.ref === frame.ref && f.type !== "message"), 5000)).toBe(true);
  return client.frames.find((f) => f.ref === frame.ref && f.type !== "message");
}

/** Orders of a shop: which subscriber wants which is decided by the filters below. */
const ORDERS = [
  { n: 0, status: "paid", amount: 50, customer: "ann", tags: ["eu"] },
  { n: 1, status: "unpaid", amount: 150, customer: "bob" },
  { n: 2, status: "paid", amount: 250, customer: "bob", coupon: "X1" },
  { n: 3, status: "refunded", amount: 99, customer: "cyd" },
  { n: 4, status: "paid", amount: 100, customer: "annabel", coupon: "Y2" },
] as const;

/** Each filter, and the orders (by `n`) it matches. */
const CASES: [string, Record<string, unknown>, number[]][] = [
  ["equals", { equals: { status: "paid" } }, [0, 2, 4]],
  ["in", { in: { customer: ["bob", "cyd"] } }, [1, 2, 3]],
  ["range", { range: { amount: { gte: 100, lt: 250 } } }, [1, 4]],
  ["exists", { exists: "coupon" }, [2, 4]],
  ["regexp", { regexp: { customer: { value: "^ann" } } }, [0, 4]],
  ["and/or/not", { and: [{ not: { equals: { status: "refunded" } } }, { or: [{ equals: { customer: "ann" } }, { range: { amount: { gt: 200 } } }] }] }, [0, 2]],
];

const brokers = [
  ["embedded", false],
  ["Redis, two nodes", true],
] as const;

describe.each(brokers)("filtered subscriptions on %s", (_name, onRedis) => {
  let redis: RedisServer | undefined;
  /** Subscribers connect here. */
  let sub: TestNode;
  /** Publishers publish here (the other node on Redis). */
  let pub: TestNode;
  beforeAll(async () => {
    if (onRedis) {
      redis = await startRedis();
      sub = await startTestNode({ REDIS_URL: redis.url });
      pub = await startTestNode({ REDIS_URL: redis.url });
    } else {
      sub = await startTestNode();
      pub = sub;
    }
  });
  afterAll(async () => {
    await sub?.cleanup();
    if (pub !== sub) await pub?.cleanup();
    await redis?.stop();
  });

  it("delivers only matching messages, in order, for equals, in, range, exists, regexp and and/or/not, on v1 SSE, v1 WebSocket, route 9 frames and route 9's SSE query", async () => {
    const channel = `orders.${onRedis ? "r" : "e"}`;
    const subscribers: { name: string; n: number[]; read: (count: number) => Promise<any[]>; all: () => any[] }[] = [];
    for (const [name, filter, n] of CASES) {
      const a = await sse(`${sub.url}/acme/pubsub/${channel}/subscribe?filter=${q(filter)}`);
      await a.waitFor("ready");
      const b = await ws(`${sub.wsUrl}/acme/pubsub/${channel}/ws?filter=${q(filter)}`);
      await b.waitFor("ready");
      const c = await ws(`${sub.wsUrl}/acme/realtime`);
      await c.waitFor("ready");
      expect(await request(c, { type: "subscribe", ref: 1, channel, filter })).toMatchObject({ type: "subscribed" });
      const d = await sse(`${sub.url}/acme/realtime?channel=${channel}&filter.${channel}=${q(filter)}`);
      await d.waitFor("ready");
      for (const [via, client] of [["v1 SSE", a], ["v1 WS", b], ["route 9 WS", c], ["route 9 SSE", d]] as const) {
        subscribers.push({ name: `${name} on ${via}`, n, read: (count) => client.waitForMessages(count), all: () => client.messages });
      }
    }
    for (const order of ORDERS) await publish(pub, channel, order);
    // A marker every subscriber gets last: nothing else is on its way.
    await publish(pub, channel, { n: 99, status: "paid", amount: 200, customer: "ann", coupon: "Z", tags: [] });
    for (const s of subscribers) {
      const wantsMarker = CASES.find(([name]) => s.name.startsWith(`${name} on`))![0] !== "in";
      const expected = [...s.n, ...(wantsMarker ? [99] : [])];
      const got = await s.read(expected.length);
      if (!wantsMarker) await new Promise((r) => setTimeout(r, 100));
      expect(s.all().map((m) => m.message.n), s.name).toEqual(expected);
      expect(got.every((m) => m.channel === channel)).toBe(true);
    }
  });

  it("filters a pattern subscription, and tests _event (the event name) and _value (a message that is not an object)", async () => {
    const base = `shop${onRedis ? "r" : "e"}`;
    const byEvent = await ws(`${sub.wsUrl}/acme/realtime`);
    await byEvent.waitFor("ready");
    expect(await request(byEvent, { type: "subscribe", ref: 1, pattern: `${base}.*`, filter: { equals: { _event: "created" } } })).toMatchObject({ type: "subscribed" });
    const byValue = await sse(`${sub.url}/acme/pubsub/${base}.*/subscribe?pattern=true&filter=${q({ in: { _value: ["ping", "pong"] } })}`);
    await byValue.waitFor("ready");
    await publish(pub, `${base}.a`, { id: 1 }, { event: "created" });
    await publish(pub, `${base}.b`, "ping");
    await publish(pub, `${base}.a`, { id: 2 }, { event: "deleted" });
    await publish(pub, `${base}.c`, "pang");
    await publish(pub, `${base}.b`, { id: 3 }, { event: "created" });
    await publish(pub, `${base}.c`, "pong");
    expect((await byEvent.waitForMessages(2)).map((m) => [m.channel, m.message, m.event])).toEqual([
      [`${base}.a`, { id: 1 }, "created"],
      [`${base}.b`, { id: 3 }, "created"],
    ]);
    expect((await byValue.waitForMessages(2)).map((m) => [m.channel, m.message])).toEqual([
      [`${base}.b`, "ping"],
      [`${base}.c`, "pong"],
    ]);
    await new Promise((r) => setTimeout(r, 100));
    expect(byEvent.messages).toHaveLength(2);
    expect(byValue.messages).toHaveLength(2);
  });

  it("replays only matching messages on a resume (route 9 since, v1 Last-Event-ID), and a reset stays a reset", async () => {
    const channel = `resume.${onRedis ? "r" : "e"}`;
    const first = await publish(pub, channel, { n: 0, status: "paid" });
    const ids: string[] = [];
    for (let n = 1; n <= 6; n++) ids.push(await publish(pub, channel, { n, status: n % 2 === 0 ? "paid" : "unpaid" }));
    const filter = { equals: { status: "paid" } };
    const resumer = await ws(`${sub.wsUrl}/acme/realtime`);
    await resumer.waitFor("ready");
    expect(await request(resumer, { type: "subscribe", ref: 1, channel, since: first, filter })).toMatchObject({ type: "subscribed" });
    const legacy = await sse(`${sub.url}/acme/pubsub/${channel}/subscribe?filter=${q(filter)}`, { Authorization: `Bearer ${KEYS.acme}`, "Last-Event-ID": first });
    await publish(pub, channel, { n: 7, status: "paid" });
    await publish(pub, channel, { n: 8, status: "unpaid" });
    await publish(pub, channel, { n: 9, status: "paid" });
    for (const client of [resumer, legacy]) {
      await client.waitForMessages(5);
      await new Promise((r) => setTimeout(r, 100));
      expect(client.messages.map((m: any) => m.message.n)).toEqual([2, 4, 6, 7, 9]);
    }
    // An id from another epoch cannot be resumed: a reset, filter or not.
    const reset = await ws(`${sub.wsUrl}/acme/realtime`);
    await reset.waitFor("ready");
    expect(await request(reset, { type: "subscribe", ref: 2, channel, since: "xxxxxxxx_1-0", filter })).toMatchObject({ type: "subscribed" });
    expect(await reset.waitFor("reset")).toMatchObject({ type: "reset", channel });
  });

  it("enforces the filter a client path was minted with: the client can narrow it, never widen it", async () => {
    const channel = `minted.${onRedis ? "r" : "e"}`;
    const filter = { equals: { customer: "ann" } };
    const post = await call(pub.url, "POST", `/acme/pubsub/${channel}/client`, {
      headers: { Authorization: `Bearer ${KEYS.acme}`, "Content-Type": "application/json" },
      body: JSON.stringify({ max_uses: 0, filter }),
    });
    expect(post.status, post.text).toBe(200);
    expect(post.body.data.filter).toEqual(filter);
    const path = post.body.data.path as string;
    const plain = await ws(`${sub.wsUrl}${path}`, {});
    await plain.waitFor("ready");
    // "Widening": asks for bob's orders; it gets ann's AND bob's, which is nothing.
    const widened = await sse(`${sub.url}${path}?filter=${q({ equals: { customer: "bob" } })}`, {});
    await widened.waitFor("ready");
    const narrowed = await sse(`${sub.url}${path}?filter=${q({ range: { amount: { gte: 100 } } })}`, {});
    await narrowed.waitFor("ready");
    await publish(pub, channel, { n: 1, customer: "ann", amount: 10 });
    await publish(pub, channel, { n: 2, customer: "bob", amount: 500 });
    await publish(pub, channel, { n: 3, customer: "ann", amount: 300 });
    expect((await plain.waitForMessages(2)).map((m) => m.message.n)).toEqual([1, 3]);
    expect((await narrowed.waitForMessages(1)).map((m) => m.message.n)).toEqual([3]);
    await new Promise((r) => setTimeout(r, 150));
    expect(widened.messages).toEqual([]);
    expect(plain.messages).toHaveLength(2);
    // Minted with GET too (the filter's JSON in the query), and a bad one is refused at minting.
    expect((await mintPath(pub.url, "acme", channel, { filter: JSON.stringify(filter) })).filter).toEqual(filter);
    const bad = await mintToken(pub.url, "acme", channel, { filter: JSON.stringify({ equalz: { a: 1 } }) });
    expect([bad.status, bad.body.error.code]).toEqual([400, "invalid_filter"]);
  });

  it("delivers volatile metadata to live subscribers only: never in a replay, and a publish frame may carry it", async () => {
    const channel = `volatile.${onRedis ? "r" : "e"}`;
    const live = await ws(`${sub.wsUrl}/acme/realtime?channel=${channel}`);
    await live.waitFor("ready");
    const legacy = await sse(`${sub.url}/acme/pubsub/${channel}/subscribe`);
    await legacy.waitFor("ready");
    const before = await publish(pub, channel, "start");
    const id = await publish(pub, channel, { text: "hi" }, { volatile: { typing: true, cursor: [1, 2] }, event: "said" });
    const talker = await ws(`${pub.wsUrl}/acme/realtime`);
    await talker.waitFor("ready");
    const framed = await request(talker, { type: "publish", ref: "v", channel, message: "by frame", volatile: null });
    expect(framed).toMatchObject({ type: "published" });
    for (const client of [live, legacy]) {
      const got = await client.waitForMessages(3);
      expect(got.map(({ timestamp: _t, ...rest }: any) => rest)).toEqual([
        { type: "message", id: before, channel, message: "start" },
        { type: "message", id, channel, event: "said", message: { text: "hi" }, volatile: { typing: true, cursor: [1, 2] } },
        { type: "message", id: framed.id, channel, from: expect.any(Object), message: "by frame", volatile: null },
      ]);
    }
    const replayed = await ws(`${sub.wsUrl}/acme/realtime`);
    await replayed.waitFor("ready");
    await request(replayed, { type: "subscribe", ref: 1, channel, since: before });
    const again = await replayed.waitForMessages(2);
    expect(again.map((m) => [m.id, "volatile" in m])).toEqual([
      [id, false],
      [framed.id, false],
    ]);
    const tooBig = await call(pub.url, "POST", `/acme/pubsub/${channel}/publish`, {
      headers: { Authorization: `Bearer ${KEYS.acme}`, "Content-Type": "application/json" },
      body: JSON.stringify({ message: 1, volatile: "x".repeat(3000) }),
    });
    expect([tooBig.status, tooBig.body.error.code]).toEqual([413, "payload_too_large"]);
  });
});

describe("filters refused, and the limits on them", () => {
  let node: TestNode;
  beforeAll(async () => {
    node = await startTestNode({ FILTERS_PER_PLATE: "3", FILTER_MAX_BYTES: "512" });
  });
  afterAll(async () => {
    await node?.cleanup();
  });

  it("refuses an invalid filter with 400 invalid_filter naming the problem, on every route, and a large one with 413", async () => {
    const auth = { Authorization: `Bearer ${KEYS.acme}` };
    const refusals: [string, string, number][] = [
      ["not JSON", "{equals", 400],
      ["an array", JSON.stringify([{ equals: { a: 1 } }]), 400],
      ["an unknown keyword", JSON.stringify({ equalz: { a: 1 } }), 400],
      ["a bad operand", JSON.stringify({ range: { a: { gte: "x", foo: 1 } } }), 400],
      ["too complex", JSON.stringify({ and: Array.from({ length: 8 }, (_, i) => ({ or: [{ equals: { [`a${i}`]: 1 } }, { equals: { [`b${i}`]: 1 } }] })) }), 400],
      // Both stopped the whole process inside Koncorde's native R-tree (an assertion) or threw only when stored.
      ["a point out of range", JSON.stringify({ geoDistance: { p: { lat: 95, lon: 200 }, distance: "1km" } }), 400],
      ["an inverted bounding box", JSON.stringify({ geoBoundingBox: { p: { top: -10, left: 10, bottom: 10, right: -10 } } }), 400],
    ];
    for (const [what, text, status] of refusals) {
      const res = await call(node.url, "GET", `/acme/pubsub/c/subscribe?filter=${encodeURIComponent(text)}`, { headers: auth });
      expect([what, res.status, res.body?.error?.code]).toEqual([what, status, "invalid_filter"]);
      expect(res.body.error.message.length).toBeGreaterThan(10);
    }
    expect((await call(node.url, "GET", "/healthz")).status).toBe(200);
    const unknown = await call(node.url, "GET", `/acme/pubsub/c/subscribe?filter=${q({ equalz: { a: 1 } })}`, { headers: auth });
    expect(unknown.body.error.message).toContain("equalz");
    const large = await call(node.url, "GET", `/acme/pubsub/c/subscribe?filter=${q({ equals: { a: "x".repeat(600) } })}`, { headers: auth });
    expect([large.status, large.body.error.code]).toEqual([413, "payload_too_large"]);
    const realtime = await call(node.url, "GET", `/acme/realtime?channel=c&filter.c=${q({ nope: 1 })}`, { headers: auth });
    expect([realtime.status, realtime.body.error.code]).toEqual([400, "invalid_filter"]);
    // On route 9's WebSocket: an error frame, and the connection stays open.
    const client = await ws(`${node.wsUrl}/acme/realtime`);
    const ready = await client.waitFor("ready");
    expect(await request(client, { type: "subscribe", ref: 1, channel: "c", filter: { nope: 1 } })).toMatchObject({ type: "error", ref: 1, error: { code: "invalid_filter" } });
    expect(await request(client, { type: "subscribe", ref: 2, channel: "c", filter: "paid" })).toMatchObject({ type: "error", ref: 2, error: { code: "invalid_filter" } });
    expect(await request(client, { type: "subscribe", ref: 3, channel: "c", filter: { equals: { a: 1 } } })).toMatchObject({ type: "subscribed", ref: 3 });
    // Route 9's POST, for an SSE stream.
    const post = await call(node.url, "POST", `/acme/realtime/${ready.clientId}`, {
      headers: { ...auth, "Content-Type": "application/json" },
      body: JSON.stringify({ subscribe: [{ channel: "d", filter: { exists: 3 } }] }),
    });
    expect([post.status, post.body.error.code]).toEqual([400, "invalid_filter"]);
    // The v1 WebSocket: the error frame, then 4400.
    const v1 = await ws(`${node.wsUrl}/acme/pubsub/c/ws?filter=${q({ nope: 1 })}`);
    expect(await v1.waitForClose()).toBe(4400);
    expect(v1.frames.at(-1)).toMatchObject({ error: { code: "invalid_filter" } });
  });

  it("holds at most FILTERS_PER_PLATE filtered subscriptions per plate on a node (quota_exceeded), frees them on unsubscribe, and never counts another plate's", async () => {
    const fresh = await startTestNode({ FILTERS_PER_PLATE: "3" });
    try {
      await quotaCase(fresh);
    } finally {
      await fresh.cleanup();
    }
  });

  async function quotaCase(node: TestNode): Promise<void> {
    const client = await ws(`${node.wsUrl}/acme/realtime`);
    await client.waitFor("ready");
    for (let i = 0; i < 3; i++) {
      expect(await request(client, { type: "subscribe", ref: i, channel: `q${i}`, filter: { equals: { i } } })).toMatchObject({ type: "subscribed" });
    }
    expect(await request(client, { type: "subscribe", ref: 3, channel: "q3", filter: { equals: { i: 3 } } })).toMatchObject({ error: { code: "quota_exceeded" } });
    // Unfiltered subscriptions do not count.
    expect(await request(client, { type: "subscribe", ref: 4, channel: "q4" })).toMatchObject({ type: "subscribed" });
    const other = await ws(`${node.wsUrl}/globex/realtime`, { Authorization: `Bearer ${KEYS.globex}` });
    await other.waitFor("ready");
    expect(await request(other, { type: "subscribe", ref: 1, channel: "q0", filter: { equals: { i: 0 } } })).toMatchObject({ type: "subscribed" });
    expect(await request(client, { type: "unsubscribe", ref: 5, channel: "q0" })).toMatchObject({ type: "unsubscribed" });
    expect(await request(client, { type: "subscribe", ref: 6, channel: "q3", filter: { equals: { i: 3 } } })).toMatchObject({ type: "subscribed" });
    // A connection that ends gives its back.
    client.close();
    const next = await ws(`${node.wsUrl}/acme/realtime`);
    await next.waitFor("ready");
    // Freed once the server has seen the close.
    await new Promise((r) => setTimeout(r, 300));
    expect(await request(next, { type: "subscribe", ref: "after", channel: "r", filter: { exists: "x" } })).toMatchObject({ type: "subscribed" });
  }

  it("tests each message once for many subscribers holding different filters, and keeps a filter shared by two until both let go", async () => {
    const channel = "many";
    const node2 = await startTestNode({ FILTERS_PER_PLATE: "1000" });
    try {
      const subs: WsClient[] = [];
      for (let i = 0; i < 60; i++) {
        const client = await ws(`${node2.wsUrl}/acme/pubsub/${channel}/ws?filter=${q({ equals: { to: `u${i % 30}` } })}`);
        await client.waitFor("ready");
        subs.push(client);
      }
      for (let round = 0; round < 2; round++) for (let i = 0; i < 30; i++) await publish(node2, channel, { to: `u${i}`, round });
      for (let i = 0; i < 60; i++) {
        const got = await subs[i]!.waitForMessages(2);
        expect(got.map((m) => [m.message.to, m.message.round])).toEqual([
          [`u${i % 30}`, 0],
          [`u${i % 30}`, 1],
        ]);
      }
      // u0 is held by subs 0 and 30: one leaves, the other still gets its messages.
      subs[0]!.close();
      await new Promise((r) => setTimeout(r, 100));
      await publish(node2, channel, { to: "u0", round: 2 });
      expect((await subs[30]!.waitForMessages(3)).map((m) => m.message.round)).toEqual([0, 1, 2]);
      await new Promise((r) => setTimeout(r, 100));
      for (let i = 1; i < 60; i++) if (i !== 30) expect(subs[i]!.messages).toHaveLength(2);
    } finally {
      await node2.cleanup();
    }
  });
});
