import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startRedis } from "@plate/testing";
import type { RedisServer } from "@plate/testing";
import { adminCall } from "./test-support/admin.js";
import { call, mintPath } from "./test-support/calls.js";
import { KEYS, eventually, startTestNode } from "./test-support/node.js";
import type { TestNode } from "./test-support/node.js";
import { SseClient } from "./test-support/sse.js";
import { WsClient } from "./test-support/ws.js";

/**
 * Metering (issue 17): what each plate publishes (messages and bytes), what is delivered to its
 * subscribers, the client tokens it mints and its peak of open connections, by hour and by day,
 * summed over the nodes that share Redis, read with `GET /admin/plates/{id}/usage`. The figures
 * must be exactly what the test did.
 */

const describeOn = [
  ["embedded", false],
  ["Redis, two nodes", true],
] as const;

describe.each(describeOn)("usage on %s", (_name, onRedis) => {
  let redis: RedisServer | undefined;
  let a: TestNode;
  let b: TestNode;
  const clients: { close(): void }[] = [];
  beforeAll(async () => {
    const env = { USAGE_FLUSH_MS: "100" };
    if (onRedis) {
      redis = await startRedis();
      a = await startTestNode({ ...env, REDIS_URL: redis.url });
      b = await startTestNode({ ...env, REDIS_URL: redis.url });
    } else {
      a = await startTestNode(env);
      b = a;
    }
  });
  afterAll(async () => {
    for (const c of clients) c.close();
    await a?.cleanup();
    if (b !== a) await b?.cleanup();
    await redis?.stop();
  });

  async function usage(node: TestNode, plate: string, query = ""): Promise<any[]> {
    const res = await adminCall(node.url, "GET", `/admin/plates/${plate}/usage${query}`);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    return res.body.data;
  }

  it("counts exactly what was published, delivered and minted, and the peak of connections, per plate, over both nodes", async () => {
    // Subscribers: 2 on b (a channel) and 1 on a (WS), 3 connections of acme at once at most.
    const s1 = await SseClient.open(`${b.url}/acme/pubsub/metered/subscribe`, { Authorization: `Bearer ${KEYS.acme}` });
    const s2 = await SseClient.open(`${b.url}/acme/pubsub/metered/subscribe`, { Authorization: `Bearer ${KEYS.acme}` });
    const s3 = await WsClient.connect(`${a.wsUrl}/acme/pubsub/metered/ws`, { headers: { Authorization: `Bearer ${KEYS.acme}` } });
    clients.push(s1, s2, s3);
    await Promise.all([s1.waitFor("ready"), s2.waitFor("ready"), s3.waitFor("ready")]);
    const messages = ["a", { b: [1, 2, 3] }, "ccc", null, "é"];
    let bytes = 0;
    for (const [i, message] of messages.entries()) {
      const res = await call(i % 2 === 0 ? a.url : b.url, "POST", "/acme/pubsub/metered/publish", {
        headers: { Authorization: `Bearer ${KEYS.acme}`, "Content-Type": "application/json" },
        body: JSON.stringify({ message }),
      });
      expect(res.status).toBe(200);
      bytes += Buffer.byteLength(JSON.stringify(message));
    }
    // A batch of 2, and a refused publish (counts nothing).
    const batch = await call(a.url, "POST", "/acme/publish", {
      headers: { Authorization: `Bearer ${KEYS.acme}`, "Content-Type": "application/json" },
      body: JSON.stringify({ messages: [{ channel: "metered", message: 1 }, { channel: "elsewhere", message: 22 }] }),
    });
    expect(batch.status).toBe(200);
    bytes += 1 + 2;
    const refused = await call(a.url, "POST", "/acme/pubsub/metered/publish", {
      headers: { Authorization: `Bearer ${KEYS.acme}`, "Content-Type": "application/json" },
      body: "{nope",
    });
    expect(refused.status).toBe(400);
    await Promise.all([s1.waitForMessages(6), s2.waitForMessages(6), s3.waitForMessages(6)]);
    await mintPath(a.url, "acme", "metered");
    await mintPath(b.url, "acme", "metered");
    await mintPath(b.url, "acme", "metered");
    // globex publishes one message nobody receives.
    await call(b.url, "POST", "/globex/pubsub/x/publish", {
      headers: { Authorization: `Bearer ${KEYS.globex}`, "Content-Type": "application/json" },
      body: JSON.stringify({ message: "g" }),
    });
    const expected = { published: 7, publishedBytes: bytes, delivered: 18, tokensMinted: 3 };
    expect(await eventually(async () => (await usage(a, "acme", "?by=hour")).some((h) => h.published === 7 && h.delivered === 18 && h.tokensMinted === 3), 5000)).toBe(true);
    const hours = await usage(b, "acme", "?by=hour");
    const now = hours.find((h) => h.published > 0);
    expect(now).toMatchObject(expected);
    expect(now.peakConnections).toBe(3);
    expect(now.start).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:00:00\.000Z$/);
    // By day (the default): the same figures in today's row; the other days are zeros.
    const days = await usage(a, "acme");
    expect(days.at(-1)).toMatchObject({ ...expected, peakConnections: 3, start: new Date().toISOString().slice(0, 10) + "T00:00:00.000Z" });
    expect(days.slice(0, -1).every((d) => d.published === 0)).toBe(true);
    // globex's publish was the last thing done: it may come in the next flush.
    expect(await eventually(async () => (await usage(a, "globex", "?by=hour")).some((h) => h.published > 0), 5000)).toBe(true);
    expect((await usage(a, "globex", "?by=hour")).find((h) => h.published > 0)).toMatchObject({ published: 1, delivered: 0, tokensMinted: 0 });
  });

  it("refuses a read it cannot answer with 400 invalid_parameter, and an unknown plate with 404", async () => {
    for (const query of ["?by=week", "?from=yesterday", "?from=2026-01-01&to=2026-12-31", "?by=hour&from=2026-13-01T00"]) {
      const res = await adminCall(a.url, "GET", `/admin/plates/acme/usage${query}`);
      expect([query, res.status, res.body.error.code]).toEqual([query, 400, "invalid_parameter"]);
    }
    expect((await adminCall(a.url, "GET", "/admin/plates/nobody/usage")).status).toBe(404);
  });
});
