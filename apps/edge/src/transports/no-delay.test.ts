import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KEYS, publish, startTestNode } from "../test-support/node.js";
import type { TestNode } from "../test-support/node.js";
import { SseClient } from "../test-support/sse.js";
import { WsClient } from "../test-support/ws.js";

const AUTH = { Authorization: `Bearer ${KEYS.acme}` };
/** Publishes one after another: each follows the last within a round trip, which Nagle holds. */
const MESSAGES = 300;
/**
 * The longest a held write may wait: the client's delayed ACK (40 ms minimum on Linux, 200 ms at
 * most), with room for a loaded CI machine.
 */
const HELD_AT_MOST_MS = 1000;

describe("subscriber sockets with SUBSCRIBER_NO_DELAY=false (Nagle's algorithm)", () => {
  let t: TestNode;
  beforeAll(async () => {
    t = await startTestNode({ SUBSCRIBER_NO_DELAY: "false" });
  });
  afterAll(() => t.cleanup());

  it("still delivers every message to SSE and WebSocket subscribers, in order, and the last soon after its publish", async () => {
    const sse = await SseClient.open(`${t.url}/acme/pubsub/nagle/subscribe`, AUTH);
    const ws = await WsClient.connect(`${t.wsUrl}/acme/pubsub/nagle/ws`, { headers: AUTH });
    await sse.waitFor("ready");
    await ws.waitFor("ready");
    const ids: string[] = [];
    for (let i = 0; i < MESSAGES; i++) {
      const answer = await publish(t.url, "acme", "nagle", { i });
      expect(answer.status).toBe(200);
      ids.push(answer.body.data.id);
    }
    const lastPublished = Date.now();
    const [bySse, byWs] = await Promise.all([sse.waitForMessages(MESSAGES, HELD_AT_MOST_MS), ws.waitForMessages(MESSAGES, HELD_AT_MOST_MS)]);
    expect(Date.now() - lastPublished).toBeLessThan(HELD_AT_MOST_MS);
    expect(bySse.map((m) => m.message.i)).toEqual(ids.map((_, i) => i));
    expect(byWs.map((m) => m.message.i)).toEqual(ids.map((_, i) => i));
    expect(byWs.map((m) => m.id)).toEqual(ids);
    sse.close();
    ws.close();
  });
});
