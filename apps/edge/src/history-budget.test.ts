import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort, startRedis } from "@plate/testing";
import type { RedisServer } from "@plate/testing";
import { adminCall } from "./test-support/admin.js";
import { call, sleep } from "./test-support/calls.js";
import { ADMIN_TOKEN, KEYS, eventually, startTestNode } from "./test-support/node.js";
import type { TestNode } from "./test-support/node.js";
import { EdgeProcess } from "./test-support/process.js";
import { WsClient } from "./test-support/ws.js";

/**
 * A plate's history budget (issue 17): channels with history and bytes of history, over every
 * node. Past it a publish answers 403 `quota_exceeded` on every publish route and nothing of it
 * is published; another plate publishes on. On the embedded default the budget bounds the node's
 * heap, whatever a tenant publishes.
 */

async function setLimits(node: { url: string }, plate: string, limits: Record<string, unknown> | null): Promise<void> {
  const res = limits === null ? await adminCall(node.url, "DELETE", `/admin/plates/${plate}/limits`) : await adminCall(node.url, "PUT", `/admin/plates/${plate}/limits`, { body: limits });
  expect(res.status, JSON.stringify(res.body)).toBe(200);
}

async function storage(node: { url: string }, plate: string): Promise<{ channels: number; bytes: number; limits: { historyChannels: number; historyBytes: number } }> {
  const res = await adminCall(node.url, "GET", `/admin/plates/${plate}/storage`);
  expect(res.status).toBe(200);
  return res.body.data;
}

function publish(node: { url: string }, plate: "acme" | "globex", channel: string, message: unknown) {
  return call(node.url, "POST", `/${plate}/pubsub/${channel}/publish`, {
    headers: { Authorization: `Bearer ${KEYS[plate]}`, "Content-Type": "application/json" },
    body: JSON.stringify({ message }),
  });
}

describe.each(["embedded", "redis"] as const)("a plate's history budget (%s)", (kind) => {
  let redis: RedisServer | undefined;
  let a: TestNode;
  let b: TestNode;
  beforeAll(async () => {
    if (kind === "redis") redis = await startRedis();
    const env = redis === undefined ? {} : { REDIS_URL: redis.url };
    a = await startTestNode(env);
    // On the embedded default there is one node: "both" nodes are the same one.
    b = redis === undefined ? a : await startTestNode(env);
  });
  afterAll(async () => {
    await a?.cleanup();
    if (b !== a) await b?.cleanup();
    await redis?.stop();
  });

  it("refuses a channel past the plate's channels with 403 quota_exceeded on every publish route, publishes nothing of it, and lets another plate publish", async () => {
    await setLimits(a, "acme", { historyChannels: 3 });
    await sleep(1100);
    for (const [i, channel] of ["c1", "c2", "c3"].entries()) expect((await publish(i % 2 === 0 ? a : b, "acme", channel, i)).status).toBe(200);
    const listener = await WsClient.connect(`${a.wsUrl}/acme/realtime`, { headers: { Authorization: `Bearer ${KEYS.acme}` } });
    await listener.waitFor("ready");
    listener.socket.send(JSON.stringify({ type: "subscribe", ref: 1, channel: "c4" }));
    listener.socket.send(JSON.stringify({ type: "subscribe", ref: 5, channel: "c2" }));
    expect(await eventually(() => listener.frames.filter((f) => f.type === "subscribed").length === 2, 3000)).toBe(true);
    const refused = await publish(b, "acme", "c4", "no");
    expect([refused.status, refused.body.error.code]).toEqual([403, "quota_exceeded"]);
    expect(refused.body.error.message).toMatch(/3 channels/);
    const batch = await call(a.url, "POST", "/acme/publish", {
      headers: { Authorization: `Bearer ${KEYS.acme}`, "Content-Type": "application/json" },
      body: JSON.stringify({ messages: [{ channel: "c4", message: "no" }] }),
    });
    expect([batch.status, batch.body.error.code]).toEqual([403, "quota_exceeded"]);
    // A batch is published up to its first refusal: c1 before it is, c2 after it is not.
    const partial = await call(b.url, "POST", "/acme/publish", {
      headers: { Authorization: `Bearer ${KEYS.acme}`, "Content-Type": "application/json" },
      body: JSON.stringify({ messages: [{ channel: "c1", message: "in" }, { channel: "c4", message: "no" }, { channel: "c2", message: "no" }] }),
    });
    expect([partial.status, partial.body.error.code, partial.body.error.index]).toEqual([403, "quota_exceeded", 1]);
    listener.socket.send(JSON.stringify({ type: "publish", ref: 2, channel: "c4", message: "no" }));
    expect(await eventually(() => listener.frames.some((f) => f.ref === 2), 3000)).toBe(true);
    expect(listener.frames.find((f) => f.ref === 2)).toMatchObject({ type: "error", error: { code: "quota_exceeded" } });
    // A channel with history takes more; globex has its own budget (the node's: 10,000).
    expect((await publish(b, "acme", "c1", "again")).status).toBe(200);
    for (const channel of ["c4", "c5", "c6", "c7"]) expect((await publish(a, "globex", channel, "yes")).status).toBe(200);
    await sleep(100);
    expect(listener.messages).toEqual([]);
    const used = await storage(b, "acme");
    expect(used.channels).toBe(3);
    expect(used.limits.historyChannels).toBe(3);
    listener.close();
    await setLimits(a, "acme", null);
  });

  it("refuses bytes past the plate's budget with 403 quota_exceeded, and publishes again when the budget is raised", async () => {
    await setLimits(a, "acme", { historyBytes: 64 * 1024 });
    await sleep(1100);
    const statuses: number[] = [];
    const big = "x".repeat(10_000);
    for (let i = 0; i < 12; i++) statuses.push((await publish(i % 2 === 0 ? a : b, "acme", `big-${i}`, big)).status);
    // Each channel counts a stream (4,608), its marks (256) and its message (~10 KB): four fit in 64 KB.
    expect(statuses.filter((s) => s === 200).length).toBeGreaterThanOrEqual(3);
    expect(statuses.filter((s) => s === 403).length).toBeGreaterThanOrEqual(6);
    expect(statuses.every((s) => s === 200 || s === 403)).toBe(true);
    const used = await storage(a, "acme");
    expect(used.bytes).toBeLessThanOrEqual(64 * 1024);
    await setLimits(a, "acme", { historyBytes: 1024 * 1024 });
    await sleep(1100);
    expect((await publish(b, "acme", "big-after", big)).status).toBe(200);
    await setLimits(a, "acme", null);
  });
});

describe("the embedded default's heap under a flood of large messages to distinct channels", () => {
  let node: EdgeProcess;
  afterAll(() => node?.kill());

  it("stays bounded by the plate's history budget: a node with a 128 MB heap lives through 180 MB published", async () => {
    const budget = 16 * 1024 * 1024;
    node = new EdgeProcess(await freePort(), {
      ADMIN_TOKEN,
      BOOTSTRAP_PLATES: JSON.stringify(KEYS),
      LOG_LEVEL: "error",
      DEMO_PLATE: "false",
      HISTORY_BYTES_PER_PLATE: String(budget),
      // A heap of 128 MB: a node that kept what this test publishes would die (V8's out-of-memory
      // abort), since the flood is 180 MB. Used heap right after a flood says little (garbage
      // waits for the next collection), a node that lives through it says enough.
      NODE_OPTIONS: "--max-old-space-size=128",
    });
    await node.ready();
    // 3,000 messages of 60 KB (180 MB) to distinct channels.
    const message = "m".repeat(60_000);
    const statuses = new Map<number, number>();
    let next = 0;
    const worker = async () => {
      while (next < 3000) {
        const i = next++;
        const res = await publish(node, "acme", `flood-${i}`, message);
        statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
      }
    };
    await Promise.all(Array.from({ length: 8 }, worker));
    // About 16 MB of 60 KB messages were kept (~270); every other was refused, and nothing failed.
    expect([...statuses.keys()].sort()).toEqual([200, 403]);
    expect(statuses.get(200)!).toBeLessThan(300);
    expect(statuses.get(200)!).toBeGreaterThan(200);
    const used = await storage(node, "acme");
    expect(used.bytes).toBeLessThanOrEqual(budget);
    expect(node.alive).toBe(true);
    // globex publishes on.
    expect((await publish(node, "globex", "calm", "yes")).status).toBe(200);
  });
});
