import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { call, createKey, mintPath, mintToken, revokeKey, sleep } from "../test-support/calls.js";
import { KEYS, eventually, publish, startTestNode } from "../test-support/node.js";
import type { TestNode } from "../test-support/node.js";
import { SseClient } from "../test-support/sse.js";
import { WsClient } from "../test-support/ws.js";

/** A token of the right shape that was never minted. */
const UNKNOWN_TOKEN = "A".repeat(32);

/** Reads the error code of a refused SSE connection (its plain HTTP error body). */
async function refusedCode(sse: SseClient): Promise<string> {
  await sse.waitForEnd(3000);
  return JSON.parse(sse.body).error.code;
}

describe("minting client tokens (route 4)", () => {
  let t: TestNode;
  beforeAll(async () => {
    t = await startTestNode();
  });
  afterAll(() => t.cleanup());

  const auth = { Authorization: `Bearer ${KEYS.acme}` };

  function expectMinted(data: any, channel: string, pattern: boolean): void {
    expect(Object.keys(data).sort()).toEqual(["channel", "expiresAt", "maxDuration", "maxUses", "path", "pattern", "token"]);
    expect(data.path).toBe(`/acme/s/${data.token}`);
    // At least 128 bits: 22 url-safe characters carry 132.
    expect(data.token).toMatch(/^[A-Za-z0-9_-]{22,}$/);
    expect(data.channel).toBe(channel);
    expect(data.pattern).toBe(pattern);
    expect(new Date(data.expiresAt).toISOString()).toBe(data.expiresAt);
  }

  it("mints with GET and answers the path, token and the defaults (1 use, unlimited duration, 5 minutes)", async () => {
    const before = Date.now();
    const res = await mintToken(t.url, "acme", "room.lobby");
    expect(res.status, res.text).toBe(200);
    expect(Object.keys(res.body)).toEqual(["data"]);
    const data = res.body.data;
    expectMinted(data, "room.lobby", false);
    expect(data.maxUses).toBe(1);
    expect(data.maxDuration).toBe(0);
    const expiresAt = Date.parse(data.expiresAt);
    expect(expiresAt).toBeGreaterThanOrEqual(before + 300_000 - 5);
    expect(expiresAt).toBeLessThanOrEqual(Date.now() + 300_000 + 5);
  });

  it("mints with POST and the parameters in a JSON body", async () => {
    const before = Date.now();
    const res = await call(t.url, "POST", "/acme/pubsub/room.lobby/client", {
      headers: { ...auth, "Content-Type": "application/json" },
      body: JSON.stringify({ max_dur: 5000, ttl: 2000, max_uses: 3 }),
    });
    expect(res.status, res.text).toBe(200);
    expectMinted(res.body.data, "room.lobby", false);
    expect(res.body.data.maxUses).toBe(3);
    expect(res.body.data.maxDuration).toBe(5000);
    const expiresAt = Date.parse(res.body.data.expiresAt);
    expect(expiresAt).toBeGreaterThanOrEqual(before + 2000 - 5);
    expect(expiresAt).toBeLessThanOrEqual(Date.now() + 2000 + 5);
  });

  it("mints with POST and no body at all using the defaults", async () => {
    const before = Date.now();
    const res = await call(t.url, "POST", "/acme/pubsub/room.lobby/client", { headers: auth });
    expect(res.status, res.text).toBe(200);
    expectMinted(res.body.data, "room.lobby", false);
    expect(res.body.data.maxUses).toBe(1);
    expect(res.body.data.maxDuration).toBe(0);
    expect(Date.parse(res.body.data.expiresAt)).toBeGreaterThanOrEqual(before + 300_000 - 5);
  });

  it("mints a different token every time", async () => {
    const tokens = new Set<string>();
    for (let i = 0; i < 20; i += 1) tokens.add((await mintPath(t.url, "acme", "room.lobby")).token);
    expect(tokens.size).toBe(20);
  });

  it("mints a pattern token with pattern=true, in the query and in a JSON body", async () => {
    const res = await mintToken(t.url, "acme", "user:*", { pattern: "true" });
    expect(res.status, res.text).toBe(200);
    expectMinted(res.body.data, "user:*", true);
    const posted = await call(t.url, "POST", "/acme/pubsub/user:*/client", {
      headers: { ...auth, "Content-Type": "application/json" },
      body: JSON.stringify({ pattern: true }),
    });
    expect(posted.status, posted.text).toBe(200);
    expectMinted(posted.body.data, "user:*", true);
  });

  it("refuses a wildcard channel without pattern=true with 400 invalid_channel", async () => {
    const res = await mintToken(t.url, "acme", "user:*");
    expect(res.status).toBe(400);
    expect(res.body.error.code).toBe("invalid_channel");
  });

  it("refuses max_dur that is negative, fractional or not a number with 400 invalid_parameter", async () => {
    for (const value of ["-1", "1.5", "abc"]) {
      const res = await mintToken(t.url, "acme", "room.lobby", { max_dur: value });
      expect(res.status, value).toBe(400);
      expect(res.body.error.code).toBe("invalid_parameter");
    }
    for (const value of [-1, 1.5, "abc", true]) {
      const res = await call(t.url, "POST", "/acme/pubsub/room.lobby/client", {
        headers: { ...auth, "Content-Type": "application/json" },
        body: JSON.stringify({ max_dur: value }),
      });
      expect(res.status, String(value)).toBe(400);
      expect(res.body.error.code).toBe("invalid_parameter");
    }
  });

  it("refuses expiry of 0 or over 600000 with 400 invalid_parameter and accepts 600000", async () => {
    for (const value of ["0", "600001", "-5", "2.5"]) {
      const res = await mintToken(t.url, "acme", "room.lobby", { expiry: value });
      expect(res.status, value).toBe(400);
      expect(res.body.error.code).toBe("invalid_parameter");
    }
    const before = Date.now();
    const ok = await mintToken(t.url, "acme", "room.lobby", { expiry: "600000" });
    expect(ok.status, ok.text).toBe(200);
    expect(Date.parse(ok.body.data.expiresAt)).toBeGreaterThanOrEqual(before + 600_000 - 5);
    expect(Date.parse(ok.body.data.expiresAt)).toBeLessThanOrEqual(Date.now() + 600_000 + 5);
  });

  it("takes ttl as an alias of expiry, with the same range", async () => {
    const before = Date.now();
    const res = await mintToken(t.url, "acme", "room.lobby", { ttl: "1000" });
    expect(res.status, res.text).toBe(200);
    expect(Date.parse(res.body.data.expiresAt)).toBeGreaterThanOrEqual(before + 1000 - 5);
    expect(Date.parse(res.body.data.expiresAt)).toBeLessThanOrEqual(Date.now() + 1000 + 5);
    for (const value of ["0", "600001"]) {
      const refused = await mintToken(t.url, "acme", "room.lobby", { ttl: value });
      expect(refused.status, value).toBe(400);
      expect(refused.body.error.code).toBe("invalid_parameter");
    }
  });

  it("refuses expiry and ttl that differ with 400 invalid_parameter and accepts them when equal", async () => {
    const differ = await mintToken(t.url, "acme", "room.lobby", { expiry: "1000", ttl: "2000" });
    expect(differ.status).toBe(400);
    expect(differ.body.error.code).toBe("invalid_parameter");
    const before = Date.now();
    const equal = await mintToken(t.url, "acme", "room.lobby", { expiry: "2000", ttl: "2000" });
    expect(equal.status, equal.text).toBe(200);
    expect(Date.parse(equal.body.data.expiresAt)).toBeGreaterThanOrEqual(before + 2000 - 5);
    expect(Date.parse(equal.body.data.expiresAt)).toBeLessThanOrEqual(Date.now() + 2000 + 5);
  });

  it("refuses a negative max_uses with 400 invalid_parameter", async () => {
    for (const value of ["-1", "1.5", "many"]) {
      const res = await mintToken(t.url, "acme", "room.lobby", { max_uses: value });
      expect(res.status, value).toBe(400);
      expect(res.body.error.code).toBe("invalid_parameter");
    }
  });

  it("takes max_uses=0 as unlimited: the token connects three times", async () => {
    const minted = await mintPath(t.url, "acme", "room.lobby", { max_uses: "0" });
    expect(minted.maxUses).toBe(0);
    const subs: SseClient[] = [];
    try {
      for (let i = 0; i < 3; i += 1) {
        const sub = await SseClient.open(`${t.url}${minted.path}`);
        subs.push(sub);
        expect(sub.status).toBe(200);
        await sub.waitFor("ready");
      }
    } finally {
      for (const sub of subs) sub.close();
    }
  });

  it("refuses a key without the client scope with 403 forbidden", async () => {
    const key = await createKey(t.url, "acme", { scopes: ["publish", "subscribe"] });
    const res = await mintToken(t.url, "acme", "room.lobby", {}, key.secret);
    expect(res.status).toBe(403);
    expect(res.body.error.code).toBe("forbidden");
  });

  it("refuses a channel or pattern outside the key's channel list with 403 forbidden, and mints inside it", async () => {
    const key = await createKey(t.url, "acme", { scopes: ["client"], channels: ["user:*"] });
    for (const [channel, params] of [
      ["other", {}],
      ["*", { pattern: "true" }],
      ["u*", { pattern: "true" }],
    ] as const) {
      const res = await mintToken(t.url, "acme", channel, params, key.secret);
      expect(res.status, channel).toBe(403);
      expect(res.body.error.code).toBe("forbidden");
    }
    expect((await mintToken(t.url, "acme", "user:1", {}, key.secret)).status).toBe(200);
    expect((await mintToken(t.url, "acme", "user:*", { pattern: "true" }, key.secret)).status).toBe(200);
    expect((await mintToken(t.url, "acme", "user:1:*", { pattern: "true" }, key.secret)).status).toBe(200);
  });

  it("refuses a missing key with 401 missing_api_key and a wrong or foreign key with 401 invalid_api_key", async () => {
    const missing = await call(t.url, "GET", "/acme/pubsub/room.lobby/client");
    expect(missing.status).toBe(401);
    expect(missing.body.error.code).toBe("missing_api_key");
    const missingPost = await call(t.url, "POST", "/acme/pubsub/room.lobby/client");
    expect(missingPost.status).toBe(401);
    expect(missingPost.body.error.code).toBe("missing_api_key");
    for (const key of ["wrong-key", KEYS.globex]) {
      const res = await mintToken(t.url, "acme", "room.lobby", {}, key);
      expect(res.status).toBe(401);
      expect(res.body.error.code).toBe("invalid_api_key");
    }
    const noPlate = await mintToken(t.url, "nosuchplate", "room.lobby");
    expect(noPlate.status).toBe(401);
    expect(noPlate.body.error.code).toBe("invalid_api_key");
  });
});

describe("connecting with a client token over SSE (route 5)", () => {
  let t: TestNode;
  beforeAll(async () => {
    t = await startTestNode();
  });
  afterAll(() => t.cleanup());

  it("subscribes a plain GET with no headers: ready, then the channel's messages", async () => {
    const { path } = await mintPath(t.url, "acme", "room.sse");
    // What a browser's EventSource may send: no Authorization, a generic Accept.
    const sub = await SseClient.open(`${t.url}${path}`, { Accept: "*/*" });
    try {
      expect(sub.status).toBe(200);
      expect(String(sub.headers["content-type"])).toMatch(/^text\/event-stream/);
      expect(await sub.waitFor("ready")).toMatchObject({ type: "ready", channel: "room.sse", pattern: false });
      await publish(t.url, "acme", "room.other", "not for it");
      await publish(t.url, "acme", "room.sse", { n: 1 });
      const [envelope] = await sub.waitForMessages(1);
      expect(envelope).toMatchObject({ type: "message", channel: "room.sse", message: { n: 1 } });
      expect(sub.messages).toHaveLength(1);
    } finally {
      sub.close();
    }
  });

  it("delivers every matching channel to a pattern token", async () => {
    const { path } = await mintPath(t.url, "acme", "user:*:events", { pattern: "true" });
    const sub = await SseClient.open(`${t.url}${path}`);
    try {
      expect(await sub.waitFor("ready")).toMatchObject({ channel: "user:*:events", pattern: true });
      await publish(t.url, "acme", "user:1:events", 1);
      await publish(t.url, "acme", "user:2:other", 2);
      await publish(t.url, "acme", "user:3:events", 3);
      const messages = await sub.waitForMessages(2);
      expect(messages.map((m) => [m.channel, m.message])).toEqual([
        ["user:1:events", 1],
        ["user:3:events", 3],
      ]);
    } finally {
      sub.close();
    }
  });

  it("answers an unknown token with 404 invalid_client_socket", async () => {
    for (const token of [UNKNOWN_TOKEN, "short", "x".repeat(300)]) {
      const sub = await SseClient.open(`${t.url}/acme/s/${token}`);
      expect(sub.status, token).toBe(404);
      expect(await refusedCode(sub)).toBe("invalid_client_socket");
      sub.close();
    }
  });

  it("answers an expired token with 410 expired_client_socket", async () => {
    const { path } = await mintPath(t.url, "acme", "room.sse", { ttl: "100" });
    await sleep(200);
    const sub = await SseClient.open(`${t.url}${path}`);
    expect(sub.status).toBe(410);
    expect(await refusedCode(sub)).toBe("expired_client_socket");
    sub.close();
  });

  it("answers a used-up token with 410 exhausted_client_socket", async () => {
    const { path } = await mintPath(t.url, "acme", "room.sse", { max_uses: "1" });
    const first = await SseClient.open(`${t.url}${path}`);
    try {
      expect(first.status).toBe(200);
      await first.waitFor("ready");
      const second = await SseClient.open(`${t.url}${path}`);
      expect(second.status).toBe(410);
      expect(await refusedCode(second)).toBe("exhausted_client_socket");
      second.close();
    } finally {
      first.close();
    }
  });

  it("answers a token of acme used under /globex with 404 invalid_client_socket, without spending it", async () => {
    const { token } = await mintPath(t.url, "acme", "room.sse");
    const foreign = await SseClient.open(`${t.url}/globex/s/${token}`);
    expect(foreign.status).toBe(404);
    expect(await refusedCode(foreign)).toBe("invalid_client_socket");
    foreign.close();
    const own = await SseClient.open(`${t.url}/acme/s/${token}`);
    try {
      expect(own.status).toBe(200);
      await own.waitFor("ready");
    } finally {
      own.close();
    }
  });

  it("lets exactly max_uses of 50 concurrent connections in, and refuses the rest with 410 exhausted_client_socket", async () => {
    const { path } = await mintPath(t.url, "acme", "room.race", { max_uses: "5" });
    const subs = await Promise.all(Array.from({ length: 50 }, () => SseClient.open(`${t.url}${path}`)));
    try {
      const accepted = subs.filter((s) => s.status === 200);
      const refused = subs.filter((s) => s.status === 410);
      expect(accepted).toHaveLength(5);
      expect(refused).toHaveLength(45);
      await Promise.all(accepted.map((s) => s.waitFor("ready")));
      const codes = await Promise.all(refused.map(refusedCode));
      expect(new Set(codes)).toEqual(new Set(["exhausted_client_socket"]));
    } finally {
      for (const sub of subs) sub.close();
    }
  });

  it("ends a connection made with max_dur with an error event max_duration_reached, then ends the stream", async () => {
    const { path } = await mintPath(t.url, "acme", "room.sse", { max_dur: "300" });
    const started = Date.now();
    const sub = await SseClient.open(`${t.url}${path}`);
    try {
      await sub.waitFor("ready");
      const error = await sub.waitFor("error", 2000);
      const elapsed = Date.now() - started;
      expect(error.error.code).toBe("max_duration_reached");
      expect(elapsed).toBeGreaterThanOrEqual(250);
      expect(elapsed).toBeLessThan(1500);
      expect(await sub.waitForEnd(1000)).toBe(true);
    } finally {
      sub.close();
    }
  });
});

describe("connecting with a client token over WebSocket (route 5)", () => {
  let t: TestNode;
  beforeAll(async () => {
    t = await startTestNode();
  });
  afterAll(() => t.cleanup());

  it("subscribes a WebSocket upgrade without headers: ready, then the channel's messages", async () => {
    const { path } = await mintPath(t.url, "acme", "room.ws");
    const ws = await WsClient.connect(`${t.wsUrl}${path}`);
    try {
      expect(await ws.waitFor("ready")).toMatchObject({ type: "ready", channel: "room.ws", pattern: false });
      await publish(t.url, "acme", "room.ws", ["a", 1]);
      const [envelope] = await ws.waitForMessages(1);
      expect(envelope).toMatchObject({ type: "message", channel: "room.ws", message: ["a", 1] });
    } finally {
      ws.close();
    }
  });

  /** Connects with a refused token: the handshake completes, then an error frame and the close. */
  async function expectRefused(path: string, code: string, closeCode: number): Promise<void> {
    const ws = await WsClient.connect(`${t.wsUrl}${path}`);
    try {
      expect(ws.opened).toBe(true);
      expect(await ws.waitForClose(3000)).toBe(closeCode);
      expect(ws.closeReason).toBe(code);
      const errors = ws.frames.filter((f) => f.type === "error");
      expect(errors).toHaveLength(1);
      expect(errors[0].error.code).toBe(code);
      expect(ws.frames.some((f) => f.type === "ready")).toBe(false);
    } finally {
      ws.close();
    }
  }

  it("completes the handshake for an unknown token, sends the error and closes 4404 invalid_client_socket", async () => {
    await expectRefused(`/acme/s/${UNKNOWN_TOKEN}`, "invalid_client_socket", 4404);
    await expectRefused(`/acme/s/short`, "invalid_client_socket", 4404);
  });

  it("closes 4404 for a token of acme used under /globex", async () => {
    const { token } = await mintPath(t.url, "acme", "room.ws");
    await expectRefused(`/globex/s/${token}`, "invalid_client_socket", 4404);
  });

  it("closes 4410 expired_client_socket for an expired token", async () => {
    const { path } = await mintPath(t.url, "acme", "room.ws", { ttl: "100" });
    await sleep(200);
    await expectRefused(path, "expired_client_socket", 4410);
  });

  it("closes 4429 exhausted_client_socket for a used-up token", async () => {
    const { path } = await mintPath(t.url, "acme", "room.ws", { max_uses: "1" });
    const first = await WsClient.connect(`${t.wsUrl}${path}`);
    try {
      await first.waitFor("ready");
      await expectRefused(path, "exhausted_client_socket", 4429);
    } finally {
      first.close();
    }
  });

  it("lets exactly max_uses of 50 concurrent WebSockets in, and closes the rest 4429", async () => {
    const { path } = await mintPath(t.url, "acme", "room.race", { max_uses: "5" });
    const sockets = await Promise.all(Array.from({ length: 50 }, () => WsClient.connect(`${t.wsUrl}${path}`)));
    try {
      const settled = await eventually(
        () => sockets.every((ws) => ws.closeCode !== undefined || ws.frames.some((f) => f.type === "ready")),
        5000,
      );
      expect(settled).toBe(true);
      // Give a late second frame (an error after a ready) a moment to show up.
      await sleep(50);
      const ready = sockets.filter((ws) => ws.frames.some((f) => f.type === "ready"));
      expect(ready).toHaveLength(5);
      for (const ws of ready) expect(ws.closeCode).toBeUndefined();
      const refused = sockets.filter((ws) => ws.closeCode !== undefined);
      expect(refused).toHaveLength(45);
      for (const ws of refused) {
        expect(ws.closeCode).toBe(4429);
        expect(ws.closeReason).toBe("exhausted_client_socket");
      }
    } finally {
      for (const ws of sockets) ws.close();
    }
  });

  it("closes a connection made with max_dur=300 with 4000 max_duration_reached after about 300 ms", async () => {
    const { path } = await mintPath(t.url, "acme", "room.ws", { max_dur: "300" });
    const started = Date.now();
    const ws = await WsClient.connect(`${t.wsUrl}${path}`);
    try {
      await ws.waitFor("ready");
      expect(await ws.waitForClose(2000)).toBe(4000);
      const elapsed = Date.now() - started;
      expect(ws.closeReason).toBe("max_duration_reached");
      expect(elapsed).toBeGreaterThanOrEqual(250);
      expect(elapsed).toBeLessThan(1500);
    } finally {
      ws.close();
    }
  });

  it("keeps a connection made without max_dur open past that time", async () => {
    const { path } = await mintPath(t.url, "acme", "room.ws");
    const ws = await WsClient.connect(`${t.wsUrl}${path}`);
    try {
      await ws.waitFor("ready");
      await sleep(400);
      expect(ws.closeCode).toBeUndefined();
    } finally {
      ws.close();
    }
  });
});

describe("revoking the key that minted a client token", () => {
  let t: TestNode;
  beforeAll(async () => {
    t = await startTestNode();
  });
  afterAll(() => t.cleanup());

  it("closes its token connections (WebSocket 4409, SSE error event revoked) and makes its unused tokens fail with 404", async () => {
    const key = await createKey(t.url, "acme", { scopes: ["client"] });
    const used = await mintPath(t.url, "acme", "room.revoke", { max_uses: "2" }, key.secret);
    const unused = await mintPath(t.url, "acme", "room.revoke", { max_uses: "0" }, key.secret);
    const other = await mintPath(t.url, "acme", "room.revoke");
    const ws = await WsClient.connect(`${t.wsUrl}${used.path}`);
    const sse = await SseClient.open(`${t.url}${used.path}`);
    const bystander = await WsClient.connect(`${t.wsUrl}${other.path}`);
    try {
      await Promise.all([ws.waitFor("ready"), sse.waitFor("ready"), bystander.waitFor("ready")]);
      await revokeKey(t.url, "acme", key.id);

      expect(await ws.waitForClose(1000)).toBe(4409);
      expect(ws.closeReason).toBe("revoked");
      expect(ws.frames.find((f) => f.type === "error")?.error.code).toBe("revoked");
      expect(await sse.waitFor("error", 1000)).toMatchObject({ error: { code: "revoked" } });
      expect(await sse.waitForEnd(1000)).toBe(true);

      const late = await SseClient.open(`${t.url}${unused.path}`);
      expect(late.status).toBe(404);
      expect(await refusedCode(late)).toBe("invalid_client_socket");
      late.close();
      const lateWs = await WsClient.connect(`${t.wsUrl}${unused.path}`);
      expect(await lateWs.waitForClose(1000)).toBe(4404);
      lateWs.close();

      // A token minted by another key is untouched.
      expect(bystander.closeCode).toBeUndefined();
      await publish(t.url, "acme", "room.revoke", "still here");
      expect((await bystander.waitForMessages(1))[0]?.message).toBe("still here");
    } finally {
      ws.close();
      sse.close();
      bystander.close();
    }
  });
});
