import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KEYS, publish, startTestNode } from "../test-support/node.js";
import type { TestNode } from "../test-support/node.js";
import { SseClient } from "../test-support/sse.js";

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
