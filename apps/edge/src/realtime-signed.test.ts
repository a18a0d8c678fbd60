import { SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { adminCall } from "./test-support/admin.js";
import { KEYS, eventually, publish, startTestNode } from "./test-support/node.js";
import type { TestNode } from "./test-support/node.js";
import { SseClient } from "./test-support/sse.js";
import { WsClient } from "./test-support/ws.js";

/**
 * Route 9 opened with a signed client token (route 11) that a backend minted itself: by header,
 * `?token=` and auth frame; what its claims allow; its expiry (4401 `token_expired`); and its
 * refresh on a live WebSocket. Real sockets, one embedded node, no clock skew allowed.
 */

let t: TestNode;
let kid: string;
let secret: Uint8Array;
const clients: { close(): void }[] = [];

beforeAll(async () => {
  t = await startTestNode({ SIGNED_TOKEN_CLOCK_SKEW_S: "0" });
  const made = await adminCall(t.url, "POST", "/admin/plates/acme/signing-keys", { body: {} });
  kid = made.body.data.id as string;
  secret = Buffer.from(made.body.data.secret as string, "base64url");
});
afterAll(async () => {
  for (const c of clients) c.close();
  await t.cleanup();
});

/** A token for user `ann` that may subscribe to `channels` (and `patterns`), expiring in `seconds`. */
function token(claims: { channels?: string[]; patterns?: string[] } = {}, seconds = 60): Promise<string> {
  return new SignJWT({ sub: "ann", ...claims })
    .setProtectedHeader({ alg: "HS256", kid })
    .setExpirationTime(Math.floor(Date.now() / 1000) + seconds)
    .sign(secret);
}

async function ws(path: string, headers: Record<string, string> = {}): Promise<WsClient> {
  const client = await WsClient.connect(`${t.wsUrl}${path}`, { headers });
  clients.push(client);
  return client;
}

function send(client: WsClient, frame: unknown): void {
  client.socket.send(JSON.stringify(frame));
}

describe("route 9 with a signed client token", () => {
  it("opens an SSE stream with ?token= (EventSource sends no headers) on the channels the token allows, and refuses one it does not", async () => {
    const ok = await SseClient.open(`${t.url}/acme/realtime?token=${await token({ channels: ["room.1"] })}&channel=room.1`);
    clients.push(ok);
    expect((await ok.waitFor("ready")).subscriptions).toEqual([expect.objectContaining({ channel: "room.1" })]);
    await publish(t.url, "acme", "room.1", "hi");
    expect((await ok.waitForMessages(1)).map((m) => m.message)).toEqual(["hi"]);
    const refused = await SseClient.open(`${t.url}/acme/realtime?token=${await token({ channels: ["room.1"] })}&channel=secret`);
    clients.push(refused);
    expect(refused.status).toBe(403);
  });

  it("opens a WebSocket by Authorization header and by auth frame; subscribes within the claims (channels and patterns), refuses the rest with a frame", async () => {
    const jwt = await token({ channels: ["room.1"], patterns: ["user:ann:*"] });
    const byHeader = await ws("/acme/realtime", { Authorization: `Bearer ${jwt}` });
    const byFrame = await ws("/acme/realtime");
    send(byFrame, { type: "auth", token: jwt });
    for (const client of [byHeader, byFrame]) {
      await client.waitFor("ready");
      send(client, { type: "subscribe", ref: 1, channel: "room.1" });
      send(client, { type: "subscribe", ref: 2, channel: "user:ann:inbox" });
      send(client, { type: "subscribe", ref: 3, channel: "room.2" });
      send(client, { type: "subscribe", ref: 4, pattern: "user:*" });
      expect(await eventually(() => client.frames.filter((f) => f.ref !== undefined).length === 4)).toBe(true);
      const answers = Object.fromEntries(client.frames.filter((f) => f.ref !== undefined).map((f) => [f.ref, f.type === "error" ? f.error.code : f.type]));
      expect(answers).toEqual({ 1: "subscribed", 2: "subscribed", 3: "forbidden", 4: "forbidden" });
    }
    await publish(t.url, "acme", "user:ann:inbox", "mail");
    for (const client of [byHeader, byFrame]) expect((await client.waitForMessages(1)).map((m) => m.message)).toEqual(["mail"]);
  });

  it("refuses an expired, a tampered and an unknown-kid token with 401 and its code, before any stream starts", async () => {
    const expired = await token({ channels: ["room.1"] }, -5);
    const sse = await SseClient.open(`${t.url}/acme/realtime?token=${expired}`);
    clients.push(sse);
    expect([sse.status, JSON.parse(sse.body).error.code]).toEqual([401, "token_expired"]);
    const [header, , signature] = (await token({ channels: ["room.1"] })).split(".");
    const widened = Buffer.from(JSON.stringify({ sub: "ann", exp: Math.floor(Date.now() / 1000) + 60, channels: ["secret"] })).toString("base64url");
    const tampered = await fetch(`${t.url}/acme/realtime?token=${header}.${widened}.${signature}`);
    expect([tampered.status, ((await tampered.json()) as { error: { code: string } }).error.code]).toEqual([401, "invalid_token"]);
    const frame = await ws("/acme/realtime");
    send(frame, { type: "auth", token: await new SignJWT({ sub: "x" }).setProtectedHeader({ alg: "HS256", kid: "sk_nope" }).setExpirationTime("1m").sign(secret) });
    expect(await frame.waitForClose()).toBe(4401);
    expect(frame.frames.find((f) => f.type === "error")?.error.code).toBe("invalid_token");
  });

  it("ends a connection whose token runs out unrefreshed: an error frame token_expired, then 4401; SSE gets the error event and ends", async () => {
    const jwt = await token({ channels: ["room.1"] }, 2);
    const socket = await ws("/acme/realtime?channel=room.1", { Authorization: `Bearer ${jwt}` });
    await socket.waitFor("ready");
    const sse = await SseClient.open(`${t.url}/acme/realtime?token=${jwt}&channel=room.1`);
    clients.push(sse);
    await sse.waitFor("ready");
    expect(await socket.waitForClose(5000)).toBe(4401);
    expect(socket.frames.find((f) => f.type === "error")?.error.code).toBe("token_expired");
    expect((await sse.waitFor("error")).error.code).toBe("token_expired");
    expect(await eventually(() => sse.ended, 2000)).toBe(true);
  });

  it("refreshes on a live WebSocket: the connection outlives the first token with every subscription and message, and a narrower token ends what it no longer allows", async () => {
    const socket = await ws("/acme/realtime?channel=keep&channel=drop", { Authorization: `Bearer ${await token({ channels: ["keep", "drop"] }, 2)}` });
    await socket.waitFor("ready");
    await publish(t.url, "acme", "keep", 1);
    await socket.waitForMessages(1);
    send(socket, { type: "auth", ref: "r1", token: await token({ channels: ["keep"] }, 60) });
    expect(await eventually(() => socket.frames.some((f) => f.type === "ok" && f.ref === "r1"))).toBe(true);
    expect(socket.frames.filter((f) => f.type === "unsubscribed")).toEqual([{ type: "unsubscribed", channel: "drop", reason: "forbidden" }]);
    // Past the first token's expiry: still open, still receiving what the new one allows.
    await new Promise((r) => setTimeout(r, 2500));
    expect(socket.closeCode).toBeUndefined();
    await publish(t.url, "acme", "drop", "not any more");
    await publish(t.url, "acme", "keep", 2);
    expect((await socket.waitForMessages(2)).map((m) => m.message)).toEqual([1, 2]);
    // A refresh with a bad token is refused with a frame; the connection stays.
    send(socket, { type: "auth", ref: "r2", token: "not.a.token" });
    expect(await eventually(() => socket.frames.some((f) => f.ref === "r2"))).toBe(true);
    expect(socket.frames.find((f) => f.ref === "r2").error.code).toBe("invalid_token");
    expect(socket.closeCode).toBeUndefined();
  });

  it("refuses a refresh on a connection opened with an API key", async () => {
    const socket = await ws("/acme/realtime", { Authorization: `Bearer ${KEYS.acme}` });
    await socket.waitFor("ready");
    send(socket, { type: "auth", ref: 9, token: await token() });
    expect(await eventually(() => socket.frames.some((f) => f.ref === 9))).toBe(true);
    expect(socket.frames.find((f) => f.ref === 9).error.code).toBe("bad_request");
  });

  it("closes the connections a deleted signing key's tokens opened (4409 revoked), but not one refreshed onto another key, and refuses its tokens from then on", async () => {
    const other = await adminCall(t.url, "POST", "/admin/plates/acme/signing-keys", { body: {} });
    const otherKid = other.body.data.id as string;
    const otherSecret = Buffer.from(other.body.data.secret as string, "base64url");
    const byOther = (claims: Record<string, unknown>) =>
      new SignJWT({ sub: "ann", ...claims }).setProtectedHeader({ alg: "HS256", kid: otherKid }).setExpirationTime("1m").sign(otherSecret);
    const doomed = await ws("/acme/realtime", { Authorization: `Bearer ${await byOther({ channels: ["x"] })}` });
    const moved = await ws("/acme/realtime", { Authorization: `Bearer ${await byOther({ channels: ["x"] })}` });
    const untouched = await ws("/acme/realtime", { Authorization: `Bearer ${await token({ channels: ["x"] })}` });
    for (const c of [doomed, moved, untouched]) await c.waitFor("ready");
    send(moved, { type: "auth", ref: "m", token: await token({ channels: ["x"] }) });
    expect(await eventually(() => moved.frames.some((f) => f.ref === "m" && f.type === "ok"))).toBe(true);
    expect((await adminCall(t.url, "DELETE", `/admin/plates/acme/signing-keys/${otherKid}`)).status).toBe(204);
    expect(await doomed.waitForClose(3000)).toBe(4409);
    await new Promise((r) => setTimeout(r, 200));
    expect([moved.closeCode, untouched.closeCode]).toEqual([undefined, undefined]);
    const refused = await fetch(`${t.url}/acme/realtime?token=${await byOther({ channels: ["x"] })}`);
    expect([refused.status, ((await refused.json()) as { error: { code: string } }).error.code]).toEqual([401, "invalid_token"]);
  });

  it("changes an SSE stream opened with ?token= through route 9's POST with a token of the same user; refuses another user's and a topic neither allows", async () => {
    const jwt = await token({ channels: ["room.1", "room.2"] });
    const stream = await SseClient.open(`${t.url}/acme/realtime?token=${jwt}&channel=room.1`);
    clients.push(stream);
    const { clientId } = await stream.waitFor("ready");
    const change = async (credential: string, body: unknown) => {
      const res = await fetch(`${t.url}/acme/realtime/${clientId}`, {
        method: "POST",
        headers: { Authorization: `Bearer ${credential}`, "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      return { status: res.status, body: (await res.json()) as any };
    };
    // A fresh token of the same user works (a client refreshing its token changes with the new one).
    const ok = await change(await token({ channels: ["room.1", "room.2"] }), { subscribe: [{ channel: "room.2" }], unsubscribe: [{ channel: "room.1" }] });
    expect([ok.status, ok.body.data.subscriptions.map((s: { channel: string }) => s.channel)]).toEqual([200, ["room.2"]]);
    const bob = await new SignJWT({ sub: "bob", channels: ["room.1", "room.2"] }).setProtectedHeader({ alg: "HS256", kid }).setExpirationTime("1m").sign(secret);
    expect((await change(bob, { subscribe: [{ channel: "room.1" }] })).body.error.code).toBe("forbidden");
    expect((await change(await token({ channels: ["room.3"] }), { subscribe: [{ channel: "room.3" }] })).body.error.code).toBe("forbidden");
    expect((await change(await token({ channels: ["secret"] }), { subscribe: [{ channel: "other" }] })).status).toBe(403);
    await publish(t.url, "acme", "room.1", "gone");
    await publish(t.url, "acme", "room.2", "here");
    expect((await stream.waitForMessages(1)).map((m) => m.message)).toEqual(["here"]);
  });
});
