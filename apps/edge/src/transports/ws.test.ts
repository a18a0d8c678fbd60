import type { Socket } from "node:net";
import WebSocket from "ws";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { adminCall } from "../test-support/admin.js";
import { call, createKey, sleep } from "../test-support/calls.js";
import { KEYS, publish, startTestNode } from "../test-support/node.js";
import type { TestNode } from "../test-support/node.js";
import { WsClient } from "../test-support/ws.js";

const AUTH = { Authorization: `Bearer ${KEYS.acme}` };
/** WS_MAX_BAD_FRAMES of the first suite's node. */
const MAX_BAD_FRAMES = 4;

/** Route 3 and its legacy alias 8, as a path for a channel (already encoded for a URL). */
const ROUTES = [
  ["route 3", (plate: string, channel: string) => `/${plate}/pubsub/${channel}/ws`],
  ["legacy route 8", (plate: string, channel: string) => `/${plate}/ws/subscribe/${channel}`],
] as const;

/** Connects with the upgrade's Authorization header (or `auth` as the first frame) and waits for ready. */
async function subscribed(
  url: string,
  options: { headers?: Record<string, string>; auth?: string } = { headers: AUTH },
): Promise<WsClient> {
  const client = await WsClient.connect(url, options);
  await client.waitFor("ready");
  return client;
}

/** Connects a socket that must be refused; answers its close code and the error frame's code. */
async function refused(url: string, options: { headers?: Record<string, string>; auth?: string } = { headers: AUTH }) {
  const client = await WsClient.connect(url, options);
  try {
    const close = await client.waitForClose(3000);
    const error = client.frames.find((f) => f.type === "error");
    return { close, code: error?.error?.code, ready: client.frames.some((f) => f.type === "ready") };
  } finally {
    client.close();
  }
}

describe("subscribing with WebSocket (route 3 and legacy route 8)", () => {
  let t: TestNode;
  beforeAll(async () => {
    t = await startTestNode({
      HEARTBEAT_MS: "200",
      WS_AUTH_TIMEOUT_MS: "300",
      WS_MAX_BAD_FRAMES: String(MAX_BAD_FRAMES),
    });
  });
  afterAll(() => t.cleanup());

  it.each(ROUTES)(
    "%s authenticates by the upgrade's Authorization header, sends ready, then envelopes",
    async (_name, route) => {
      const client = await subscribed(`${t.wsUrl}${route("acme", "alerts")}`);
      try {
        const sent = await publish(t.url, "acme", "alerts", { text: "hi" });
        expect(sent.status).toBe(200);
        await client.waitForMessages(1);
        expect(client.frames).toHaveLength(2);
        const [ready, envelope] = client.frames;
        expect(Object.keys(ready).sort()).toEqual(["channel", "clientId", "pattern", "position", "type"]);
        expect(ready).toMatchObject({ type: "ready", channel: "alerts", pattern: false });
        expect(typeof ready.clientId).toBe("string");
        expect(envelope).toEqual({
          type: "message",
          id: sent.body.data.id,
          channel: "alerts",
          message: { text: "hi" },
          timestamp: sent.body.data.timestamp,
        });
      } finally {
        client.close();
      }
    },
  );

  it.each(ROUTES)(
    '%s authenticates by a first frame {"auth": key}, sends ready, then envelopes',
    async (_name, route) => {
      const client = await subscribed(`${t.wsUrl}${route("acme", "room.lobby")}`, { auth: KEYS.acme });
      try {
        await publish(t.url, "acme", "room.lobby", 1);
        await publish(t.url, "acme", "room.lobby", 2);
        await client.waitForMessages(2);
        expect(client.frames.map((f) => f.type)).toEqual(["ready", "message", "message"]);
        expect(client.frames[0]).toMatchObject({ type: "ready", channel: "room.lobby", pattern: false });
        expect(client.messages.map((m) => m.message)).toEqual([1, 2]);
      } finally {
        client.close();
      }
    },
  );

  it("accepts the key without the Bearer prefix in the header", async () => {
    const client = await subscribed(`${t.wsUrl}/acme/pubsub/alerts/ws`, { headers: { Authorization: KEYS.acme } });
    client.close();
  });

  it('answers {"type":"ping"} with {"type":"pong"} and stays open', async () => {
    const client = await subscribed(`${t.wsUrl}/acme/pubsub/alerts/ws`);
    try {
      client.socket.send(JSON.stringify({ type: "ping" }));
      expect(await client.waitFor("pong")).toEqual({ type: "pong" });
      await publish(t.url, "acme", "alerts", "after pong");
      expect((await client.waitForMessages(1)).map((m) => m.message)).toEqual(["after pong"]);
      expect(client.closeCode).toBeUndefined();
    } finally {
      client.close();
    }
  });

  it.each(ROUTES)(
    "%s with ?pattern=true delivers messages of every matching channel, naming the concrete channel",
    async (_name, route) => {
      const client = await subscribed(`${t.wsUrl}${route("acme", "user:*")}?pattern=true`);
      const single = await subscribed(`${t.wsUrl}${route("acme", "user:%3F")}?pattern=true`, { auth: KEYS.acme });
      try {
        expect(client.frames[0]).toMatchObject({ type: "ready", channel: "user:*", pattern: true });
        expect(single.frames[0]).toMatchObject({ type: "ready", channel: "user:?", pattern: true });
        await publish(t.url, "acme", "user:42:events", "a");
        await publish(t.url, "acme", "room:42", "not matched");
        await publish(t.url, "acme", "user:7", "b");
        await publish(t.url, "acme", "user:", "c");
        // Each waits for its own: the two sockets are read apart, and a busy machine can hold one
        // back longer than a fixed pause (a clean-clone CI run found single's message not yet read).
        await client.waitForMessages(3);
        await single.waitForMessages(1);
        // Then a moment for anything that should not have come ("room:42"; "user:" for "user:?").
        await sleep(30);
        expect(client.messages.map((m) => [m.channel, m.message])).toEqual([
          ["user:42:events", "a"],
          ["user:7", "b"],
          ["user:", "c"],
        ]);
        expect(single.messages.map((m) => [m.channel, m.message])).toEqual([["user:7", "b"]]);
      } finally {
        client.close();
        single.close();
      }
    },
  );

  it("closes a client that sends nothing with 4401 after WS_AUTH_TIMEOUT_MS (300)", async () => {
    const started = Date.now();
    const client = await WsClient.connect(`${t.wsUrl}/acme/pubsub/alerts/ws`);
    try {
      expect(client.opened).toBe(true);
      expect(await client.waitForClose(3000)).toBe(4401);
      expect(Date.now() - started).toBeGreaterThanOrEqual(250);
      expect(client.frames.some((f) => f.type === "ready")).toBe(false);
    } finally {
      client.close();
    }
  });

  it("answers a pre-auth frame over 16 KiB with a payload_too_large error frame, then closes 1009 (reason payload_too_large)", async () => {
    const client = await WsClient.connect(`${t.wsUrl}/acme/pubsub/alerts/ws`);
    try {
      client.socket.send(JSON.stringify({ auth: "k".repeat(16_385) }));
      expect(await client.waitForClose(3000)).toBe(1009);
      expect(client.closeReason).toBe("payload_too_large");
      expect(client.frames.map((f) => f.type)).toEqual(["error"]);
      expect(client.frames[0].error.code).toBe("payload_too_large");
    } finally {
      client.close();
    }
  });

  it("takes a pre-auth frame of exactly 16384 bytes (the limit is 16 KiB): a bogus key in it gets 4401, not 1009", async () => {
    const client = await WsClient.connect(`${t.wsUrl}/acme/pubsub/alerts/ws`);
    try {
      const frame = JSON.stringify({ auth: "k".repeat(16_384 - JSON.stringify({ auth: "" }).length) });
      expect(Buffer.byteLength(frame)).toBe(16_384);
      client.socket.send(frame);
      expect(await client.waitForClose(3000)).toBe(4401);
      expect(client.frames.find((f) => f.type === "error")?.error.code).toBe("invalid_api_key");
    } finally {
      client.close();
    }
  });

  it("answers a frame of exactly 16385 bytes after auth with a payload_too_large error frame, then closes 1009 (reason payload_too_large)", async () => {
    const client = await subscribed(`${t.wsUrl}/acme/pubsub/alerts/ws`);
    try {
      client.socket.send("x".repeat(16_385));
      expect(await client.waitForClose(3000)).toBe(1009);
      expect(client.closeReason).toBe("payload_too_large");
      expect(client.frames.map((f) => f.type)).toEqual(["ready", "error"]);
      expect(client.frames[1].error.code).toBe("payload_too_large");
    } finally {
      client.close();
    }
  });

  it("answers an oversized frame without waiting for its payload: a header announcing 1 GB gets the error frame and 1009", async () => {
    // A client frame header (FIN, text, masked) announcing 2^30 bytes, then nothing: the node must
    // answer from the header alone, not wait for (or buffer) the payload.
    const client = await subscribed(`${t.wsUrl}/acme/pubsub/alerts/ws`);
    try {
      const header = Buffer.from([0x81, 0x80 | 127, 0, 0, 0, 0, 0x40, 0, 0, 0, 0, 0, 0, 0]);
      (client.socket as unknown as { _socket: Socket })._socket.write(header);
      expect(await client.waitForClose(3000)).toBe(1009);
      expect(client.closeReason).toBe("payload_too_large");
      expect(client.frames.find((f) => f.type === "error")?.error.code).toBe("payload_too_large");
    } finally {
      client.close();
    }
  });

  it('answers a second {"auth"} frame with a bad_request error frame and stays open', async () => {
    const client = await subscribed(`${t.wsUrl}/acme/pubsub/alerts/ws`, { auth: KEYS.acme });
    try {
      client.socket.send(JSON.stringify({ auth: KEYS.acme }));
      expect((await client.waitFor("error")).error.code).toBe("bad_request");
      client.socket.send(JSON.stringify({ type: "ping" }));
      await client.waitFor("pong");
      expect(client.closeCode).toBeUndefined();
    } finally {
      client.close();
    }
  });

  it(`answers unexpected frames after auth with bad_request, and closes 4400 bad_request at the ${MAX_BAD_FRAMES}th`, async () => {
    const client = await subscribed(`${t.wsUrl}/acme/pubsub/alerts/ws`);
    try {
      for (let i = 1; i < MAX_BAD_FRAMES; i += 1) client.socket.send(`hello ${i}`);
      client.socket.send(JSON.stringify({ type: "ping" }));
      await client.waitFor("pong");
      expect(client.frames.filter((f) => f.type === "error")).toHaveLength(MAX_BAD_FRAMES - 1);
      expect(client.closeCode).toBeUndefined();
      client.socket.send(Buffer.from("binary"));
      expect(await client.waitForClose(3000)).toBe(4400);
      expect(client.closeReason).toBe("bad_request");
      const errors = client.frames.filter((f) => f.type === "error");
      expect(errors).toHaveLength(MAX_BAD_FRAMES);
      expect(errors.every((f) => f.error.code === "bad_request")).toBe(true);
    } finally {
      client.close();
    }
  });

  it("closes with 4400 bad_request when the first frame is not an auth frame", async () => {
    for (const first of [
      JSON.stringify({ type: "ping" }),
      "hello",
      JSON.stringify({ key: KEYS.acme }),
      JSON.stringify({ auth: 42 }),
    ]) {
      const client = await WsClient.connect(`${t.wsUrl}/acme/pubsub/alerts/ws`);
      try {
        client.socket.send(first);
        expect(await client.waitForClose(3000), first).toBe(4400);
        expect(client.frames.find((f) => f.type === "error")?.error.code, first).toBe("bad_request");
        expect(client.frames.some((f) => f.type === "ready")).toBe(false);
      } finally {
        client.close();
      }
    }
  });

  it("answers a wrong key in the first frame with an invalid_api_key error frame and 4401", async () => {
    expect(await refused(`${t.wsUrl}/acme/pubsub/alerts/ws`, { auth: "not-a-key-0123456789abcdef" })).toEqual({
      close: 4401,
      code: "invalid_api_key",
      ready: false,
    });
  });

  it.each(ROUTES)(
    "%s answers a wrong key, another plate's key or an unknown plate with invalid_api_key and 4401",
    async (_name, route) => {
      const expected = { close: 4401, code: "invalid_api_key", ready: false };
      expect(
        await refused(`${t.wsUrl}${route("acme", "alerts")}`, {
          headers: { Authorization: "Bearer not-a-key-0123456789abcdef" },
        }),
      ).toEqual(expected);
      expect(
        await refused(`${t.wsUrl}${route("acme", "alerts")}`, { headers: { Authorization: `Bearer ${KEYS.globex}` } }),
      ).toEqual(expected);
      expect(await refused(`${t.wsUrl}${route("acme", "alerts")}`, { auth: KEYS.globex })).toEqual(expected);
      expect(await refused(`${t.wsUrl}${route("nobody", "alerts")}`)).toEqual(expected);
    },
  );

  it.each(ROUTES)("%s refuses a bad channel or plate with 4400 and its code", async (_name, route) => {
    expect(await refused(`${t.wsUrl}${route("acme", "user:*")}`)).toEqual({
      close: 4400,
      code: "invalid_channel",
      ready: false,
    });
    expect(await refused(`${t.wsUrl}${route("acme", "room%5B1")}`)).toEqual({
      close: 4400,
      code: "invalid_channel",
      ready: false,
    });
    expect(await refused(`${t.wsUrl}${route("acme", "room%5B*")}?pattern=true`)).toEqual({
      close: 4400,
      code: "invalid_channel",
      ready: false,
    });
    expect(await refused(`${t.wsUrl}${route("acme", "c".repeat(201))}`)).toEqual({
      close: 4400,
      code: "invalid_channel",
      ready: false,
    });
    expect(await refused(`${t.wsUrl}${route("ac.me", "alerts")}`)).toEqual({
      close: 4400,
      code: "invalid_plate",
      ready: false,
    });
  });

  it.each(ROUTES)("%s answers a GET without upgrade with 400 bad_request", async (_name, route) => {
    const res = await call(t.url, "GET", route("acme", "alerts"), { headers: AUTH });
    expect(res.status).toBe(400);
    expect(res.body.error.code).toBe("bad_request");
  });

  it("drops a peer that does not answer protocol pings (HEARTBEAT_MS=200) and keeps one that does", async () => {
    const silent = new WebSocket(`${t.wsUrl}/acme/pubsub/heartbeat/ws`, { headers: AUTH, autoPong: false });
    silent.on("error", () => undefined);
    let pings = 0;
    silent.on("ping", () => (pings += 1));
    const silentFrames: any[] = [];
    silent.on("message", (data: Buffer) => silentFrames.push(JSON.parse(data.toString("utf8"))));
    const silentClosed = new Promise<number>((resolve) => silent.once("close", (code) => resolve(code)));
    const silentOpened = new Promise<void>((resolve) => silent.once("open", () => resolve()));
    const healthy = await subscribed(`${t.wsUrl}/acme/pubsub/heartbeat/ws`);
    try {
      await silentOpened;
      const openedAt = Date.now();
      const outcome = await Promise.race([silentClosed.then(() => "closed"), sleep(1500).then(() => "still open")]);
      expect(outcome).toBe("closed");
      expect(Date.now() - openedAt).toBeLessThan(1500);
      expect(pings).toBeGreaterThanOrEqual(1);
      expect(silentFrames[0]?.type).toBe("ready");

      // The healthy client, open the whole time (well over 1 s by now), still gets messages.
      await sleep(Math.max(0, 1100 - (Date.now() - openedAt)));
      expect(healthy.closeCode).toBeUndefined();
      await publish(t.url, "acme", "heartbeat", "still here");
      expect((await healthy.waitForMessages(1)).map((m) => m.message)).toEqual(["still here"]);
    } finally {
      silent.terminate();
      healthy.close();
    }
  });

  it("delivers 1,000 messages from one publisher complete and in order", async () => {
    const client = await subscribed(`${t.wsUrl}/acme/pubsub/sequence/ws`);
    try {
      for (let i = 0; i < 1000; i += 1) {
        const res = await publish(t.url, "acme", "sequence", i);
        expect(res.status).toBe(200);
      }
      const got = await client.waitForMessages(1000, 10_000);
      expect(got.map((m) => m.message)).toEqual(Array.from({ length: 1000 }, (_, i) => i));
      expect(new Set(got.map((m) => m.id)).size).toBe(1000);
    } finally {
      client.close();
    }
  });
});

describe("WebSocket subscribe with scoped keys", () => {
  let t: TestNode;
  let publishOnly: string;
  let userOnly: string;
  beforeAll(async () => {
    t = await startTestNode();
    publishOnly = (await createKey(t.url, "acme", { scopes: ["publish"] })).secret;
    userOnly = (await createKey(t.url, "acme", { channels: ["user:*"] })).secret;
  });
  afterAll(() => t.cleanup());

  it.each(ROUTES)(
    "%s refuses a key without the subscribe scope with a forbidden frame and 4403",
    async (_name, route) => {
      const expected = { close: 4403, code: "forbidden", ready: false };
      expect(
        await refused(`${t.wsUrl}${route("acme", "alerts")}`, { headers: { Authorization: `Bearer ${publishOnly}` } }),
      ).toEqual(expected);
      expect(await refused(`${t.wsUrl}${route("acme", "alerts")}`, { auth: publishOnly })).toEqual(expected);
    },
  );

  it("refuses a key limited to user:* on channel other and on the pattern *, with 4403", async () => {
    const headers = { Authorization: `Bearer ${userOnly}` };
    const expected = { close: 4403, code: "forbidden", ready: false };
    expect(await refused(`${t.wsUrl}/acme/pubsub/other/ws`, { headers })).toEqual(expected);
    expect(await refused(`${t.wsUrl}/acme/pubsub/*/ws?pattern=true`, { headers })).toEqual(expected);
    expect(await refused(`${t.wsUrl}/acme/pubsub/*/ws?pattern=true`, { auth: userOnly })).toEqual(expected);
  });

  it("lets a key limited to user:* subscribe to user:42 and to the pattern user:42:*", async () => {
    const channel = await subscribed(`${t.wsUrl}/acme/pubsub/user:42/ws`, {
      headers: { Authorization: `Bearer ${userOnly}` },
    });
    const pattern = await subscribed(`${t.wsUrl}/acme/pubsub/user:42:*/ws?pattern=true`, { auth: userOnly });
    try {
      await publish(t.url, "acme", "user:42", "to channel");
      await publish(t.url, "acme", "user:42:inbox", "to pattern");
      expect((await channel.waitForMessages(1)).map((m) => m.message)).toEqual(["to channel"]);
      expect((await pattern.waitForMessages(1)).map((m) => m.message)).toEqual(["to pattern"]);
    } finally {
      channel.close();
      pattern.close();
    }
  });
});

/** As in sse.test.ts: every special character, plate-id lookalikes and prefix-collision names. */
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

describe("plate isolation over WebSocket", () => {
  let t: TestNode;
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
    const subs: { plate: string; channel: string; pattern: boolean; client: WsClient }[] = [];
    try {
      for (const [plate, key] of keys) {
        for (const channel of ISOLATION_CHANNELS) {
          const client = await subscribed(`${t.wsUrl}/${plate}/pubsub/${encodeURIComponent(channel)}/ws`, {
            headers: { Authorization: `Bearer ${key}` },
          });
          subs.push({ plate, channel, pattern: false, client });
        }
        for (const pattern of ISOLATION_PATTERNS) {
          const client = await subscribed(`${t.wsUrl}/${plate}/pubsub/${encodeURIComponent(pattern)}/ws?pattern=true`, {
            auth: key,
          });
          subs.push({ plate, channel: pattern, pattern: true, client });
        }
      }
      // Every plate publishes on every channel, then a final round; delivery follows publish order,
      // so once a subscriber has its own plate's final messages, any leak would be there too.
      for (const round of ["data", "final"]) {
        for (const [plate, key] of keys) {
          for (const channel of ISOLATION_CHANNELS) {
            const res = await publish(t.url, plate, encodeURIComponent(channel), { plate, round }, key);
            expect(res.status).toBe(200);
          }
        }
      }
      for (const { plate, channel, pattern, client } of subs) {
        const matches = pattern ? ISOLATION_CHANNELS.filter((c) => globToRegExp(channel).test(c)) : [channel];
        expect(matches.length, `${channel} matches a published channel`).toBeGreaterThan(0);
        const expected = ["data", "final"].flatMap((round) => matches.map((c) => [c, { plate, round }]));
        await client.waitForMessages(expected.length);
        await sleep(5);
        expect(
          client.messages.map((m) => [m.channel, m.message]),
          `${plate} ${pattern ? "pattern" : "channel"} ${channel}`,
        ).toEqual(expected);
      }
    } finally {
      for (const { client } of subs) client.close();
    }
  });

  it("gives globex's pattern * subscriber nothing while acme publishes", async () => {
    const all = await subscribed(`${t.wsUrl}/globex/pubsub/*/ws?pattern=true`, { auth: KEYS.globex });
    const own = await subscribed(`${t.wsUrl}/acme/pubsub/*/ws?pattern=true`);
    try {
      for (const channel of ISOLATION_CHANNELS) await publish(t.url, "acme", encodeURIComponent(channel), "acme only");
      expect((await publish(t.url, "globex", "done", "globex", KEYS.globex)).status).toBe(200);
      await own.waitForMessages(ISOLATION_CHANNELS.length);
      await all.waitForMessages(1);
      expect(own.messages).toHaveLength(ISOLATION_CHANNELS.length);
      expect(all.messages.map((m) => m.message)).toEqual(["globex"]);
    } finally {
      all.close();
      own.close();
    }
  });
});
