import { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startRedis, startTcpProxy } from "@plate/testing";
import type { RedisServer, TcpProxy } from "@plate/testing";
import { adminCall } from "./test-support/admin.js";
import { createKey, mintPath } from "./test-support/calls.js";
import { eventually, publish, startTestNode } from "./test-support/node.js";
import type { TestNode } from "./test-support/node.js";
import { SseClient } from "./test-support/sse.js";
import { WsClient } from "./test-support/ws.js";

/**
 * A node that missed a revocation (its Redis link was cut, or its subscriber connections deaf,
 * while a key was revoked or a plate deleted on another node) must still close what the key or
 * plate opened once it is back, and deliver those connections nothing published after it.
 * Two in-process nodes on one private redis-server; the listening node reaches it through a proxy.
 */

/** How long after the link is back the revoked connections may take to close. */
const CLOSED_WITHIN_MS = 5000;

let redis: RedisServer;
let proxy: TcpProxy;
/** Reaches Redis straight; revokes. */
let admin: TestNode;
/** Reaches Redis through `proxy`; holds the connections. */
let listener: TestNode;

/** Quick reconnects and probes, and a key cache far longer than the test: only a re-check can close them. */
const NODE_ENV = {
  REDIS_RECONNECT_MAX_MS: "100",
  REDIS_PROBE_INTERVAL_MS: "100",
  REDIS_PROBE_TIMEOUT_MS: "300",
  KEY_CACHE_MS: "60000",
  HEARTBEAT_MS: "60000",
};

async function ready(node: TestNode): Promise<boolean> {
  return (await fetch(`${node.url}/readyz`)).status === 200;
}

describe.skipIf((process.env.REDIS_URL ?? "") !== "")("a node whose Redis link failed while a key was revoked", () => {
  const open: { close(): void }[] = [];

  beforeAll(async () => {
    redis = await startRedis();
    proxy = await startTcpProxy(redis.port);
    admin = await startTestNode({ ...NODE_ENV, REDIS_URL: redis.url });
    listener = await startTestNode({ ...NODE_ENV, REDIS_URL: `redis://127.0.0.1:${proxy.port}` });
    expect(await eventually(async () => (await ready(admin)) && (await ready(listener)), 5000)).toBe(true);
  }, 20_000);

  afterEach(async () => {
    for (const client of open.splice(0)) client.close();
    proxy.restore();
    await eventually(() => ready(listener), 5000);
  });

  afterAll(async () => {
    await listener?.cleanup();
    await admin?.cleanup();
    await proxy?.close();
    await redis?.stop();
  });

  /** SSE, WebSocket (header and frame auth), and SSE and WebSocket through a client token: all opened with `secret` on the listening node. */
  async function subscribeAll(plate: string, channel: string, secret: string) {
    const auth = { Authorization: `Bearer ${secret}` };
    const ws = listener.wsUrl;
    const sse = await SseClient.open(`${listener.url}/${plate}/pubsub/${channel}/subscribe`, auth);
    const wsHeader = await WsClient.connect(`${ws}/${plate}/pubsub/${channel}/ws`, { headers: auth });
    const wsFrame = await WsClient.connect(`${ws}/${plate}/pubsub/${channel}/ws`, { auth: secret });
    const sseToken = await SseClient.open(`${listener.url}${(await mintPath(listener.url, plate, channel, {}, secret)).path}`);
    const wsToken = await WsClient.connect(`${ws}${(await mintPath(listener.url, plate, channel, {}, secret)).path}`);
    const all = { sse: [sse, sseToken], ws: [wsHeader, wsFrame, wsToken] };
    open.push(...all.sse, ...all.ws);
    await Promise.all([...all.sse.map((c) => c.waitFor("ready")), ...all.ws.map((c) => c.waitFor("ready"))]);
    return all;
  }

  type Subscribers = Awaited<ReturnType<typeof subscribeAll>>;

  /** Every subscriber closed as revoked (4409 / `event: error` `revoked`), having received no message. */
  async function expectRevoked(subs: Subscribers): Promise<void> {
    const closed = await eventually(() => subs.ws.every((c) => c.closeCode !== undefined) && subs.sse.every((c) => c.ended), CLOSED_WITHIN_MS);
    expect(closed, "the revoked key's connections are still open").toBe(true);
    for (const c of subs.ws) {
      expect(c.closeCode).toBe(4409);
      expect(c.closeReason).toBe("revoked");
      expect(c.messages).toEqual([]);
    }
    for (const c of subs.sse) {
      expect(JSON.parse(c.events.find((e) => e.event === "error")!.data).error.code).toBe("revoked");
      expect(c.messages).toEqual([]);
    }
  }

  async function plateWithKeys(plate: string): Promise<{ doomed: { id: string; secret: string }; kept: { id: string; secret: string } }> {
    expect((await adminCall(admin.url, "POST", "/admin/plates", { body: { id: plate } })).status).toBe(201);
    return { doomed: await createKey(admin.url, plate), kept: await createKey(admin.url, plate) };
  }

  it("closes a revoked key's SSE, WebSocket and client-token connections (4409) once the cut link is back, and delivers them nothing published after", async () => {
    const { doomed, kept } = await plateWithKeys("cutrevoke");
    const doomedSubs = await subscribeAll("cutrevoke", "news", doomed.secret);
    const bystander = await SseClient.open(`${listener.url}/cutrevoke/pubsub/news/subscribe`, { Authorization: `Bearer ${kept.secret}` });
    open.push(bystander);
    await bystander.waitFor("ready");

    proxy.cut();
    expect(await eventually(async () => !(await ready(listener)), 3000)).toBe(true);
    expect((await adminCall(admin.url, "DELETE", `/admin/plates/cutrevoke/keys/${doomed.id}`)).status).toBe(204);
    const during = await publish(admin.url, "cutrevoke", "news", "after the revocation", kept.secret);
    expect(during.status).toBe(200);
    proxy.restore();

    await expectRevoked(doomedSubs);
    // The other key's subscriber stays open and gets what it missed, then what follows.
    expect(await eventually(() => bystander.messages.length === 1, CLOSED_WITHIN_MS)).toBe(true);
    const later = await publish(admin.url, "cutrevoke", "news", "later", kept.secret);
    expect(later.status).toBe(200);
    expect((await bystander.waitForMessages(2)).map((m) => m.message)).toEqual(["after the revocation", "later"]);
    expect(bystander.ended).toBe(false);
    for (const c of [...doomedSubs.sse, ...doomedSubs.ws]) expect(c.messages).toEqual([]);
    // The key is refused by the listening node too, though it had it cached.
    expect((await publish(listener.url, "cutrevoke", "news", "refused", doomed.secret)).status).toBe(401);
  }, 20_000);

  it("closes a deleted plate's connections (4409) once the cut link is back, and delivers them nothing published after", async () => {
    const { doomed, kept } = await plateWithKeys("cutdelete");
    const subs = [await subscribeAll("cutdelete", "news", doomed.secret), await subscribeAll("cutdelete", "news", kept.secret)];

    proxy.cut();
    expect(await eventually(async () => !(await ready(listener)), 3000)).toBe(true);
    expect((await adminCall(admin.url, "DELETE", "/admin/plates/cutdelete")).status).toBe(204);
    proxy.restore();

    // A backend keeps PUBLISHing into the deleted plate's channel: none of it may reach them.
    const backend = new Redis(redis.url);
    try {
      let settled = false;
      const closing = (async () => {
        try {
          for (const s of subs) await expectRevoked(s);
        } finally {
          settled = true;
        }
      })();
      while (!settled) {
        await backend.publish("plate:cutdelete:news", '"from the backend"');
        await new Promise((r) => setTimeout(r, 10));
      }
      await closing;
    } finally {
      backend.disconnect();
    }
  }, 20_000);

  it("closes a revoked key's connections (4409) after its subscriber connections were deaf while it was revoked, and delivers them nothing published after", async () => {
    const { doomed, kept } = await plateWithKeys("deafrevoke");
    const doomedSubs = await subscribeAll("deafrevoke", "news", doomed.secret);
    const bystander = await SseClient.open(`${listener.url}/deafrevoke/pubsub/news/subscribe`, { Authorization: `Bearer ${kept.secret}` });
    open.push(bystander);
    await bystander.waitFor("ready");

    proxy.deafenSubscribers();
    expect((await adminCall(admin.url, "DELETE", `/admin/plates/deafrevoke/keys/${doomed.id}`)).status).toBe(204);
    expect((await publish(admin.url, "deafrevoke", "news", "after the revocation", kept.secret)).status).toBe(200);

    await expectRevoked(doomedSubs);
    expect((await bystander.waitForMessages(1, CLOSED_WITHIN_MS)).map((m) => m.message)).toEqual(["after the revocation"]);
    expect(bystander.ended).toBe(false);
  }, 20_000);
});
