import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { comparePositions, parsePosition } from "@plate/protocol";
import { freePort, startRedis } from "@plate/testing";
import type { RedisServer } from "@plate/testing";
import { createKey } from "../test-support/calls.js";
import { KEYS, startTestNode } from "../test-support/node.js";
import type { TestNode } from "../test-support/node.js";
import { EdgeProcess, redisNodeEnv } from "../test-support/process.js";
import { SseClient } from "../test-support/sse.js";

/** POSTs a batch to `base`'s route 12; answers the status and parsed body. */
async function batch(base: string, plate: string, body: unknown, key: string = KEYS.acme): Promise<{ status: number; body: any; retryAfter: string | null }> {
  const res = await fetch(`${base}/${plate}/publish`, {
    method: "POST",
    headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  return { status: res.status, body: await res.json(), retryAfter: res.headers.get("retry-after") };
}

function auth(key: string = KEYS.acme): Record<string, string> {
  return { Authorization: `Bearer ${key}` };
}

/** 100 messages over three channels, in a known order. */
const HUNDRED = Array.from({ length: 100 }, (_, i) => ({ channel: ["a", "b", "c"][i % 3]!, message: { i } }));

describe("batch publish (route 12: POST /{plateId}/publish)", () => {
  let t: TestNode;
  beforeAll(async () => {
    t = await startTestNode({ PUBLISH_BURST: "150", PUBLISH_RATE_PER_S: "1", MAX_MESSAGE_BYTES: "1000" });
  });
  afterAll(() => t.cleanup());

  it("publishes 100 messages over several channels in one request, answering their ids in order, and each channel's subscriber gets its own in order", async () => {
    const subs = await Promise.all(["a", "b", "c"].map((c) => SseClient.open(`${t.url}/acme/pubsub/${c}/subscribe`, auth())));
    for (const s of subs) await s.waitFor("ready");
    try {
      const res = await batch(t.url, "acme", { messages: HUNDRED });
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      const answers: { id: string; channel: string }[] = res.body.data;
      expect(answers.map((a) => a.channel)).toEqual(HUNDRED.map((m) => m.channel));
      const positions = answers.map((a) => parsePosition(a.id)!);
      for (let i = 1; i < positions.length; i++) expect(comparePositions(positions[i - 1]!, positions[i]!)).toBeLessThan(0);
      for (const [n, s] of subs.entries()) {
        const got = await s.waitForMessages(HUNDRED.filter((_, i) => i % 3 === n).length);
        expect(got.map((m) => m.message.i)).toEqual(HUNDRED.map((m, i) => [m, i] as const).filter(([, i]) => i % 3 === n).map(([, i]) => i));
        expect(got.map((m) => m.id)).toEqual(answers.filter((_, i) => i % 3 === n).map((a) => a.id));
      }
    } finally {
      for (const s of subs) s.close();
    }
  });

  it("rejects the whole batch for one invalid item, naming its index, and publishes nothing", async () => {
    const sub = await SseClient.open(`${t.url}/acme/pubsub/nothing/subscribe`, auth());
    await sub.waitFor("ready");
    try {
      const cases: [unknown, number, string][] = [
        [[...Array(57).fill({ channel: "nothing", message: 1 }), { channel: "bad name!", message: 1 }], 57, "invalid_channel"],
        [[{ channel: "nothing", message: 1 }, { channel: "nothing" }], 1, "missing_message"],
        [[{ channel: "nothing", message: 1 }, 7], 1, "missing_message"],
        [[{ channel: "nothing", message: "x".repeat(2000) }], 0, "payload_too_large"],
        [[{ channel: "nothing", message: 1 }, { channel: "nothing", message: 1, event: "not a name" }], 1, "invalid_parameter"],
      ];
      for (const [messages, index, code] of cases) {
        const res = await batch(t.url, "acme", { messages });
        expect(res.body.error).toMatchObject({ code, index });
        expect(res.status).toBe(code === "payload_too_large" ? 413 : 400);
      }
      for (const body of [{ messages: [] }, { messages: Array(101).fill({ channel: "nothing", message: 1 }) }, { message: 1 }, "[1]"]) {
        const res = await batch(t.url, "acme", body);
        expect(res.status).toBe(400);
        expect(res.body.error.code).toBe("missing_message");
      }
      await new Promise((r) => setTimeout(r, 100));
      expect(sub.events.filter((e) => e.event === "message")).toEqual([]);
    } finally {
      sub.close();
    }
  });

  it("refuses a channel outside the key's list with 403 and its index, and a key without the publish scope", async () => {
    const { secret: limited } = await createKey(t.url, "acme", { scopes: ["publish"], channels: ["news.*"] });
    const res = await batch(t.url, "acme", { messages: [{ channel: "news.1", message: 1 }, { channel: "secret", message: 2 }] }, limited);
    expect(res.status).toBe(403);
    expect(res.body.error).toMatchObject({ code: "forbidden", index: 1 });
    const { secret: reader } = await createKey(t.url, "acme", { scopes: ["subscribe"] });
    expect((await batch(t.url, "acme", { messages: [{ channel: "news.1", message: 1 }] }, reader)).body.error).toMatchObject({ code: "forbidden", index: 0 });
    expect((await batch(t.url, "acme", { messages: HUNDRED }, KEYS.globex)).status).toBe(401);
  });

  it("counts a batch as its messages against the plate's publish rate, taking all or none", async () => {
    // The first test took 100 of the 150 a plate may publish at once (refilling 1 a second).
    const over = await batch(t.url, "acme", { messages: HUNDRED });
    expect(over.status).toBe(429);
    expect(over.body.error.code).toBe("rate_limited");
    expect(Number(over.retryAfter)).toBeGreaterThan(0);
    expect((await batch(t.url, "acme", { messages: HUNDRED.slice(0, 40) })).status).toBe(200);
  });
});

describe.skipIf((process.env.REDIS_URL ?? "") !== "")("batch publish on Redis", () => {
  let redis: RedisServer;
  let nodes: EdgeProcess[] = [];
  beforeAll(async () => {
    redis = await startRedis({ fromEnv: false });
    nodes = [new EdgeProcess(await freePort(), redisNodeEnv(redis.url)), new EdgeProcess(await freePort(), redisNodeEnv(redis.url))];
    for (const n of nodes) await n.ready();
  });
  afterAll(async () => {
    for (const n of nodes) n.kill();
    await redis.stop();
  });

  it("lands a batch of 100 in order for subscribers on another node, and in the history a resume reads", async () => {
    const sub = await SseClient.open(`${nodes[1]!.url}/acme/pubsub/a/subscribe`, auth());
    await sub.waitFor("ready");
    try {
      const first = await batch(nodes[0]!.url, "acme", { messages: [{ channel: "a", message: "first" }] });
      const res = await batch(nodes[0]!.url, "acme", { messages: HUNDRED.map((m, i) => ({ ...m, channel: "a", ...(i % 10 === 0 ? { event: "tenth" } : {}) })) });
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      const ids = res.body.data.map((a: { id: string }) => a.id);
      const got = await sub.waitForMessages(101);
      expect(got.slice(1).map((m) => m.id)).toEqual(ids);
      expect(got.slice(1).map((m) => m.message.i)).toEqual(HUNDRED.map((_, i) => i));
      expect(got.slice(1).map((m) => m.event)).toEqual(HUNDRED.map((_, i) => (i % 10 === 0 ? "tenth" : undefined)));
      const resumed = await SseClient.open(`${nodes[1]!.url}/acme/pubsub/a/subscribe`, { ...auth(), "Last-Event-ID": first.body.data[0].id });
      try {
        const replayed = await resumed.waitForMessages(100);
        expect(replayed.map((m) => m.id)).toEqual(ids);
        expect(replayed.filter((m) => m.event === "tenth")).toHaveLength(10);
      } finally {
        resumed.close();
      }
    } finally {
      sub.close();
    }
  });
});
