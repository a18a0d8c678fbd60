import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { comparePositions, formatPosition, parsePosition } from "@plate/protocol";
import { Redis } from "ioredis";
import { eventually, startRedis } from "@plate/testing";
import type { RedisServer } from "@plate/testing";
import { KEYS, publish, startTestNode } from "./test-support/node.js";
import type { TestNode } from "./test-support/node.js";
import { SseClient } from "./test-support/sse.js";
import { WsClient } from "./test-support/ws.js";
import { adminCall } from "./test-support/admin.js";

const AUTH = { Authorization: `Bearer ${KEYS.acme}` };

/** Channel names unique per case, so one node serves every case. */
let channels = 0;
function channel(): string {
  return `resume-${++channels}`;
}

async function sse(t: TestNode, ch: string, headers: Record<string, string> = {}, query = ""): Promise<SseClient> {
  const sub = await SseClient.open(`${t.url}/acme/pubsub/${ch}/subscribe${query}`, { ...AUTH, ...headers });
  expect(sub.status, sub.body).toBe(200);
  await sub.waitFor("ready");
  return sub;
}

async function sent(t: TestNode, ch: string, text: string): Promise<string> {
  const res = await publish(t.url, "acme", ch, { text });
  expect(res.status).toBe(200);
  return res.body.data.id as string;
}

/** Names of the events a client got, in order, messages shown by their text. */
function story(sub: SseClient): string[] {
  return sub.events.map((e) => (e.event === "message" ? JSON.parse(e.data).message.text : e.event));
}

function wsStory(client: WsClient): string[] {
  return client.frames.map((f) => (f.type === "message" ? f.message.text : f.type));
}

async function until(check: () => boolean, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
}

const backends: [string, () => Promise<{ env: Record<string, string>; stop: () => Promise<void> }>][] = [
  ["the embedded default", () => Promise.resolve({ env: {}, stop: () => Promise.resolve() })],
  [
    "Redis",
    async () => {
      const redis: RedisServer = await startRedis();
      return { env: { REDIS_URL: redis.url }, stop: () => redis.stop() };
    },
  ],
];

describe.each(backends)("resuming a subscription on %s", (_name, backend) => {
  let t: TestNode;
  let env: Record<string, string>;
  let stopBackend: () => Promise<void>;
  beforeAll(async () => {
    const b = await backend();
    stopBackend = b.stop;
    env = b.env;
    t = await startTestNode({ ...env, HISTORY_COUNT: "5" });
  });
  afterAll(async () => {
    await t.cleanup();
    await stopBackend();
  });

  it("gives the SSE ready event the position to resume from as its id", async () => {
    const ch = channel();
    const before = await sent(t, ch, "before");
    const sub = await sse(t, ch);
    const ready = sub.events[0]!;
    expect(ready.event).toBe("ready");
    expect(ready.id).toBe(before);
    expect(JSON.parse(ready.data).position).toBe(before);
    sub.close();
  });

  // EventSource remembers the last `id:` it saw and sends it back on its own reconnect: a ready
  // event carrying the head before the replayed messages would make a drop during the replay skip
  // the rest of it.
  it("gives a resumed SSE stream's ready event the client's own id, not the newest, so a drop during the replay loses nothing", async () => {
    const ch = channel();
    const since = await sent(t, ch, "seen");
    for (const text of ["a", "b", "c"]) await sent(t, ch, text);
    const sub = await sse(t, ch, { "Last-Event-ID": since });
    await sub.waitForMessages(3);
    expect(story(sub)).toEqual(["ready", "a", "b", "c"]);
    const ready = sub.events[0]!;
    expect(ready.id).toBe(since);
    sub.close();
  });

  it("replays what an SSE client missed after Last-Event-ID, then goes live, with nothing twice", async () => {
    const ch = channel();
    const first = await sse(t, ch);
    await sent(t, ch, "one");
    const [one] = await first.waitForMessages(1);
    first.close();
    await sent(t, ch, "two");
    await sent(t, ch, "three");
    const again = await sse(t, ch, { "Last-Event-ID": one.id });
    await again.waitForMessages(2);
    await sent(t, ch, "four");
    await again.waitForMessages(3);
    expect(story(again)).toEqual(["ready", "two", "three", "four"]);
    again.close();
  });

  it("resumes after ?lastEventId= the same way", async () => {
    const ch = channel();
    const one = await sent(t, ch, "one");
    await sent(t, ch, "two");
    const sub = await sse(t, ch, {}, `?lastEventId=${encodeURIComponent(one)}`);
    await sub.waitForMessages(1);
    expect(story(sub)).toEqual(["ready", "two"]);
    sub.close();
  });

  it("resumes from the ready position when no message had arrived before the drop", async () => {
    const ch = channel();
    const first = await sse(t, ch);
    const position = first.events[0]!.id!;
    first.close();
    await sent(t, ch, "while away");
    const again = await sse(t, ch, { "Last-Event-ID": position });
    await again.waitForMessages(1);
    expect(story(again)).toEqual(["ready", "while away"]);
    again.close();
  });

  // HEAD_REUSE_MS: a fresh subscriber of a channel the node already delivers starts where the
  // node's delivery of it is, without a read of the history (on Redis, none in a burst of opens).
  it("starts a fresh subscriber of a channel the node already delivers at its last message, with no history read, and it misses nothing after", async () => {
    const ch = channel();
    const first = await sse(t, ch);
    const one = await sent(t, ch, "one");
    await first.waitForMessages(1);
    // The plate's newest position is now another channel's: a head read would answer it.
    const elsewhere = await sent(t, channel(), "elsewhere");
    const monitor = env.REDIS_URL === undefined ? undefined : await new Redis(env.REDIS_URL).monitor();
    const commands: string[] = [];
    monitor?.on("monitor", (_time: string, args: string[]) => commands.push(args.join(" ")));
    // MONITOR shows commands from the moment it answered OK: one made before is not missed.
    const joined = await Promise.all([0, 1, 2, 3, 4].map(() => sse(t, ch)));
    for (const sub of joined) {
      expect(sub.events[0]!.id).toBe(one);
      expect(JSON.parse(sub.events[0]!.data).position).toBe(one);
    }
    if (monitor !== undefined) {
      // Every command sent before the mark is shown before it: wait for the mark, then look.
      const marker = new Redis(env.REDIS_URL!);
      await marker.echo("plate-monitor-mark");
      expect(await eventually(() => commands.some((c) => c.includes("plate-monitor-mark")))).toBe(true);
      marker.disconnect();
      monitor.disconnect();
    }
    expect(commands.filter((c) => c.includes("history-head"))).toEqual([]);
    expect(comparePositions(parsePosition(one)!, parsePosition(elsewhere)!)).toBeLessThan(0);
    await sent(t, ch, "two");
    for (const sub of joined) {
      await sub.waitForMessages(1);
      expect(story(sub)).toEqual(["ready", "two"]);
    }
    // A client that dropped before any message resumes from its ready position: "two" comes.
    joined[0]!.close();
    await sent(t, ch, "three");
    const again = await sse(t, ch, { "Last-Event-ID": joined[0]!.events[0]!.id! });
    await again.waitForMessages(2);
    expect(story(again)).toEqual(["ready", "two", "three"]);
    for (const sub of [first, again, ...joined.slice(1)]) sub.close();
  });

  it("sends reset, then live messages, when the id is older than the history kept (HISTORY_COUNT=5)", async () => {
    const ch = channel();
    const old = await sent(t, ch, "old");
    for (let i = 0; i < 6; i++) await sent(t, ch, `n${i}`);
    const sub = await sse(t, ch, { "Last-Event-ID": old });
    const reset = await sub.waitFor("reset");
    expect(reset).toMatchObject({ type: "reset", channel: ch, reason: "expired" });
    await sent(t, ch, "live");
    await sub.waitForMessages(1);
    expect(story(sub)).toEqual(["ready", "reset", "live"]);
    sub.close();
  });

  it("replays everything kept when the id is the last message dropped", async () => {
    const ch = channel();
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) ids.push(await sent(t, ch, `n${i}`));
    // HISTORY_COUNT=5: n0 is dropped, n1..n5 are kept; a client that had n0 missed nothing kept.
    const sub = await sse(t, ch, { "Last-Event-ID": ids[0]! });
    await sub.waitForMessages(5);
    expect(story(sub)).toEqual(["ready", "n1", "n2", "n3", "n4", "n5"]);
    sub.close();
  });

  it("sends reset for an id this service never gave, and for a pattern subscription that asks to resume", async () => {
    const ch = channel();
    const one = await sent(t, ch, "one");
    const forged = await sse(t, ch, { "Last-Event-ID": "not-an-id" });
    expect(await forged.waitFor("reset")).toMatchObject({ reason: "unknown_id" });
    forged.close();
    const pattern = await SseClient.open(`${t.url}/acme/pubsub/${ch.slice(0, -1)}*/subscribe?pattern=true`, { ...AUTH, "Last-Event-ID": one });
    expect(await pattern.waitFor("reset")).toMatchObject({ reason: "pattern" });
    pattern.close();
  });

  it("replays after since in a WebSocket's auth frame", async () => {
    const ch = channel();
    const one = await sent(t, ch, "one");
    const two = await sent(t, ch, "two");
    const client = await WsClient.connect(`${t.wsUrl}/acme/pubsub/${ch}/ws`, { auth: KEYS.acme, since: one });
    await client.waitForMessages(1);
    await sent(t, ch, "three");
    await client.waitForMessages(2);
    expect(wsStory(client)).toEqual(["ready", "two", "three"]);
    expect(client.frames[0].position).toBe(two);
    client.close();
  });

  it("replays after ?since= on a WebSocket authorized by header, and resets a too-old id", async () => {
    const ch = channel();
    const old = await sent(t, ch, "old");
    const kept = await sent(t, ch, "kept");
    await sent(t, ch, "after");
    const client = await WsClient.connect(`${t.wsUrl}/acme/pubsub/${ch}/ws?since=${encodeURIComponent(kept)}`, { headers: AUTH });
    await client.waitForMessages(1);
    expect(wsStory(client)).toEqual(["ready", "after"]);
    client.close();
    for (let i = 0; i < 6; i++) await sent(t, ch, `n${i}`);
    const late = await WsClient.connect(`${t.wsUrl}/acme/pubsub/${ch}/ws?since=${encodeURIComponent(old)}`, { headers: AUTH });
    expect(await late.waitFor("reset")).toMatchObject({ type: "reset", reason: "expired", channel: ch });
    expect(wsStory(late)).toEqual(["ready", "reset"]);
    late.close();
  });

  it("drops nothing and repeats nothing while messages stream during the resume", async () => {
    // Its own node, keeping more than the stream can outrun between the two connections.
    const roomy = await startTestNode({ ...env, HISTORY_COUNT: "10000" });
    try {
      const ch = channel();
      const first = await sse(roomy, ch);
      let n = 0;
      let publishing = true;
      const stream = (async () => {
        while (publishing) await sent(roomy, ch, `m${n++}`);
      })();
      await first.waitForMessages(20);
      first.close();
      const lastSeen = first.events.filter((e) => e.event === "message").at(-1)!;
      const again = await sse(roomy, ch, { "Last-Event-ID": lastSeen.id! });
      await again.waitForMessages(20);
      publishing = false;
      await stream;
      await until(() => again.messages.at(-1)?.message.text === `m${n - 1}`);
      again.close();
      // What the first connection saw, then the second: every message once, in order.
      const seenFirst = first.messages.map((m) => m.message.text);
      const texts = [...seenFirst, ...again.messages.map((m) => m.message.text)];
      expect(again.events.some((e) => e.event === "reset")).toBe(false);
      expect(texts).toEqual(Array.from({ length: n }, (_, i) => `m${i}`));
    } finally {
      await roomy.cleanup();
    }
  });

  // On Redis the history is read on one connection and live messages arrive on another: the
  // answer to the read can overtake the live copy of a message it already holds, which must then
  // not be sent a second time.
  it("repeats nothing at the seam when resumes meet publishes in flight from concurrent publishers", async () => {
    const roomy = await startTestNode({ ...env, HISTORY_COUNT: "10000" });
    const ch = channel();
    let publishing = true;
    let lastId = "";
    const publishers = Array.from({ length: 8 }, async () => {
      while (publishing) lastId = await sent(roomy, ch, "x");
    });
    try {
      await until(() => lastId !== "");
      for (let round = 0; round < 30; round++) {
        const since = lastId;
        let ids: string[];
        if (round % 2 === 0) {
          const resumed = await sse(roomy, ch, { "Last-Event-ID": since });
          await resumed.waitForMessages(30);
          resumed.close();
          ids = resumed.events.filter((e) => e.event === "message").map((e) => e.id!);
        } else {
          const resumed = await WsClient.connect(`${roomy.wsUrl}/acme/pubsub/${ch}/ws`, { auth: KEYS.acme, since });
          await until(() => resumed.frames.filter((f) => f.type === "message").length >= 30);
          resumed.close();
          ids = resumed.frames.filter((f) => f.type === "message").map((f) => f.id as string);
        }
        expect(ids.length).toBeGreaterThanOrEqual(30);
        let previous = parsePosition(since)!;
        for (const id of ids) {
          const position = parsePosition(id)!;
          expect(comparePositions(position, previous), `round ${round}: ${id} after ${formatPosition(previous)}`).toBeGreaterThan(0);
          previous = position;
        }
      }
    } finally {
      publishing = false;
      await Promise.allSettled(publishers);
      await roomy.cleanup();
    }
  });
});

describe("publishing with an Idempotency-Key", () => {
  let t: TestNode;
  beforeAll(async () => {
    t = await startTestNode();
  });
  afterAll(() => t.cleanup());

  async function publishWithKey(ch: string, key: string, text: string) {
    const res = await fetch(`${t.url}/acme/pubsub/${ch}/publish`, {
      method: "POST",
      headers: { ...AUTH, "Content-Type": "application/json", "Idempotency-Key": key },
      body: JSON.stringify({ message: { text } }),
    });
    return { status: res.status, body: (await res.json()) as any };
  }

  it("delivers a retried publish once and answers the retry with the first publish's id", async () => {
    const ch = channel();
    const sub = await sse(t, ch);
    const first = await publishWithKey(ch, "order-7", "paid");
    const retry = await publishWithKey(ch, "order-7", "paid");
    expect(first.status).toBe(200);
    expect(retry).toEqual(first);
    await sent(t, ch, "next");
    await sub.waitForMessages(2);
    expect(story(sub)).toEqual(["ready", "paid", "next"]);
    sub.close();
  });

  it("refuses a key reused for another channel with 409 conflict, and a malformed key with 400 invalid_parameter", async () => {
    const ch = channel();
    expect((await publishWithKey(ch, "order-8", "a")).status).toBe(200);
    const other = await publishWithKey(channel(), "order-8", "a");
    expect(other.status).toBe(409);
    expect(other.body.error.code).toBe("conflict");
    const bad = await publishWithKey(ch, "has space", "a");
    expect(bad.status).toBe(400);
    expect(bad.body.error.code).toBe("invalid_parameter");
  });
});

describe.each(backends)("Idempotency-Keys of different API keys on %s", (_name, backend) => {
  let t: TestNode;
  /** A second node on the same Redis (on the embedded default, the same node). */
  let other: TestNode;
  let stopBackend: () => Promise<void>;
  /** The secret of an acme key that may publish on `public:*` only. */
  let publicOnly: string;
  beforeAll(async () => {
    const b = await backend();
    stopBackend = b.stop;
    t = await startTestNode(b.env);
    other = b.env.REDIS_URL === undefined ? t : await startTestNode(b.env);
    const created = await adminCall(t.url, "POST", "/admin/plates/acme/keys", { body: { scopes: ["publish"], channels: ["public:*"] } });
    expect(created.status).toBe(201);
    publicOnly = created.body.data.secret as string;
  });
  afterAll(async () => {
    if (other !== t) await other.cleanup();
    await t.cleanup();
    await stopBackend();
  });

  async function publishWithKey(node: TestNode, secret: string, ch: string, key: string, text: string) {
    const res = await fetch(`${node.url}/acme/pubsub/${ch}/publish`, {
      method: "POST",
      headers: { Authorization: `Bearer ${secret}`, "Content-Type": "application/json", "Idempotency-Key": key },
      body: JSON.stringify({ message: { text } }),
    });
    return { status: res.status, text: await res.text() };
  }

  it("publishes normally when another API key already used the same Idempotency-Key, and a 409 never names a channel", async () => {
    const secret = channel();
    const sub = await sse(t, secret);
    // Key A takes "k1" first: a backend using "k1" afterwards is not refused or answered A's id.
    const byA = await publishWithKey(t, publicOnly, "public:x", "k1", "a");
    expect(byA.status, byA.text).toBe(200);
    const byBackend = await publishWithKey(other, KEYS.acme, secret, "k1", "plan");
    expect(byBackend.status, byBackend.text).toBe(200);
    const backendId = JSON.parse(byBackend.text).data.id as string;
    expect(backendId).not.toBe(JSON.parse(byA.text).data.id);
    // The backend takes "k2" first: key A using it learns nothing of the backend's channel.
    const first = await publishWithKey(t, KEYS.acme, secret, "k2", "more");
    expect(first.status, first.text).toBe(200);
    const byA2 = await publishWithKey(other, publicOnly, "public:y", "k2", "b");
    expect(byA2.status, byA2.text).toBe(200);
    expect(byA2.text).not.toContain(secret);
    // Each key's own retry still answers its first publish, across nodes.
    const retry = await publishWithKey(t, KEYS.acme, secret, "k1", "plan");
    expect(retry.status).toBe(200);
    expect(JSON.parse(retry.text).data.id).toBe(backendId);
    // A's own reuse on another channel is 409 conflict, naming no channel.
    const reuse = await publishWithKey(other, publicOnly, "public:z", "k1", "a");
    expect(reuse.status).toBe(409);
    expect(JSON.parse(reuse.text).error.code).toBe("conflict");
    expect(reuse.text).not.toContain("public:x");
    expect(reuse.text).not.toContain(secret);

    await sub.waitForMessages(2);
    await new Promise((r) => setTimeout(r, 100));
    expect(story(sub)).toEqual(["ready", "plan", "more"]);
    sub.close();
  });
});

describe("resuming across a restart of an embedded node", () => {
  it("sends reset with reason epoch for an id from before the restart", async () => {
    const t = await startTestNode();
    const id = await sent(t, "restarts", "before");
    await t.stop();
    const again = await startTestNode({}, t.dataDir);
    try {
      const sub = await sse(again, "restarts", { "Last-Event-ID": id });
      expect(await sub.waitFor("reset")).toMatchObject({ reason: "epoch" });
      sub.close();
    } finally {
      await again.cleanup();
    }
  });
});

describe("a plate's own history retention (PATCH /admin/plates/{plateId})", () => {
  let t: TestNode;
  beforeAll(async () => {
    t = await startTestNode({ HISTORY_COUNT: "100", KEY_CACHE_MS: "0" });
  });
  afterAll(() => t.cleanup());

  async function resumeOf(plate: string, key: string, ch: string, since: string): Promise<string[]> {
    const sub = await SseClient.open(`${t.url}/${plate}/pubsub/${ch}/subscribe`, { Authorization: `Bearer ${key}`, "Last-Event-ID": since });
    expect(sub.status, sub.body).toBe(200);
    await sub.waitFor("ready");
    await until(() => sub.events.length >= 2, 500);
    sub.close();
    return story(sub);
  }

  async function publishAs(plate: string, key: string, ch: string, text: string): Promise<string> {
    const res = await publish(t.url, plate, ch, { text }, key);
    expect(res.status).toBe(200);
    return res.body.data.id as string;
  }

  it("keeps what the plate asks for instead of the node's default, and the default again after null", async () => {
    const created = await adminCall(t.url, "POST", "/admin/plates", { body: { id: "small", history: { count: 2, ageMs: 60_000 } } });
    expect(created.status).toBe(201);
    expect(created.body.data.plate.history).toEqual({ count: 2, ageMs: 60_000 });
    const key: string = created.body.data.key.secret;
    const first = await publishAs("small", key, "c", "one");
    for (const text of ["two", "three", "four"]) await publishAs("small", key, "c", text);
    // Two kept ("three", "four"): "two" is gone after "one", so the resume cannot be complete.
    expect(await resumeOf("small", key, "c", first)).toEqual(["ready", "reset"]);

    const cleared = await adminCall(t.url, "PATCH", "/admin/plates/small", { body: { history: null } });
    expect(cleared.status).toBe(200);
    expect(cleared.body.data.history).toBeUndefined();
    const four = await publishAs("small", key, "d", "four");
    for (const text of ["five", "six", "seven"]) await publishAs("small", key, "d", text);
    expect(await resumeOf("small", key, "d", four)).toEqual(["ready", "five", "six", "seven"]);

    const set = await adminCall(t.url, "PATCH", "/admin/plates/small", { body: { history: { count: 0, ageMs: 1000 } } });
    expect(set.body.data.history).toEqual({ count: 0, ageMs: 1000 });
    const eight = await publishAs("small", key, "e", "eight");
    await publishAs("small", key, "e", "nine");
    expect(await resumeOf("small", key, "e", eight)).toEqual(["ready", "reset"]);
  });

  it("refuses a malformed history with 400 invalid_parameter, and an unknown plate with 404 not_found", async () => {
    for (const history of [{ count: -1, ageMs: 1000 }, { count: 1, ageMs: 10 }, { count: 1.5, ageMs: 1000 }, "big", { count: 1, ageMs: 1000, extra: 1 }]) {
      const res = await adminCall(t.url, "PATCH", "/admin/plates/acme", { body: { history } });
      expect(res.status, JSON.stringify(history)).toBe(400);
      expect(res.body.error.code).toBe("invalid_parameter");
    }
    const refusedCreate = await adminCall(t.url, "POST", "/admin/plates", { body: { id: "bad-history", history: { count: "2" } } });
    expect(refusedCreate.status).toBe(400);
    expect((await adminCall(t.url, "GET", "/admin/plates/bad-history")).status).toBe(404);
    const unknown = await adminCall(t.url, "PATCH", "/admin/plates/nope", { body: { history: null } });
    expect(unknown.status).toBe(404);
    expect(unknown.body.error.code).toBe("not_found");
  });
});
