import { Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it, onTestFinished, vi } from "vitest";
import { call } from "../test-support/calls.js";
import { KEYS, publish, startTestNode } from "../test-support/node.js";
import type { TestNode } from "../test-support/node.js";
import { SseClient } from "../test-support/sse.js";
import { WsClient } from "../test-support/ws.js";
import { SubscriberNoDelay } from "./no-delay.js";

const AUTH = { Authorization: `Bearer ${KEYS.acme}` };
/** Publishes one after another: each follows the last within a round trip, which Nagle holds. */
const MESSAGES = 300;
/**
 * The longest a held write may wait: the client's delayed ACK (40 ms minimum on Linux, 200 ms at
 * most), with room for a loaded CI machine.
 */
const HELD_AT_MOST_MS = 1000;
/** How long `auto` may take to see the load change: it reads it every 100 ms, and goes back after a quiet second. */
const SWITCH_WITHIN_MS = 10_000;

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

describe("SubscriberNoDelay, the switch of SUBSCRIBER_NO_DELAY=auto", () => {
  it("turns Nagle on when two readings average the set share, and off again when ten average a quarter of it", () => {
    const loads = [
      // One busy reading alone (a pause) switches nothing; two that average the bound do.
      0.5, 0.9, 0.6, 0.8, 0.8,
      // 0.33 after it: the same traffic with Nagle (W1 went from 85% to 33%). Ten readings that
      // average a quarter of the bound (0.198), one much busier among them: off.
      0.33, 0.15, 0.15, 0.15, 0.45, 0.15, 0.15, 0.15, 0.15, 0.15,
      // Busy again: a busy reading and a lighter one average less than the bound; two busy ones do not.
      0.95, 0.5, 0.95, 0.95,
    ];
    const switches: [boolean, number, number][] = [];
    let reading = 0;
    const sw = new SubscriberNoDelay("auto", 0.8, (noDelay, load) => switches.push([noDelay, Math.round(load * 1000) / 1000, reading]), () => loads[reading - 1]!);
    try {
      const seen: boolean[] = [];
      while (reading < loads.length) {
        reading += 1;
        sw.sample();
        seen.push(sw.noDelay);
      }
      expect(switches).toEqual([
        [false, 0.8, 5],
        [true, 0.198, 15],
        [false, 0.95, 19],
      ]);
      expect(seen.filter((noDelay) => !noDelay)).toHaveLength(15 - 5 + 1);
    } finally {
      sw.close();
    }
  });

  it("never switches when set to true or false", () => {
    for (const mode of [true, false]) {
      const sw = new SubscriberNoDelay(mode, 0.1, () => expect.fail("switched"), () => 1);
      sw.sample();
      sw.sample();
      expect(sw.noDelay).toBe(mode);
      sw.close();
    }
  });
});

/** What the node's `plate_subscriber_no_delay` gauge reads now. */
async function noDelayGauge(t: TestNode): Promise<number> {
  const text = (await call(t.url, "GET", "/metrics")).text;
  return Number(/^plate_subscriber_no_delay (\d)$/m.exec(text)?.[1]);
}

describe("subscriber sockets with SUBSCRIBER_NO_DELAY=auto", () => {
  let t: TestNode;
  beforeAll(async () => {
    // The test's clients share the node's event loop: publishing back to back keeps it busy well
    // past this; idle but for the test's reads of /metrics, it stays well under a quarter of it.
    t = await startTestNode({ SUBSCRIBER_NO_DELAY: "auto", SUBSCRIBER_NAGLE_LOAD_PERCENT: "30" });
  });
  afterAll(() => t.cleanup());

  it("holds small writes while the node is busy and sends at once when it is idle again, delivering every message in order", async () => {
    expect(await noDelayGauge(t)).toBe(1);
    // Which sockets had TCP_NODELAY set, to what, in order (the node's and the clients').
    const set: [Socket, boolean | undefined][] = [];
    const original = Object.getOwnPropertyDescriptor(Socket.prototype, "setNoDelay")!.value as (this: Socket, noDelay?: boolean) => Socket;
    const spy = vi.spyOn(Socket.prototype, "setNoDelay").mockImplementation(function (this: Socket, noDelay?: boolean) {
      set.push([this, noDelay]);
      return original.call(this, noDelay);
    });
    onTestFinished(() => spy.mockRestore());
    const sse = await SseClient.open(`${t.url}/acme/pubsub/auto/subscribe`, AUTH);
    const ws = await WsClient.connect(`${t.wsUrl}/acme/pubsub/auto/ws`, { headers: AUTH });
    await sse.waitFor("ready");
    await ws.waitFor("ready");
    // Publishes back to back until the node has switched, and a few hundred more under Nagle.
    const ids: string[] = [];
    let switchedAt = -1;
    const deadline = Date.now() + SWITCH_WITHIN_MS;
    while (switchedAt < 0 || ids.length < switchedAt + MESSAGES) {
      const answer = await publish(t.url, "acme", "auto", { i: ids.length });
      expect(answer.status).toBe(200);
      ids.push(answer.body.data.id);
      if (switchedAt < 0 && ids.length % 50 === 0 && (await noDelayGauge(t)) === 0) switchedAt = ids.length;
      if (switchedAt < 0) expect(Date.now()).toBeLessThan(deadline);
    }
    const lastPublished = Date.now();
    const [bySse, byWs] = await Promise.all([sse.waitForMessages(ids.length, HELD_AT_MOST_MS), ws.waitForMessages(ids.length, HELD_AT_MOST_MS)]);
    expect(Date.now() - lastPublished).toBeLessThan(HELD_AT_MOST_MS);
    expect(bySse.map((m) => m.message.i)).toEqual(ids.map((_, i) => i));
    expect(byWs.map((m) => m.id)).toEqual(ids);
    // Idle, the node sends at once again.
    const idleFrom = Date.now();
    while ((await noDelayGauge(t)) !== 1) {
      expect(Date.now() - idleFrom).toBeLessThan(SWITCH_WITHIN_MS);
      // Not `eventually`: reading /metrics every 10 ms would itself keep the node busy.
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    const answer = await publish(t.url, "acme", "auto", { i: ids.length });
    expect(answer.status).toBe(200);
    expect((await ws.waitForMessages(ids.length + 1, HELD_AT_MOST_MS)).at(-1)!.id).toBe(answer.body.data.id);
    await sse.waitForMessages(ids.length + 1, HELD_AT_MOST_MS);
    // The node turned Nagle on for both subscriber sockets when it got busy, and off again at
    // their first message once idle.
    const held = set.flatMap(([socket, noDelay], i) => (noDelay === false ? [{ socket, i }] : []));
    expect(held).toHaveLength(2);
    for (const { socket, i } of held) expect(set.findIndex(([other, noDelay], j) => other === socket && noDelay === true && j > i)).toBeGreaterThan(i);
    sse.close();
    ws.close();
  });
});
