import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KEYS, publish, startTestNode } from "../test-support/node.js";
import type { TestNode } from "../test-support/node.js";
import { SseClient } from "../test-support/sse.js";
import { WsClient } from "../test-support/ws.js";

describe("publish (route 1 and its legacy alias 6)", () => {
  let t: TestNode;
  beforeAll(async () => {
    t = await startTestNode({ MAX_MESSAGE_BYTES: "65536" });
  });
  afterAll(() => t.cleanup());

  it("answers the id, channel and timestamp once the message is accepted, and a subscriber gets the envelope", async () => {
    const sub = await SseClient.open(`${t.url}/acme/pubsub/alerts/subscribe`, { Authorization: `Bearer ${KEYS.acme}` });
    await sub.waitFor("ready");
    const { status, body } = await publish(t.url, "acme", "alerts", { text: "hi", n: [1, 2] });
    expect(status).toBe(200);
    expect(body.data).toMatchObject({ channel: "alerts" });
    expect(typeof body.data.id).toBe("string");
    expect(new Date(body.data.timestamp).toISOString()).toBe(body.data.timestamp);
    const [envelope] = await sub.waitForMessages(1);
    expect(envelope).toEqual({
      type: "message",
      id: body.data.id,
      channel: "alerts",
      message: { text: "hi", n: [1, 2] },
      timestamp: body.data.timestamp,
    });
    sub.close();
  });

  it("carries a named event in the envelope to SSE and WebSocket subscribers, and in what a resume replays", async () => {
    const sse = await SseClient.open(`${t.url}/acme/pubsub/typing/subscribe`, { Authorization: `Bearer ${KEYS.acme}` });
    const ws = await WsClient.connect(`${t.wsUrl}/acme/pubsub/typing/ws`, { auth: KEYS.acme });
    await sse.waitFor("ready");
    await ws.waitFor("ready");
    try {
      const first = await publish(t.url, "acme", "typing", "no event");
      const res = await fetch(`${t.url}/acme/pubsub/typing/publish`, {
        method: "POST",
        headers: { Authorization: `Bearer ${KEYS.acme}`, "Content-Type": "application/json" },
        body: JSON.stringify({ message: { user: "ann" }, event: "typing.start" }),
      });
      expect(res.status).toBe(200);
      const id = ((await res.json()) as { data: { id: string } }).data.id;
      for (const got of [await sse.waitForMessages(2), await ws.waitForMessages(2)]) {
        expect(got[0]).not.toHaveProperty("event");
        expect(got[1]).toEqual({ type: "message", id, channel: "typing", event: "typing.start", message: { user: "ann" }, timestamp: got[1].timestamp });
      }
      const resumed = await SseClient.open(`${t.url}/acme/pubsub/typing/subscribe`, { Authorization: `Bearer ${KEYS.acme}`, "Last-Event-ID": first.body.data.id });
      try {
        expect((await resumed.waitForMessages(1))[0]).toMatchObject({ id, event: "typing.start" });
      } finally {
        resumed.close();
      }
    } finally {
      sse.close();
      ws.close();
    }
  });

  it("refuses an event that is not a name with 400 invalid_parameter, and publishes nothing", async () => {
    for (const event of ["", "no spaces", 7, null, "x".repeat(201)]) {
      const res = await fetch(`${t.url}/acme/pubsub/typing/publish`, {
        method: "POST",
        headers: { Authorization: `Bearer ${KEYS.acme}`, "Content-Type": "application/json" },
        body: JSON.stringify({ message: 1, event }),
      });
      expect(res.status).toBe(400);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe("invalid_parameter");
    }
  });

  it("accepts the key without the Bearer prefix, on the legacy path too", async () => {
    const res = await fetch(`${t.url}/acme/publish/alerts`, {
      method: "POST",
      headers: { Authorization: KEYS.acme, "Content-Type": "application/json" },
      body: '{"message": null}',
    });
    expect(res.status).toBe(200);
  });

  it("refuses a body over MAX_MESSAGE_BYTES with 413 payload_too_large", async () => {
    const res = await fetch(`${t.url}/acme/pubsub/alerts/publish`, {
      method: "POST",
      headers: { Authorization: KEYS.acme, "Content-Type": "application/json" },
      body: JSON.stringify({ message: "x".repeat(65536) }),
    });
    expect(res.status).toBe(413);
    expect(((await res.json()) as any).error.code).toBe("payload_too_large");
  });
});
