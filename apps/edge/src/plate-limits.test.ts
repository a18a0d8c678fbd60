import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort, startRedis } from "@plate/testing";
import type { RedisServer } from "@plate/testing";
import { adminCall } from "./test-support/admin.js";
import { call, mintToken, sleep } from "./test-support/calls.js";
import { KEYS, eventually, startTestNode } from "./test-support/node.js";
import type { TestNode } from "./test-support/node.js";
import { WsClient } from "./test-support/ws.js";
import { EdgeProcess, redisNodeEnv } from "./test-support/process.js";

/**
 * A plate's own limits (issue 17, first part): set through the admin API, in force on every node
 * within a second (`KEY_CACHE_MS`, 1 s by default), and the publish rates held over every node:
 * their buckets are taken by the Redis publish script itself. Two nodes on one real redis-server,
 * real HTTP and WebSockets; the other plate (globex) is never slowed or refused by acme's limits.
 */

let redis: RedisServer;
let a: TestNode;
let b: TestNode;
const clients: { close(): void }[] = [];

beforeAll(async () => {
  redis = await startRedis();
  a = await startTestNode({ REDIS_URL: redis.url, KEY_CACHE_MS: "1000", CONNECTION_REPORT_MS: "200" });
  b = await startTestNode({ REDIS_URL: redis.url, KEY_CACHE_MS: "1000", CONNECTION_REPORT_MS: "200" });
});
afterAll(async () => {
  for (const c of clients) c.close();
  await a?.cleanup();
  await b?.cleanup();
  await redis?.stop();
});

async function setLimits(node: TestNode, plate: string, limits: Record<string, unknown> | null): Promise<any> {
  const res = limits === null ? await adminCall(node.url, "DELETE", `/admin/plates/${plate}/limits`) : await adminCall(node.url, "PUT", `/admin/plates/${plate}/limits`, { body: limits });
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body.data;
}

async function publish(node: TestNode, plate: string, channel: string, message: unknown): Promise<{ status: number; body: any; retryAfter: string | null }> {
  const key = plate === "acme" ? KEYS.acme : KEYS.globex;
  const res = await call(node.url, "POST", `/${plate}/pubsub/${channel}/publish`, {
    headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
    body: JSON.stringify({ message }),
  });
  return { status: res.status, body: res.body, retryAfter: res.headers.get("retry-after") };
}

async function socket(node: TestNode, plate = "acme"): Promise<WsClient> {
  const client = await WsClient.connect(`${node.wsUrl}/${plate}/realtime`, { headers: { Authorization: `Bearer ${plate === "acme" ? KEYS.acme : KEYS.globex}` } });
  clients.push(client);
  await client.waitFor("ready");
  return client;
}

async function request(client: WsClient, frame: { ref: string | number } & Record<string, unknown>): Promise<any> {
  client.socket.send(JSON.stringify(frame));
  expect(await eventually(() => client.frames.some((f) => f.ref === frame.ref && f.type !== "message"), 5000)).toBe(true);
  return client.frames.find((f) => f.ref === frame.ref && f.type !== "message");
}

/** Waits until `node` has seen a change made on another node (its cache lasts `KEY_CACHE_MS`). */
const seen = () => sleep(1100);

describe("a plate's own limits", () => {
  it("are set, read and cleared through the admin API, refusing what is not a limit", async () => {
    const set = await setLimits(a, "acme", { publishPerS: 50, connections: 7 });
    expect(set.own).toEqual({ publishPerS: 50, connections: 7 });
    expect(set.limits).toMatchObject({ publishPerS: 50, connections: 7, publishBurst: 20_000, maxMessageBytes: 65_536 });
    const read = await adminCall(b.url, "GET", "/admin/plates/acme/limits");
    expect(read.body.data.own).toEqual({ publishPerS: 50, connections: 7 });
    for (const bad of [{ nope: 1 }, { publishPerS: -1 }, { publishPerS: 1.5 }, { connections: "3" }, [1]]) {
      const res = await adminCall(a.url, "PUT", "/admin/plates/acme/limits", { body: bad });
      expect([res.status, res.body.error.code]).toEqual([400, bad instanceof Array ? "invalid_json" : "invalid_parameter"]);
    }
    expect((await adminCall(a.url, "PUT", "/admin/plates/nope/limits", { body: { publishPerS: 1 } })).status).toBe(404);
    const cleared = await setLimits(a, "acme", null);
    expect(cleared.own).toEqual({});
    expect(cleared.limits.publishPerS).toBe(10_000);
  });

  it("hold the publish rate over both nodes, answer 429 with Retry-After past it, and never slow another plate", async () => {
    await setLimits(a, "acme", { publishPerS: 1, publishBurst: 6 });
    await seen();
    const statuses: number[] = [];
    for (let i = 0; i < 12; i++) {
      const res = await publish(i % 2 === 0 ? a : b, "acme", "rated", i);
      statuses.push(res.status);
      if (res.status === 429) {
        expect(res.body.error.code).toBe("rate_limited");
        expect(Number(res.retryAfter)).toBeGreaterThanOrEqual(1);
      }
      // The other plate, in between, on both nodes: never refused.
      expect((await publish(i % 2 === 0 ? b : a, "globex", "free", i)).status).toBe(200);
    }
    // Six over the two nodes together (one node alone would have allowed six of its own), and a
    // seventh at most if a second passed meanwhile.
    const accepted = statuses.filter((s) => s === 200).length;
    expect(accepted).toBeGreaterThanOrEqual(6);
    expect(accepted).toBeLessThanOrEqual(7);
    expect(statuses.slice(0, 6)).toEqual([200, 200, 200, 200, 200, 200]);
    expect(statuses.filter((s) => s !== 200 && s !== 429)).toEqual([]);
    await setLimits(b, "acme", null);
  });

  it("take effect on the other node within a second, and come off as fast", async () => {
    await publish(b, "acme", "warm", 0); // b has acme's limits cached now
    await setLimits(a, "acme", { publishPerS: 1, publishBurst: 1 });
    await seen();
    expect((await publish(b, "acme", "c", 1)).status).toBe(200);
    expect((await publish(b, "acme", "c", 2)).status).toBe(429);
    await setLimits(a, "acme", null);
    await seen();
    expect((await publish(b, "acme", "c", 3)).status).toBe(200);
    expect((await publish(b, "acme", "c", 4)).status).toBe(200);
  });

  it("hold bytes a second over both nodes, and refuse a message over the plate's size on every publish route", async () => {
    await setLimits(a, "acme", { publishBytesPerS: 1, maxMessageBytes: 1000 });
    await seen();
    // The bytes bucket holds one largest message: a 600-byte message passes, a second one does not, on either node.
    expect((await publish(a, "acme", "bytes", "x".repeat(598))).status).toBe(200);
    const second = await publish(b, "acme", "bytes", "x".repeat(598));
    expect([second.status, second.body.error.code]).toEqual([429, "rate_limited"]);
    const big = await publish(b, "acme", "bytes", "x".repeat(1200));
    expect([big.status, big.body.error.code]).toEqual([413, "payload_too_large"]);
    const batch = await call(a.url, "POST", "/acme/publish", {
      headers: { Authorization: `Bearer ${KEYS.acme}`, "Content-Type": "application/json" },
      body: JSON.stringify({ messages: [{ channel: "x", message: 1 }, { channel: "x", message: "y".repeat(1200) }] }),
    });
    expect([batch.status, batch.body.error.code, batch.body.error.index]).toEqual([413, "payload_too_large", 1]);
    const ws = await socket(b);
    expect(await request(ws, { type: "publish", ref: 1, channel: "x", message: "z".repeat(1200) })).toMatchObject({ type: "error", error: { code: "payload_too_large" } });
    // globex keeps the node's limits.
    expect((await publish(a, "globex", "bytes", "x".repeat(5000))).status).toBe(200);
    ws.close();
    await setLimits(a, "acme", null);
  });

  it("take a batch's rate whole or not at all: a batch over it publishes nothing", async () => {
    await setLimits(a, "acme", { publishPerS: 1, publishBurst: 3 });
    await seen();
    const send = (n: number) =>
      call(b.url, "POST", "/acme/publish", {
        headers: { Authorization: `Bearer ${KEYS.acme}`, "Content-Type": "application/json" },
        body: JSON.stringify({ messages: Array.from({ length: n }, (_, i) => ({ channel: "batched", message: i })) }),
      });
    const listener = await socket(a);
    await request(listener, { type: "subscribe", ref: 1, channel: "batched" });
    const over = await send(4);
    expect([over.status, over.body.error.code]).toEqual([429, "rate_limited"]);
    const within = await send(3);
    expect(within.status).toBe(200);
    expect((await listener.waitForMessages(3)).map((m) => m.message)).toEqual([0, 1, 2]);
    await sleep(100);
    expect(listener.messages).toHaveLength(3);
    listener.close();
    await setLimits(a, "acme", null);
  });

  it("hold the client-path mint rate over both nodes (429 with Retry-After past it), and never refuse another plate's mints", async () => {
    await setLimits(a, "acme", { tokensPerS: 1, tokensBurst: 3 });
    await seen();
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++) {
      const res = await mintToken(i % 2 === 0 ? a.url : b.url, "acme", "minted");
      statuses.push(res.status);
      if (res.status === 429) {
        expect(res.body.error.code).toBe("rate_limited");
        expect(Number(res.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
      }
      expect((await mintToken(i % 2 === 0 ? b.url : a.url, "globex", "minted", {}, KEYS.globex)).status).toBe(200);
    }
    // The burst of 3, then refusals (a busy machine may have refilled one token by the last mint).
    expect(statuses.slice(0, 4)).toEqual([200, 200, 200, 429]);
    expect(statuses.filter((s) => s === 200).length).toBeLessThanOrEqual(4);
    await setLimits(a, "acme", null);
  });

  it("keep a plate's stored client paths within its token budget over both nodes (403 quota_exceeded past it), and never refuse another plate's mints", async () => {
    // A plate of its own: the tests before minted acme's paths, which count until forgotten.
    const created = await adminCall(a.url, "POST", "/admin/plates", { body: { id: "minty" } });
    expect(created.status).toBe(201);
    const secret = created.body.data.key.secret as string;
    // About 200 bytes of record and 256 counted besides: three paths fit in 1,700 bytes, not four.
    await setLimits(a, "minty", { tokenBytes: 1700 });
    await seen();
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++) {
      const res = await mintToken(i % 2 === 0 ? a.url : b.url, "minty", "budgeted", {}, secret);
      statuses.push(res.status);
      if (res.status === 403) expect(res.body.error.code).toBe("quota_exceeded");
      expect((await mintToken(i % 2 === 0 ? b.url : a.url, "globex", "budgeted", {}, KEYS.globex)).status).toBe(200);
    }
    expect(statuses).toEqual([200, 200, 200, 403, 403]);
  });

  it("count a plate's connections over every node, and stop counting a node that died once its lease ends", async () => {
    // A third node, a process of its own, killed with SIGKILL: it never says goodbye.
    const doomed = new EdgeProcess(await freePort(), { ...redisNodeEnv(redis.url), CONNECTION_REPORT_MS: "200", CONNECTION_LEASE_MS: "1500" });
    const wsUrl = doomed.url.replace("http", "ws");
    try {
      await doomed.ready();
      await setLimits(a, "acme", { connections: 4 });
      await seen();
      const held: WsClient[] = [];
      for (let i = 0; i < 3; i++) {
        const client = await WsClient.connect(`${wsUrl}/acme/realtime`, { headers: { Authorization: `Bearer ${KEYS.acme}` } });
        clients.push(client);
        await client.waitFor("ready");
        held.push(client);
      }
      held.push(await socket(a));
      // Three on the doomed node and one on a: once the reports are in (200 ms), b refuses the fifth.
      await sleep(600);
      const fifth = await WsClient.connect(`${b.wsUrl}/acme/realtime`, { headers: { Authorization: `Bearer ${KEYS.acme}` } });
      clients.push(fifth);
      expect(await fifth.waitForClose()).toBe(1013);
      expect(fifth.frames.at(-1)).toMatchObject({ error: { code: "rate_limited" } });
      // globex is not counted against acme.
      await socket(b, "globex");
      // Closed on a: its slot is free on every node within a report.
      held[3]!.close();
      await sleep(600);
      held[3] = await socket(b);
      doomed.kill();
      expect(await doomed.exited(5000)).toBeNull();
      // The doomed node's three stop counting once its lease (1.5 s) ends.
      expect(
        await eventually(async () => {
          const client = await WsClient.connect(`${b.wsUrl}/acme/realtime`, { headers: { Authorization: `Bearer ${KEYS.acme}` } });
          held.push(client);
          return client.waitFor("ready").then(
            () => true,
            () => false,
          );
        }, 5000),
      ).toBe(true);
      for (const client of held) client.close();
    } finally {
      doomed.kill();
      await setLimits(a, "acme", null);
    }
  });

  it("cap connections, subscriptions per connection, presence members and filtered subscriptions per plate, each with its code", async () => {
    await setLimits(a, "acme", { connections: 2, subscriptionsPerConnection: 2, presenceMembers: 1, filters: 1 });
    await seen(); // (also: the sockets of the tests before have closed on the server by now)
    const first = await socket(b);
    const second = await socket(b);
    const third = await WsClient.connect(`${b.wsUrl}/acme/realtime`, { headers: { Authorization: `Bearer ${KEYS.acme}` } });
    clients.push(third);
    expect(await third.waitForClose()).toBe(1013);
    expect(third.frames.at(-1)).toMatchObject({ error: { code: "rate_limited" } });
    // globex is not counted against acme.
    await socket(b, "globex");
    expect(await request(first, { type: "subscribe", ref: 1, channel: "room", filter: { exists: "a" } })).toMatchObject({ type: "subscribed" });
    expect(await request(second, { type: "subscribe", ref: 1, channel: "room2", filter: { exists: "a" } })).toMatchObject({ error: { code: "quota_exceeded" } });
    expect(await request(first, { type: "subscribe", ref: 2, channel: "lobby" })).toMatchObject({ type: "subscribed" });
    expect(await request(first, { type: "subscribe", ref: 3, channel: "hall" })).toMatchObject({ error: { code: "bad_request" } });
    expect(await request(second, { type: "subscribe", ref: 2, channel: "lobby" })).toMatchObject({ type: "subscribed" });
    expect(await request(first, { type: "presence.track", ref: 4, channel: "lobby", state: { n: 1 } })).toMatchObject({ type: "ok" });
    expect(await request(second, { type: "presence.track", ref: 3, channel: "lobby", state: { n: 2 } })).toMatchObject({ error: { code: "quota_exceeded" } });
    first.close();
    second.close();
    await setLimits(a, "acme", null);
  });
});
