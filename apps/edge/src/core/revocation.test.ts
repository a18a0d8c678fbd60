import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { adminCall } from "../test-support/admin.js";
import { KEYS, publish, startTestNode } from "../test-support/node.js";
import type { TestNode } from "../test-support/node.js";
import { SseClient } from "../test-support/sse.js";
import { WsClient } from "../test-support/ws.js";

/** The spec: "takes effect on every node within a second". */
const REVOCATION_DEADLINE_MS = 1000;

/** Creates a plate; answers the secret of its first key. */
async function createPlate(base: string, id: string): Promise<string> {
  const res = await adminCall(base, "POST", "/admin/plates", { body: { id } });
  expect(res.status).toBe(201);
  return res.body.data.key.secret;
}

/** Creates a key of every scope on `plate`; answers its id and secret. */
async function createKey(base: string, plate: string): Promise<{ id: string; secret: string }> {
  const res = await adminCall(base, "POST", `/admin/plates/${plate}/keys`, { body: { name: "test" } });
  expect(res.status).toBe(201);
  return res.body.data;
}

/** The subscribers a test opens with one key: a WebSocket (header auth), a WebSocket (frame auth), SSE, and SSE through a client token the key minted. */
interface Subscribers {
  readonly wsHeader: WsClient;
  readonly wsFrame: WsClient;
  readonly sse: SseClient;
  readonly sseToken: SseClient;
}

describe("revoking keys and deleting plates closes their connections (4409)", () => {
  let t: TestNode;
  const open: { close(): void }[] = [];

  async function subscribeAll(plate: string, channel: string, secret: string): Promise<Subscribers> {
    const auth = { Authorization: `Bearer ${secret}` };
    const wsHeader = await WsClient.connect(`${t.wsUrl}/${plate}/pubsub/${channel}/ws`, { headers: auth });
    open.push(wsHeader);
    const wsFrame = await WsClient.connect(`${t.wsUrl}/${plate}/pubsub/${channel}/ws`, { auth: secret });
    open.push(wsFrame);
    const sse = await SseClient.open(`${t.url}/${plate}/pubsub/${channel}/subscribe`, auth);
    open.push(sse);
    const minted = await fetch(`${t.url}/${plate}/pubsub/${channel}/client`, { headers: auth });
    expect(minted.status).toBe(200);
    const { path } = ((await minted.json()) as any).data;
    const sseToken = await SseClient.open(`${t.url}${path}`);
    open.push(sseToken);
    await Promise.all([
      wsHeader.waitFor("ready"),
      wsFrame.waitFor("ready"),
      sse.waitFor("ready"),
      sseToken.waitFor("ready"),
    ]);
    return { wsHeader, wsFrame, sse, sseToken };
  }

  /** Checks that every subscriber was closed as revoked (4409 / `event: error` + end) within the spec's second of `since`. */
  async function expectRevoked(subs: Subscribers, since: number): Promise<void> {
    const [headerCode, frameCode, sseEnded, tokenEnded] = await Promise.all([
      subs.wsHeader.waitForClose(REVOCATION_DEADLINE_MS),
      subs.wsFrame.waitForClose(REVOCATION_DEADLINE_MS),
      subs.sse.waitForEnd(REVOCATION_DEADLINE_MS),
      subs.sseToken.waitForEnd(REVOCATION_DEADLINE_MS),
    ]);
    expect(Date.now() - since).toBeLessThanOrEqual(REVOCATION_DEADLINE_MS + 100);
    for (const [ws, code] of [
      [subs.wsHeader, headerCode],
      [subs.wsFrame, frameCode],
    ] as const) {
      expect(code).toBe(4409);
      expect(ws.closeReason).toBe("revoked");
      expect(ws.frames.find((f) => f.type === "error")?.error.code).toBe("revoked");
    }
    for (const [sse, ended] of [
      [subs.sse, sseEnded],
      [subs.sseToken, tokenEnded],
    ] as const) {
      expect(ended).toBe(true);
      const error = sse.events.find((e) => e.event === "error");
      expect(error).toBeDefined();
      expect(JSON.parse(error!.data).error.code).toBe("revoked");
    }
  }

  /** Checks that every subscriber is still open and receives the next message published on `channel`. */
  async function expectStillReceiving(
    subs: Subscribers,
    plate: string,
    channel: string,
    secret: string,
    text: string,
  ): Promise<void> {
    const { status, body } = await publish(t.url, plate, channel, { text }, secret);
    expect(status).toBe(200);
    for (const client of [subs.wsHeader, subs.wsFrame, subs.sse, subs.sseToken]) {
      const messages = await client.waitForMessages(1, 2000);
      expect(messages.map((m) => m.id)).toContain(body.data.id);
      expect(messages.find((m) => m.id === body.data.id)?.message).toEqual({ text });
    }
    for (const ws of [subs.wsHeader, subs.wsFrame]) expect(ws.closeCode).toBeUndefined();
    for (const sse of [subs.sse, subs.sseToken]) expect(sse.ended).toBe(false);
  }

  beforeAll(async () => {
    t = await startTestNode({ HEARTBEAT_MS: "60000" });
  });
  afterEach(() => {
    for (const client of open.splice(0)) client.close();
  });
  afterAll(() => t.cleanup());

  it("closes every connection of a revoked key within a second, and leaves another key's connections of the same plate open and receiving", async () => {
    await createPlate(t.url, "revplate");
    const doomed = await createKey(t.url, "revplate");
    const kept = await createKey(t.url, "revplate");
    const doomedSubs = await subscribeAll("revplate", "alerts", doomed.secret);
    const keptSubs = await subscribeAll("revplate", "alerts", kept.secret);

    const started = Date.now();
    const res = await adminCall(t.url, "DELETE", `/admin/plates/revplate/keys/${doomed.id}`);
    expect(res.status).toBe(204);
    await expectRevoked(doomedSubs, started);

    await expectStillReceiving(keptSubs, "revplate", "alerts", kept.secret, "after revoke");
    // The revoked key's subscribers got nothing after their close.
    expect(doomedSubs.sse.messages).toEqual([]);
    expect(doomedSubs.wsHeader.messages).toEqual([]);
  });

  it("refuses new subscriptions with a revoked key", async () => {
    await createPlate(t.url, "revnew");
    const key = await createKey(t.url, "revnew");
    expect((await adminCall(t.url, "DELETE", `/admin/plates/revnew/keys/${key.id}`)).status).toBe(204);
    const sse = await SseClient.open(`${t.url}/revnew/pubsub/alerts/subscribe`, {
      Authorization: `Bearer ${key.secret}`,
    });
    open.push(sse);
    expect(sse.status).toBe(401);
    expect(JSON.parse(sse.body).error.code).toBe("invalid_api_key");
    const ws = await WsClient.connect(`${t.wsUrl}/revnew/pubsub/alerts/ws`, { auth: key.secret });
    open.push(ws);
    expect(await ws.waitForClose(2000)).toBe(4401);
  });

  it("closes every connection of a deleted plate within a second, and leaves another plate's connections open and receiving", async () => {
    const goneSecret = await createPlate(t.url, "goneplate");
    const goneExtra = await createKey(t.url, "goneplate");
    const stayingSecret = await createPlate(t.url, "stayplate");
    const goneFirst = await subscribeAll("goneplate", "alerts", goneSecret);
    const goneSecond = await subscribeAll("goneplate", "other:channel", goneExtra.secret);
    // Same channel name on the other plate: plates never share channels, nor revocations.
    const staying = await subscribeAll("stayplate", "alerts", stayingSecret);

    const started = Date.now();
    const res = await adminCall(t.url, "DELETE", "/admin/plates/goneplate");
    expect(res.status).toBe(204);
    await Promise.all([expectRevoked(goneFirst, started), expectRevoked(goneSecond, started)]);

    await expectStillReceiving(staying, "stayplate", "alerts", stayingSecret, "after delete");
  });

  it("leaves the bootstrapped plates' connections alone when another plate is deleted", async () => {
    const sse = await SseClient.open(`${t.url}/acme/pubsub/alerts/subscribe`, { Authorization: `Bearer ${KEYS.acme}` });
    open.push(sse);
    await sse.waitFor("ready");
    await createPlate(t.url, "shortlived");
    expect((await adminCall(t.url, "DELETE", "/admin/plates/shortlived")).status).toBe(204);
    const { body } = await publish(t.url, "acme", "alerts", "still here");
    const messages = await sse.waitForMessages(1, 2000);
    expect(messages.map((m) => m.id)).toEqual([body.data.id]);
    expect(sse.ended).toBe(false);
  });
});
