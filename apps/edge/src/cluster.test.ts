import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort, startRedis } from "@plate/testing";
import type { RedisServer } from "@plate/testing";
import { adminCall } from "./test-support/admin.js";
import { call, mintToken } from "./test-support/calls.js";
import { KEYS, eventually, publish } from "./test-support/node.js";
import { EdgeProcess, redisNodeEnv } from "./test-support/process.js";
import { SseClient } from "./test-support/sse.js";
import { WsClient } from "./test-support/ws.js";

/**
 * Three edge node processes (`node dist/main.js`, as users run them) sharing one real redis-server:
 * they must behave as one service. The fault cases kill Redis, so they come last.
 */

/** Messages each of the three publishers sends in the delivery test. */
const MESSAGES_PER_PUBLISHER = 1000;

let redis: RedisServer;
const nodes: EdgeProcess[] = [];

async function startNode(extra: Record<string, string> = {}): Promise<EdgeProcess> {
  const node = new EdgeProcess(await freePort(), {
    ...redisNodeEnv(redis.url),
    // Long, so only the revocation announcement can make the nodes forget a revoked key in time.
    KEY_CACHE_MS: "60000",
    ...extra,
  });
  nodes.push(node);
  await node.ready();
  return node;
}

beforeAll(async () => {
  // Persistent, as a production Redis must be: plates and keys outlive the restarts of the fault cases.
  redis = await startRedis({ persistent: true });
  for (let i = 0; i < 3; i++) await startNode();
  for (const node of nodes) expect(await eventually(async () => (await fetch(`${node.url}/readyz`)).status === 200)).toBe(true);
});

afterAll(async () => {
  for (const node of nodes) node.kill();
  await redis?.stop();
});

function node(i: number): EdgeProcess {
  return nodes[i]!;
}

function auth(key: string = KEYS.acme): Record<string, string> {
  return { Authorization: `Bearer ${key}` };
}

/** The messages of an SSE client, parsed once (it may hold thousands). */
function sseMessages(client: SseClient): any[] {
  return client.events.filter((e) => e.event === "message").map((e) => JSON.parse(e.data));
}

function sseCount(client: SseClient): number {
  let count = 0;
  for (const e of client.events) if (e.event === "message") count += 1;
  return count;
}

/** A plain Redis client, as a backend or an operator would use. */
async function withRedis<T>(use: (client: Redis) => Promise<T>): Promise<T> {
  const client = new Redis(redis.url);
  try {
    return await use(client);
  } finally {
    client.disconnect();
  }
}

describe("three edge nodes on one Redis", () => {
  it("delivers every message exactly once, in each publisher's order, to SSE and WebSocket subscribers, exact and pattern, on every node", async () => {
    const sse: SseClient[] = [];
    const ws: WsClient[] = [];
    for (const n of nodes) {
      for (const path of ["/acme/pubsub/feed/subscribe", "/acme/pubsub/f*/subscribe?pattern=true"]) {
        const client = await SseClient.open(n.url + path, auth());
        await client.waitFor("ready");
        sse.push(client);
      }
      for (const path of ["/acme/pubsub/feed/ws", "/acme/pubsub/fe%3Fd/ws?pattern=true"]) {
        const client = await WsClient.connect(n.url.replace("http", "ws") + path, { auth: KEYS.acme });
        await client.waitFor("ready");
        ws.push(client);
      }
    }
    try {
      // One publisher per node, all at once; each waits for its previous publish (one publisher's order).
      await Promise.all(
        nodes.map(async (n, p) => {
          for (let seq = 0; seq < MESSAGES_PER_PUBLISHER; seq++) {
            const res = await publish(n.url, "acme", "feed", { p, seq });
            if (res.status !== 200) throw new Error(`publish ${p}/${seq}: ${res.status} ${JSON.stringify(res.body)}`);
          }
        }),
      );
      const total = nodes.length * MESSAGES_PER_PUBLISHER;
      expect(await eventually(() => sse.every((c) => sseCount(c) >= total) && ws.every((c) => c.messages.length >= total), 20_000)).toBe(
        true,
      );
      await new Promise((r) => setTimeout(r, 200));
      for (const received of [...sse.map(sseMessages), ...ws.map((c) => c.messages)]) {
        expect(received).toHaveLength(total);
        expect(new Set(received.map((m) => m.id)).size).toBe(total);
        for (let p = 0; p < nodes.length; p++) {
          const seqs = received.filter((m) => m.message.p === p).map((m) => m.message.seq);
          expect(seqs).toEqual(Array.from({ length: MESSAGES_PER_PUBLISHER }, (_, i) => i));
        }
        expect(received.every((m) => m.channel === "feed")).toBe(true);
      }
    } finally {
      for (const c of sse) c.close();
      for (const c of ws) c.close();
    }
  }, 60_000);

  it("accepts a token minted on one node on another, and lets exactly 3 of 60 concurrent connects over 3 nodes use a max_uses=3 token", async () => {
    const minted = await mintToken(node(0).url, "acme", "tokens", { max_uses: "3" });
    expect(minted.status).toBe(200);
    const path: string = minted.body.data.path;
    const clients = await Promise.all(Array.from({ length: 60 }, (_, i) => SseClient.open(node(i % 3).url + path)));
    try {
      const statuses = clients.map((c) => c.status);
      expect(statuses.filter((s) => s === 200)).toHaveLength(3);
      expect(statuses.filter((s) => s === 410)).toHaveLength(57);
      for (const c of clients.filter((c) => c.status === 410)) expect(JSON.parse(c.body).error.code).toBe("exhausted_client_socket");
      const winners = clients.filter((c) => c.status === 200);
      for (const c of winners) await c.waitFor("ready");
      await publish(node(2).url, "acme", "tokens", "hi");
      for (const c of winners) expect((await c.waitForMessages(1)).map((m) => m.message)).toEqual(["hi"]);
    } finally {
      for (const c of clients) c.close();
    }
  });

  it("closes a revoked key's connections on every node within a second (4409), and a deleted plate's too", async () => {
    const plate = await adminCall(node(0).url, "POST", "/admin/plates", { body: { id: "initech" } });
    expect(plate.status).toBe(201);
    const plateKey: string = plate.body.data.key.secret;
    const extra = await adminCall(node(1).url, "POST", "/admin/plates/acme/keys", { body: { name: "revoked soon" } });
    expect(extra.status).toBe(201);
    const revokedKey: string = extra.body.data.secret;

    const open = async (key: string, plateId: string) => {
      const ws: WsClient[] = [];
      const sse: SseClient[] = [];
      for (const n of nodes) {
        const w = await WsClient.connect(`${n.url.replace("http", "ws")}/${plateId}/pubsub/x/ws`, { auth: key });
        await w.waitFor("ready");
        ws.push(w);
        const s = await SseClient.open(`${n.url}/${plateId}/pubsub/x/subscribe`, auth(key));
        await s.waitFor("ready");
        sse.push(s);
      }
      return { ws, sse };
    };
    const revoked = await open(revokedKey, "acme");
    const deleted = await open(plateKey, "initech");
    const bystander = await open(KEYS.acme, "acme");
    try {
      let started = Date.now();
      const revoke = await adminCall(node(2).url, "DELETE", `/admin/plates/acme/keys/${extra.body.data.id}`);
      expect(revoke.status).toBe(204);
      expect(
        await eventually(() => revoked.ws.every((c) => c.closeCode !== undefined) && revoked.sse.every((c) => c.ended), 1000),
      ).toBe(true);
      expect(Date.now() - started).toBeLessThan(1000);
      expect(revoked.ws.map((c) => c.closeCode)).toEqual([4409, 4409, 4409]);
      for (const c of revoked.sse) expect((await c.waitFor("error")).error.code).toBe("revoked");

      started = Date.now();
      expect((await adminCall(node(1).url, "DELETE", "/admin/plates/initech")).status).toBe(204);
      expect(
        await eventually(() => deleted.ws.every((c) => c.closeCode !== undefined) && deleted.sse.every((c) => c.ended), 1000),
      ).toBe(true);
      expect(deleted.ws.map((c) => c.closeCode)).toEqual([4409, 4409, 4409]);

      // The acme bootstrap key's connections on every node stay open and receiving.
      await publish(node(0).url, "acme", "x", "still here");
      for (const c of bystander.ws) expect((await c.waitForMessages(1)).map((m) => m.message)).toEqual(["still here"]);
      for (const c of bystander.sse) expect((await c.waitForMessages(1)).map((m) => m.message)).toEqual(["still here"]);
      // And the revoked key is refused by every node.
      for (const n of nodes) {
        const res = await call(n.url, "POST", "/acme/pubsub/x/publish", {
          headers: { ...auth(revokedKey), "Content-Type": "application/json" },
          body: '{"message":1}',
        });
        expect(res.body.error.code).toBe("invalid_api_key");
      }
    } finally {
      for (const group of [revoked, deleted, bystander]) {
        for (const c of group.ws) c.close();
        for (const c of group.sse) c.close();
      }
    }
  });

  it("subscribes in Redis only on the nodes whose clients need a channel", async () => {
    const numsub = () =>
      withRedis(async (client) => Number(((await client.pubsub("NUMSUB", "plate:acme:lonely")))[1]));
    const subscriptions = async (n: EdgeProcess) => {
      const text = await (await fetch(`${n.url}/metrics`)).text();
      return Number(/^plate_broker_subscriptions (\d+)/m.exec(text)?.[1]);
    };
    // What earlier tests opened is closed: every node lets go of its Redis subscriptions.
    expect(await eventually(async () => (await Promise.all(nodes.map(subscriptions))).every((n) => n === 0))).toBe(true);
    expect(await numsub()).toBe(0);
    const a = await SseClient.open(`${node(0).url}/acme/pubsub/lonely/subscribe`, auth());
    const b = await SseClient.open(`${node(0).url}/acme/pubsub/lonely/subscribe`, auth());
    try {
      await a.waitFor("ready");
      await b.waitFor("ready");
      // Two local subscribers on node 0 are one Redis subscription; nodes 1 and 2 have none.
      expect(await numsub()).toBe(1);
      expect([await subscriptions(node(0)), await subscriptions(node(1)), await subscriptions(node(2))]).toEqual([1, 0, 0]);
      await publish(node(1).url, "acme", "lonely", "only to node 0");
      expect((await a.waitForMessages(1)).map((m) => m.message)).toEqual(["only to node 0"]);
    } finally {
      a.close();
      b.close();
    }
    expect(await eventually(async () => (await numsub()) === 0)).toBe(true);
  });

  it("delivers what a backend PUBLISHes straight into the plate's Redis channel to its subscribers on every node", async () => {
    const clients = await Promise.all(nodes.map((n) => SseClient.open(`${n.url}/acme/pubsub/orders:7/subscribe`, auth())));
    // Patterns are matched on the plate-wide channel only nodes publish to (docs/redis.md).
    const byPattern = await SseClient.open(`${node(0).url}/acme/pubsub/orders:*/subscribe?pattern=true`, auth());
    try {
      for (const c of [...clients, byPattern]) await c.waitFor("ready");
      await withRedis(async (client) => {
        await client.publish("plate:acme:orders:7", '{"total":12.5,"items":[1,2]}');
        await client.publish("plate:acme:orders:7", "not json");
        // Another plate's channel of the same name reaches nobody here.
        await client.publish("plate:globex:orders:7", '"globex"');
      });
      for (const c of clients) {
        const got = await c.waitForMessages(2);
        await new Promise((r) => setTimeout(r, 100));
        expect(sseMessages(c).map((m) => [m.channel, m.message])).toEqual([
          ["orders:7", { total: 12.5, items: [1, 2] }],
          ["orders:7", "not json"],
        ]);
        expect(got.every((m) => typeof m.id === "string" && typeof m.timestamp === "string")).toBe(true);
      }
      expect(sseMessages(byPattern)).toEqual([]);
    } finally {
      for (const c of [...clients, byPattern]) c.close();
    }
  });

  it("refuses glob syntax in names with 400, so no input widens a pattern to other channels or plates", async () => {
    for (const ch of ["[", "]", "\\", "^"]) {
      for (const name of [`${ch}a`, `a${ch}`, `a${ch}b`, `*${ch}`]) {
        const res = await call(node(0).url, "GET", `/acme/pubsub/${encodeURIComponent(name)}/subscribe?pattern=true`, { headers: auth() });
        expect(res.status).toBe(400);
        expect(res.body.error.code).toBe("invalid_channel");
      }
    }
    for (const plate of ["a*", "*", "a?", "[a]", "a\\"]) {
      const res = await call(node(0).url, "GET", `/${encodeURIComponent(plate)}/pubsub/x/subscribe`, { headers: auth() });
      expect(res.status).toBe(400);
      expect(res.body.error.code).toBe("invalid_plate");
    }
  });
});

describe.skipIf((process.env.REDIS_URL ?? "") !== "")("when Redis fails", () => {
  // These kill and restart Redis: skipped when REDIS_URL points the tests at a shared server.

  it("answers publish with 503 broker_unavailable and /readyz 503, keeps subscriptions open, and delivers again within 2 s of Redis' return", async () => {
    const sse = await Promise.all(nodes.map((n) => SseClient.open(`${n.url}/acme/pubsub/outage/subscribe`, auth())));
    const ws = await Promise.all(nodes.map((n) => WsClient.connect(`${n.url.replace("http", "ws")}/acme/pubsub/outage/ws`, { auth: KEYS.acme })));
    try {
      for (const c of [...sse, ...ws]) await c.waitFor("ready");
      await redis.kill();
      for (const n of nodes) {
        expect(await eventually(async () => (await fetch(`${n.url}/readyz`)).status === 503)).toBe(true);
        const res = await publish(n.url, "acme", "outage", "lost");
        expect(res.status).toBe(503);
        expect(res.body.error.code).toBe("broker_unavailable");
      }
      await new Promise((r) => setTimeout(r, 300));
      expect(sse.every((c) => !c.ended) && ws.every((c) => c.closeCode === undefined)).toBe(true);

      await redis.restart();
      const back = Date.now();
      expect(
        await eventually(async () => {
          for (const n of nodes) if ((await fetch(`${n.url}/readyz`)).status !== 200) return false;
          return true;
        }, 2000),
      ).toBe(true);
      expect((await publish(node(0).url, "acme", "outage", "back")).status).toBe(200);
      expect(await eventually(() => sse.every((c) => sseCount(c) === 1) && ws.every((c) => c.messages.length === 1), 2000)).toBe(true);
      expect(Date.now() - back).toBeLessThan(2000);
      for (const c of sse) expect(sseMessages(c).map((m) => m.message)).toEqual(["back"]);
      for (const c of ws) expect(c.messages.map((m) => m.message)).toEqual(["back"]);
      // The same connections: no new ready was sent.
      expect(sse.every((c) => c.events.filter((e) => e.event === "ready").length === 1)).toBe(true);
    } finally {
      for (const c of sse) c.close();
      for (const c of ws) c.close();
    }
  }, 30_000);

  it("starts a node while Redis is down: alive, not ready, and ready once Redis appears (plates provisioned)", async () => {
    await redis.kill();
    const late = await startNode({ BOOTSTRAP_PLATES: JSON.stringify({ ...KEYS, latecomer: "latecomer-secret-0123456789ab" }) });
    expect((await fetch(`${late.url}/healthz`)).status).toBe(200);
    expect((await fetch(`${late.url}/readyz`)).status).toBe(503);
    await redis.restart();
    expect(await eventually(async () => (await fetch(`${late.url}/readyz`)).status === 200, 5000)).toBe(true);
    // The late node provisioned its own BOOTSTRAP_PLATES once Redis answered.
    expect((await publish(late.url, "latecomer", "hello", 1, "latecomer-secret-0123456789ab")).status).toBe(200);
  }, 30_000);
});
