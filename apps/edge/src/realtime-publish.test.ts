import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startRedis } from "@plate/testing";
import type { RedisServer } from "@plate/testing";
import { testSigner } from "./test-support/signing.js";
import type { TestSigner } from "./test-support/signing.js";
import { createKey } from "./test-support/calls.js";
import { KEYS, eventually, publish, startTestNode } from "./test-support/node.js";
import type { TestNode } from "./test-support/node.js";
import { SseClient } from "./test-support/sse.js";
import { WsClient } from "./test-support/ws.js";

/**
 * Clients that publish (route 12): `publish` frames on route 9, answered `published` with the id;
 * `from` in the envelope; `self:false`; what the credential allows; the rates per connection and per
 * plate; and the same history and resume as an HTTP publish. Two nodes on one real redis-server,
 * real WebSockets and SSE.
 */

let redis: RedisServer;
let a: TestNode;
let b: TestNode;
let signer: TestSigner;
const clients: { close(): void }[] = [];

beforeAll(async () => {
  redis = await startRedis();
  a = await startTestNode({ REDIS_URL: redis.url, CLIENT_PUBLISH_RATE_PER_S: "0", CLIENT_PUBLISH_PLATE_RATE_PER_S: "0" });
  b = await startTestNode({ REDIS_URL: redis.url, CLIENT_PUBLISH_RATE_PER_S: "0", CLIENT_PUBLISH_PLATE_RATE_PER_S: "0" });
  signer = await testSigner(a.url);
});
afterAll(async () => {
  for (const c of clients) c.close();
  await a?.cleanup();
  await b?.cleanup();
  await redis?.stop();
});

interface Claims {
  sub?: string;
  channels?: string[];
  patterns?: string[];
  publish?: string[];
}

function token(claims: Claims, seconds = 60): Promise<string> {
  return signer.sign({ sub: "ann", ...claims }, Math.floor(Date.now() / 1000) + seconds);
}

/** A route 9 WebSocket on `node`, opened with `credential` (a signed token or an API key), ready. */
async function connect(node: TestNode, credential: string, query = ""): Promise<WsClient & { clientId: string }> {
  const client = await WsClient.connect(`${node.wsUrl}/acme/realtime${query}`, { headers: { Authorization: `Bearer ${credential}` } });
  clients.push(client);
  const ready = await client.waitFor("ready");
  return Object.assign(client, { clientId: ready.clientId as string });
}

function send(client: WsClient, frame: unknown): void {
  client.socket.send(JSON.stringify(frame));
}

/** Sends a frame with `ref` and answers the frame that answers it. */
async function request(client: WsClient, frame: { ref: string | number } & Record<string, unknown>): Promise<any> {
  send(client, frame);
  expect(await eventually(() => client.frames.some((f) => f.ref === frame.ref && f.type !== "message"), 5000)).toBe(true);
  return client.frames.find((f) => f.ref === frame.ref && f.type !== "message");
}

describe("publishing from a realtime connection", () => {
  it("reaches subscribers on another node once and in order, with from (client id and user), event, and the id it answered", async () => {
    const listener = await connect(b, await token({ sub: "bob", channels: ["room.1"] }), "?channel=room.1");
    const sseListener = await SseClient.open(`${b.url}/acme/pubsub/room.1/subscribe`, { Authorization: `Bearer ${KEYS.acme}` });
    clients.push(sseListener);
    await sseListener.waitFor("ready");
    const talker = await connect(a, await token({ publish: ["room.*"] }));
    const COUNT = 60;
    for (let i = 0; i < COUNT; i++) send(talker, { type: "publish", ref: i, channel: "room.1", message: { i }, ...(i % 3 === 0 ? { event: "typing" } : {}) });
    expect(await eventually(() => talker.frames.filter((f) => f.type === "published").length === COUNT, 10_000)).toBe(true);
    const published = talker.frames.filter((f) => f.type === "published");
    expect(published.map((f) => f.ref)).toEqual([...Array(COUNT).keys()]);
    const expected = published.map((f, i) => ({
      type: "message",
      id: f.id,
      channel: "room.1",
      ...(i % 3 === 0 ? { event: "typing" } : {}),
      from: { clientId: talker.clientId, user: "ann" },
      message: { i },
    }));
    const got = await listener.waitForMessages(COUNT);
    expect(got.map(({ timestamp: _t, ...rest }) => rest)).toEqual(expected);
    const sse = await sseListener.waitForMessages(COUNT);
    expect(sse.map(({ timestamp: _t, ...rest }) => rest)).toEqual(expected);
    // Nothing more comes: each message once.
    await new Promise((r) => setTimeout(r, 200));
    expect(listener.messages).toHaveLength(COUNT);
    expect(talker.frames.filter((f) => f.type === "error")).toEqual([]);
  });

  it("keeps client publications in the history: a subscriber resuming on another node gets them with from, like HTTP publishes", async () => {
    const talker = await connect(a, await token({ publish: ["log"] }));
    const first = await publish(a.url, "acme", "log", "by http");
    const second = await request(talker, { type: "publish", ref: "x", channel: "log", message: "by client" });
    expect(second).toMatchObject({ type: "published", ref: "x" });
    const resumer = await connect(b, KEYS.acme);
    expect(await request(resumer, { type: "subscribe", ref: 1, channel: "log", since: first.body.data.id })).toMatchObject({ type: "subscribed" });
    const replayed = await resumer.waitForMessages(1);
    expect(replayed).toEqual([expect.objectContaining({ id: second.id, message: "by client", from: { clientId: talker.clientId, user: "ann" } })]);
    const sse = await SseClient.open(`${b.url}/acme/pubsub/log/subscribe`, { Authorization: `Bearer ${KEYS.acme}`, "Last-Event-ID": first.body.data.id });
    clients.push(sse);
    expect((await sse.waitForMessages(1)).map((m) => [m.id, m.from])).toEqual([[second.id, { clientId: talker.clientId, user: "ann" }]]);
  });

  it("does not deliver a connection's own publications to its subscriptions made with self:false (live and replayed), and does by default", async () => {
    const jwt = await token({ patterns: ["chat.*"], publish: ["chat.*"] });
    const me = await connect(a, jwt);
    const other = await connect(b, jwt);
    expect(await request(me, { type: "subscribe", ref: 1, channel: "chat.quiet", self: false })).toMatchObject({ type: "subscribed" });
    expect(await request(me, { type: "subscribe", ref: 2, channel: "chat.echo" })).toMatchObject({ type: "subscribed" });
    const mine = await request(me, { type: "publish", ref: 3, channel: "chat.quiet", message: "mine" });
    await request(me, { type: "publish", ref: 4, channel: "chat.echo", message: "echo" });
    await request(other, { type: "publish", ref: 5, channel: "chat.quiet", message: "theirs" });
    expect(await eventually(() => me.messages.length >= 2)).toBe(true);
    await new Promise((r) => setTimeout(r, 200));
    expect(me.messages.map((m) => [m.channel, m.message])).toEqual([
      ["chat.echo", "echo"],
      ["chat.quiet", "theirs"],
    ]);
    // Replayed with since: the same rule.
    const later = await connect(a, jwt);
    const first = await publish(a.url, "acme", "chat.quiet", "before");
    await request(later, { type: "publish", ref: 6, channel: "chat.quiet", message: "later's own" });
    await publish(a.url, "acme", "chat.quiet", "after");
    expect(await request(later, { type: "subscribe", ref: 7, channel: "chat.quiet", since: first.body.data.id, self: false })).toMatchObject({ type: "subscribed" });
    expect(await eventually(() => later.messages.length >= 1)).toBe(true);
    await new Promise((r) => setTimeout(r, 200));
    expect(later.messages.map((m) => m.message)).toEqual(["after"]);
    expect(mine.id).toEqual(expect.any(String));
  });

  it("publishes only where the credential allows: the token's publish claim, an API key's scope publish; refused with forbidden and nothing published", async () => {
    const listener = await connect(b, KEYS.acme, "?pattern=*");
    const narrow = await connect(a, await token({ publish: ["room.*"] }));
    const none = await connect(a, await token({ channels: ["room.1"] }));
    const subscribeOnly = await createKey(a.url, "acme", { scopes: ["subscribe"] });
    const reader = await connect(a, subscribeOnly.secret);
    const writer = await connect(a, KEYS.acme);
    const answers = [
      await request(narrow, { type: "publish", ref: 1, channel: "secret", message: 1 }),
      await request(narrow, { type: "publish", ref: 2, channel: "room", message: 2 }),
      await request(none, { type: "publish", ref: 3, channel: "room.1", message: 3 }),
      await request(reader, { type: "publish", ref: 4, channel: "room.1", message: 4 }),
    ];
    expect(answers.map((f) => [f.ref, f.type, f.error?.code])).toEqual([
      [1, "error", "forbidden"],
      [2, "error", "forbidden"],
      [3, "error", "forbidden"],
      [4, "error", "forbidden"],
    ]);
    // Still open, and a publish they may make goes through.
    expect(await request(narrow, { type: "publish", ref: 5, channel: "room.9", message: "ok" })).toMatchObject({ type: "published" });
    // A connection opened with an API key publishes with its client id and no user.
    expect(await request(writer, { type: "publish", ref: 6, channel: "room.9", message: "key" })).toMatchObject({ type: "published" });
    const got = await listener.waitForMessages(2);
    await new Promise((r) => setTimeout(r, 200));
    expect(listener.messages.map((m) => [m.message, m.from])).toEqual([
      ["ok", { clientId: narrow.clientId, user: "ann" }],
      ["key", { clientId: writer.clientId }],
    ]);
    expect(got).toHaveLength(2);
  });

  it("refuses a client path (route 5) publishing: it carries no publishing right", async () => {
    const res = await fetch(`${a.url}/acme/pubsub/alpha/client`, {
      method: "POST",
      headers: { Authorization: `Bearer ${KEYS.acme}`, "Content-Type": "application/json" },
      body: JSON.stringify({ channels: ["beta"] }),
    });
    const minted = ((await res.json()) as any).data;
    const client = await WsClient.connect(`${a.wsUrl}${minted.path}`);
    clients.push(client);
    await client.waitFor("ready");
    expect(await request(client, { type: "publish", ref: 1, channel: "alpha", message: 1 })).toMatchObject({ error: { code: "forbidden" } });
  });

  it("answers malformed publish frames with the spec's codes, keeping the connection", async () => {
    const talker = await connect(a, await token({ publish: ["*"] }));
    const answers = [
      await request(talker, { type: "publish", ref: 1, channel: "ok" }),
      await request(talker, { type: "publish", ref: 2, channel: "bad channel", message: 1 }),
      await request(talker, { type: "publish", ref: 3, channel: "ok", message: 1, event: "not an event" }),
      await request(talker, { type: "publish", ref: 4, message: 1 }),
      await request(talker, { type: "publish", ref: 5, channel: "ok", message: null }),
    ];
    expect(answers.map((f) => f.error?.code ?? f.type)).toEqual(["bad_request", "invalid_channel", "invalid_parameter", "invalid_channel", "published"]);
    expect(talker.closeCode).toBeUndefined();
  });

  it("stops publishing when a refresh takes the right away", async () => {
    const talker = await connect(a, await token({ publish: ["room.*"] }));
    expect(await request(talker, { type: "publish", ref: 1, channel: "room.1", message: 1 })).toMatchObject({ type: "published" });
    expect(await request(talker, { type: "auth", ref: 2, token: await token({ channels: ["room.1"] }) })).toMatchObject({ type: "ok" });
    expect(await request(talker, { type: "publish", ref: 3, channel: "room.1", message: 2 })).toMatchObject({ error: { code: "forbidden" } });
  });
});

describe("client publish rates", () => {
  let n: TestNode;
  beforeAll(async () => {
    n = await startTestNode({ CLIENT_PUBLISH_RATE_PER_S: "1", CLIENT_PUBLISH_BURST: "5", CLIENT_PUBLISH_PLATE_RATE_PER_S: "1", CLIENT_PUBLISH_PLATE_BURST: "8" });
  });
  afterAll(async () => {
    await n?.cleanup();
  });

  async function burst(client: WsClient, count: number, from: number): Promise<string[]> {
    for (let i = 0; i < count; i++) send(client, { type: "publish", ref: from + i, channel: "fast", message: i });
    expect(await eventually(() => client.frames.filter((f) => typeof f.ref === "number" && f.ref >= from && f.ref < from + count).length === count, 5000)).toBe(true);
    return client.frames.filter((f) => typeof f.ref === "number" && f.ref >= from && f.ref < from + count).map((f) => f.error?.code ?? f.type);
  }

  it("holds each connection to its rate and the plate's connections together to theirs; what was refused was not published", async () => {
    const listener = await WsClient.connect(`${n.wsUrl}/acme/realtime?channel=fast`, { headers: { Authorization: `Bearer ${KEYS.acme}` } });
    clients.push(listener);
    await listener.waitFor("ready");
    const one = await WsClient.connect(`${n.wsUrl}/acme/realtime`, { headers: { Authorization: `Bearer ${KEYS.acme}` } });
    const two = await WsClient.connect(`${n.wsUrl}/acme/realtime`, { headers: { Authorization: `Bearer ${KEYS.acme}` } });
    clients.push(one, two);
    await one.waitFor("ready");
    await two.waitFor("ready");
    const first = await burst(one, 7, 0);
    expect(first.filter((c) => c === "published")).toHaveLength(5);
    expect(first.filter((c) => c === "rate_limited")).toHaveLength(2);
    // The plate's bucket (8) has 3 left: the second connection gets 3 of its 5.
    const second = await burst(two, 5, 100);
    expect(second.filter((c) => c === "published")).toHaveLength(3);
    expect(second.filter((c) => c === "rate_limited")).toHaveLength(2);
    expect((await listener.waitForMessages(8)).length).toBe(8);
    await new Promise((r) => setTimeout(r, 200));
    expect(listener.messages).toHaveLength(8);
    expect(one.closeCode).toBeUndefined();
    // Another plate's clients are not held to this plate's bucket.
    const other = await WsClient.connect(`${n.wsUrl}/globex/realtime`, { headers: { Authorization: `Bearer ${KEYS.globex}` } });
    clients.push(other);
    await other.waitFor("ready");
    expect((await burst(other, 5, 200)).every((c) => c === "published")).toBe(true);
  });
});
