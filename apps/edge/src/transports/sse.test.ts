import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { adminCall } from "../test-support/admin.js";
import { call, createKey } from "../test-support/calls.js";
import { KEYS, publish, startTestNode } from "../test-support/node.js";
import type { TestNode } from "../test-support/node.js";
import { SseClient } from "../test-support/sse.js";

const AUTH = { Authorization: `Bearer ${KEYS.acme}` };

/** Route 2 and its legacy alias 7, as a path for a channel (already encoded for a URL). */
const ROUTES = [
  ["route 2", (plate: string, channel: string) => `/${plate}/pubsub/${channel}/subscribe`],
  ["legacy route 7", (plate: string, channel: string) => `/${plate}/subscribe/${channel}`],
] as const;

/**
 * Reads the raw start of an SSE stream until `done(text)` holds, then hangs up: status, headers
 * and the bytes exactly as they came (the `retry:` line is not an event, so SseClient drops it).
 */
async function readStart(url: string, headers: Record<string, string>, done: (text: string) => boolean) {
  const abort = new AbortController();
  const res = await fetch(url, { headers: { Accept: "text/event-stream", ...headers }, signal: abort.signal });
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let text = "";
  const deadline = Date.now() + 3000;
  try {
    while (!done(text) && Date.now() < deadline) {
      const { value, done: ended } = await reader.read();
      if (ended) break;
      text += decoder.decode(value, { stream: true });
    }
  } finally {
    abort.abort();
    await reader.cancel().catch(() => undefined);
  }
  return { status: res.status, headers: res.headers, text };
}

/** Opens an SSE subscription that must start; waits for its ready event. */
async function subscribed(url: string, headers: Record<string, string> = AUTH): Promise<SseClient> {
  const sub = await SseClient.open(url, headers);
  expect(sub.status, sub.body).toBe(200);
  await sub.waitFor("ready");
  return sub;
}

describe("subscribing with Server-Sent Events (route 2 and legacy route 7)", () => {
  let t: TestNode;
  beforeAll(async () => {
    t = await startTestNode({ HEARTBEAT_MS: "200", SSE_RETRY_MS: "1500" });
  });
  afterAll(() => t.cleanup());

  it.each(ROUTES)(
    "%s answers 200 with the event-stream headers, then retry: and a named ready event",
    async (_name, route) => {
      const start = await readStart(
        `${t.url}${route("acme", "alerts")}`,
        AUTH,
        (text) => text.includes("event: ready") && text.endsWith("\n\n"),
      );
      expect(start.status).toBe(200);
      expect(start.headers.get("content-type")).toMatch(/^text\/event-stream/);
      expect(start.headers.get("cache-control")).toBe("no-cache");
      expect(start.headers.get("x-accel-buffering")).toBe("no");
      // The stream starts with the reconnect delay, then the ready event as its own block.
      expect(start.text.startsWith("retry: 1500\n")).toBe(true);
      const blocks = start.text.split("\n\n").filter((block) => block !== "");
      expect(blocks[0]).toBe("retry: 1500");
      // id: the position to resume from (EventSource keeps it as its lastEventId).
      const readyLines = blocks[1]!.split("\n");
      expect(readyLines[0]).toMatch(/^id: [0-9a-z]{8}_\d+-\d+$/);
      expect(readyLines[1]).toBe("event: ready");
      expect(readyLines[2]!.startsWith("data: ")).toBe(true);
      const ready = JSON.parse(readyLines[2]!.slice("data: ".length));
      expect(Object.keys(ready).sort()).toEqual(["channel", "clientId", "pattern", "position", "type"]);
      expect(ready.position).toBe(readyLines[0]!.slice("id: ".length));
      expect(ready).toMatchObject({ type: "ready", channel: "alerts", pattern: false });
      expect(typeof ready.clientId).toBe("string");
      expect(ready.clientId).not.toBe("");
    },
  );

  it.each(ROUTES)("%s delivers each message as an unnamed event whose id: is the envelope id", async (_name, route) => {
    const sub = await subscribed(`${t.url}${route("acme", "room.lobby")}`);
    try {
      const first = await publish(t.url, "acme", "room.lobby", { n: 1 });
      const second = await publish(t.url, "acme", "room.lobby", "two");
      expect(first.status).toBe(200);
      expect(second.status).toBe(200);
      await sub.waitForMessages(2);
      const messages = sub.events.filter((e) => e.event !== "ready");
      expect(messages).toHaveLength(2);
      for (const [i, sent] of [first, second].entries()) {
        const event = messages[i]!;
        expect(event.event).toBe("message");
        expect(event.id).toBe(sent.body.data.id);
        expect(JSON.parse(event.data)).toEqual({
          type: "message",
          id: sent.body.data.id,
          channel: "room.lobby",
          message: i === 0 ? { n: 1 } : "two",
          timestamp: sent.body.data.timestamp,
        });
      }
    } finally {
      sub.close();
    }
  });

  it("writes no event: line before a message's id: and data: (the raw event is unnamed)", async () => {
    const url = `${t.url}/acme/pubsub/raw-check/subscribe`;
    const reading = readStart(url, AUTH, (text) => /\nid: [^\n]+\ndata: [^\n]+\n\n/.test(text));
    // Publish once the subscription is ready: poll until the first publish shows up in the stream.
    const deadline = Date.now() + 3000;
    let settled = false;
    reading.then(
      () => (settled = true),
      () => (settled = true),
    );
    while (!settled && Date.now() < deadline) {
      await publish(t.url, "acme", "raw-check", "x");
      await new Promise((r) => setTimeout(r, 20));
    }
    const { text } = await reading;
    const block = text.split("\n\n").find((b) => b.includes('data: {"type":"message"'));
    expect(block).toBeDefined();
    expect(block!.startsWith("id: ")).toBe(true);
    expect(block).not.toMatch(/^event:/m);
  });

  it("sends : ping comments while the channel is silent (HEARTBEAT_MS=200)", async () => {
    const sub = await subscribed(`${t.url}/acme/pubsub/quiet/subscribe`);
    try {
      const deadline = Date.now() + 2000;
      while (sub.comments.filter((c) => c === "ping").length < 2 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 20));
      }
      expect(sub.comments.filter((c) => c === "ping").length).toBeGreaterThanOrEqual(2);
      expect(sub.ended).toBe(false);
      expect(sub.messages).toEqual([]);
    } finally {
      sub.close();
    }
  });

  it.each(ROUTES)(
    "%s with ?pattern=true delivers messages of every matching channel, naming the concrete channel",
    async (_name, route) => {
      const sub = await subscribed(`${t.url}${route("acme", "user:*:events")}?pattern=true`);
      const single = await subscribed(`${t.url}${route("acme", "user:%3F:events")}?pattern=true`);
      try {
        expect(await sub.waitFor("ready")).toMatchObject({ type: "ready", channel: "user:*:events", pattern: true });
        expect(await single.waitFor("ready")).toMatchObject({ channel: "user:?:events", pattern: true });
        await publish(t.url, "acme", "user:42:events", "a");
        await publish(t.url, "acme", "user:42:other", "not matched");
        await publish(t.url, "acme", "user:7:events", "b");
        await publish(t.url, "acme", "user::events", "c");
        await publish(t.url, "acme", "room:7:events", "not matched");
        await publish(t.url, "acme", "user:1:2:events", "d");
        const got = await sub.waitForMessages(4);
        // Each stream waits for its own (read apart, one may lag on a busy machine); then a moment
        // for anything that should not have come.
        await single.waitForMessages(1);
        await new Promise((r) => setTimeout(r, 50));
        expect(got.map((m: any) => [m.channel, m.message])).toEqual([
          ["user:42:events", "a"],
          ["user:7:events", "b"],
          ["user::events", "c"],
          ["user:1:2:events", "d"],
        ]);
        expect(single.messages.map((m: any) => [m.channel, m.message])).toEqual([["user:7:events", "b"]]);
      } finally {
        sub.close();
        single.close();
      }
    },
  );

  it("delivers 1,000 messages from one publisher complete and in order", async () => {
    const sub = await subscribed(`${t.url}/acme/pubsub/sequence/subscribe`);
    try {
      for (let i = 0; i < 1000; i += 1) {
        const res = await publish(t.url, "acme", "sequence", i);
        expect(res.status).toBe(200);
      }
      const got = await sub.waitForMessages(1000, 10_000);
      expect(got.map((m: any) => m.message)).toEqual(Array.from({ length: 1000 }, (_, i) => i));
      expect(new Set(got.map((m: any) => m.id)).size).toBe(1000);
      const ids = sub.events.filter((e) => e.event === "message").map((e) => e.id);
      expect(ids).toEqual(got.map((m: any) => m.id));
    } finally {
      sub.close();
    }
  });
});

describe("SSE subscribe refusals: plain HTTP answers before any stream", () => {
  let t: TestNode;
  let publishOnly: string;
  let userOnly: string;
  beforeAll(async () => {
    t = await startTestNode({ HEARTBEAT_MS: "200" });
    publishOnly = (await createKey(t.url, "acme", { scopes: ["publish"] })).secret;
    userOnly = (await createKey(t.url, "acme", { channels: ["user:*"] })).secret;
  });
  afterAll(() => t.cleanup());

  /** Sends a subscribe that must be refused; answers status and error code, checking it is no stream. */
  async function refused(path: string, headers: Record<string, string>) {
    const res = await call(t.url, "GET", path, { headers: { Accept: "text/event-stream", ...headers } });
    expect(res.headers.get("content-type")).toMatch(/^application\/json/);
    return { status: res.status, code: res.body?.error?.code };
  }

  const CASES = [
    ["no Authorization header", 401, "missing_api_key", "acme", "alerts", "", () => ({})],
    [
      "an unknown key",
      401,
      "invalid_api_key",
      "acme",
      "alerts",
      "",
      () => ({ Authorization: "Bearer not-a-key-0123456789abcdef" }),
    ],
    [
      "another plate's key",
      401,
      "invalid_api_key",
      "acme",
      "alerts",
      "",
      () => ({ Authorization: `Bearer ${KEYS.globex}` }),
    ],
    ["a plate that does not exist", 401, "invalid_api_key", "nobody", "alerts", "", () => AUTH],
    ["a * without pattern=true", 400, "invalid_channel", "acme", "user:*", "", () => AUTH],
    ["a [ in the channel (%5B)", 400, "invalid_channel", "acme", "room%5B1", "", () => AUTH],
    ["a [ in a pattern (%5B)", 400, "invalid_channel", "acme", "room%5B*", "?pattern=true", () => AUTH],
    ["a space in the channel", 400, "invalid_channel", "acme", "a%20b", "", () => AUTH],
    ["a channel over 200 characters", 400, "invalid_channel", "acme", "c".repeat(201), "", () => AUTH],
    ["a plate id with a dot", 400, "invalid_plate", "ac.me", "alerts", "", () => AUTH],
  ] as const;

  for (const [name, route] of ROUTES) {
    it.each(CASES)(`${name} refuses %s with %i %s`, async (_what, status, code, plate, channel, query, headers) => {
      expect(await refused(`${route(plate, channel)}${query}`, headers())).toEqual({ status, code });
    });
  }

  it("refuses a key without the subscribe scope with 403 forbidden", async () => {
    for (const [, route] of ROUTES) {
      expect(await refused(route("acme", "alerts"), { Authorization: `Bearer ${publishOnly}` })).toEqual({
        status: 403,
        code: "forbidden",
      });
    }
  });

  it("refuses a key limited to user:* on channel other and on the pattern *, with 403 forbidden", async () => {
    const headers = { Authorization: `Bearer ${userOnly}` };
    expect(await refused("/acme/pubsub/other/subscribe", headers)).toEqual({ status: 403, code: "forbidden" });
    expect(await refused("/acme/pubsub/*/subscribe?pattern=true", headers)).toEqual({ status: 403, code: "forbidden" });
    expect(await refused("/acme/pubsub/user*/subscribe?pattern=true", headers)).toEqual({
      status: 403,
      code: "forbidden",
    });
  });

  it("lets a key limited to user:* subscribe to user:42 and to the pattern user:42:*", async () => {
    const headers = { Authorization: `Bearer ${userOnly}` };
    const channel = await subscribed(`${t.url}/acme/pubsub/user:42/subscribe`, headers);
    const pattern = await subscribed(`${t.url}/acme/pubsub/user:42:*/subscribe?pattern=true`, headers);
    try {
      await publish(t.url, "acme", "user:42", "to channel");
      await publish(t.url, "acme", "user:42:inbox", "to pattern");
      expect((await channel.waitForMessages(1)).map((m: any) => m.message)).toEqual(["to channel"]);
      expect((await pattern.waitForMessages(1)).map((m: any) => m.message)).toEqual(["to pattern"]);
    } finally {
      channel.close();
      pattern.close();
    }
  });
});

describe("SSE subscribe with CORS_ORIGINS=http://allowed.test", () => {
  let t: TestNode;
  beforeAll(async () => {
    t = await startTestNode({ CORS_ORIGINS: "http://allowed.test" });
  });
  afterAll(() => t.cleanup());

  it("gives the stream of an allowed origin Access-Control-Allow-Origin", async () => {
    const sub = await SseClient.open(`${t.url}/acme/pubsub/alerts/subscribe`, {
      ...AUTH,
      Origin: "http://allowed.test",
    });
    try {
      expect(sub.status).toBe(200);
      expect(sub.headers["access-control-allow-origin"]).toBe("http://allowed.test");
      await sub.waitFor("ready");
    } finally {
      sub.close();
    }
  });

  it("gives the stream of another origin no Access-Control-Allow-Origin", async () => {
    const sub = await SseClient.open(`${t.url}/acme/subscribe/alerts`, { ...AUTH, Origin: "http://evil.test" });
    try {
      expect(sub.headers["access-control-allow-origin"]).toBeUndefined();
    } finally {
      sub.close();
    }
  });

  it("puts the allowed origin on a refused subscribe too, so the page can read why", async () => {
    const res = await call(t.url, "GET", "/acme/pubsub/alerts/subscribe", {
      headers: { Origin: "http://allowed.test" },
    });
    expect(res.status).toBe(401);
    expect(res.body.error.code).toBe("missing_api_key");
    expect(res.headers.get("access-control-allow-origin")).toBe("http://allowed.test");
  });
});

/**
 * Channel names using every character the grammar allows beside letters and digits, names that
 * spell plate ids, and names that would collide with another plate's if a plate and a channel were
 * joined by `_`, `-`, `:`, `.` or `/` into one key.
 */
const ISOLATION_CHANNELS = [
  "alerts",
  "q",
  "user:42:events",
  "room.lobby",
  "a_b",
  "x@y.z",
  "k=v",
  "t~1",
  "dash-ed",
  "_.:@=~-",
  "globex",
  "acme:alerts",
  "globex:alerts",
  "x_alerts",
  "x-alerts",
  "x:alerts",
  "x.alerts",
  "c".repeat(200),
];

/** Patterns with every wildcard and special character, from the broadest to narrow ones. */
const ISOLATION_PATTERNS = [
  "*",
  "?",
  "?*",
  "*:*",
  "user:*",
  "*.*",
  "*@*",
  "*=*",
  "*~*",
  "*-*",
  "*_*",
  "_.:@=~-*",
  "x?alerts",
  "**",
  "*alerts",
];

/** The spec's glob, written independently of the code under test. */
function globToRegExp(pattern: string): RegExp {
  const body = pattern
    .replace(/[.+^${}()|[\]\\]/g, "\\$&")
    .replace(/\*/g, ".*")
    .replace(/\?/g, ".");
  return new RegExp(`^${body}$`, "s");
}

describe("plate isolation over SSE", () => {
  let t: TestNode;
  /** Every plate of the scenario and its key: acme, globex, and plates whose ids prefix-collide with acme. */
  const keys = new Map<string, string>();
  beforeAll(async () => {
    t = await startTestNode();
    keys.set("acme", KEYS.acme);
    keys.set("globex", KEYS.globex);
    for (const id of ["acme_x", "acme-x"]) {
      const res = await adminCall(t.url, "POST", "/admin/plates", { body: { id } });
      expect(res.status).toBe(201);
      keys.set(id, res.body.data.key.secret);
    }
  });
  afterAll(() => t.cleanup());

  it("never delivers one plate's messages to another plate, whatever the channel names and patterns", async () => {
    const subs: { plate: string; channel: string; pattern: boolean; sub: SseClient }[] = [];
    try {
      for (const [plate, key] of keys) {
        for (const channel of ISOLATION_CHANNELS) {
          const sub = await subscribed(`${t.url}/${plate}/pubsub/${encodeURIComponent(channel)}/subscribe`, {
            Authorization: `Bearer ${key}`,
          });
          subs.push({ plate, channel, pattern: false, sub });
        }
        for (const pattern of ISOLATION_PATTERNS) {
          const sub = await subscribed(
            `${t.url}/${plate}/pubsub/${encodeURIComponent(pattern)}/subscribe?pattern=true`,
            {
              Authorization: `Bearer ${key}`,
            },
          );
          subs.push({ plate, channel: pattern, pattern: true, sub });
        }
      }
      // Every plate publishes on every channel, then every plate publishes a final round. The
      // embedded broker delivers in publish order, so once a subscriber has its own plate's final
      // messages, anything leaked from the first round would already be there.
      for (const round of ["data", "final"]) {
        for (const [plate, key] of keys) {
          for (const channel of ISOLATION_CHANNELS) {
            const res = await publish(t.url, plate, encodeURIComponent(channel), { plate, round }, key);
            expect(res.status).toBe(200);
          }
        }
      }
      for (const { plate, channel, pattern, sub } of subs) {
        const matches = pattern ? ISOLATION_CHANNELS.filter((c) => globToRegExp(channel).test(c)) : [channel];
        const expected = ["data", "final"].flatMap((round) => matches.map((c) => [c, { plate, round }]));
        expect(matches.length, `${channel} matches a published channel`).toBeGreaterThan(0);
        await sub.waitForMessages(expected.length);
        await new Promise((r) => setTimeout(r, 5));
        expect(
          sub.messages.map((m: any) => [m.channel, m.message]),
          `${plate} ${pattern ? "pattern" : "channel"} ${channel}`,
        ).toEqual(expected);
      }
    } finally {
      for (const { sub } of subs) sub.close();
    }
  });

  it("gives globex's pattern * subscriber nothing while acme publishes", async () => {
    const all = await subscribed(`${t.url}/globex/pubsub/*/subscribe?pattern=true`, {
      Authorization: `Bearer ${KEYS.globex}`,
    });
    const own = await subscribed(`${t.url}/acme/pubsub/*/subscribe?pattern=true`);
    try {
      for (const channel of ISOLATION_CHANNELS) await publish(t.url, "acme", encodeURIComponent(channel), "acme only");
      expect((await publish(t.url, "globex", "done", "globex", KEYS.globex)).status).toBe(200);
      await own.waitForMessages(ISOLATION_CHANNELS.length);
      await all.waitForMessages(1);
      expect(own.messages).toHaveLength(ISOLATION_CHANNELS.length);
      expect(all.messages.map((m: any) => m.message)).toEqual(["globex"]);
    } finally {
      all.close();
      own.close();
    }
  });
});
