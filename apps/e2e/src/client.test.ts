import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WebSocket } from "ws";
import type { ErrorCode as ServerErrorCode } from "@plate/protocol";
import { eventually, freePort, startRedis } from "@plate/testing";
import type { RedisServer } from "@plate/testing";
import { PlateClient, PlateClientError, subscribePath } from "@plate/client";
import type { Envelope, ErrorCode, Reset, SubscriptionState, Unsubscribe } from "@plate/client";

import { KEYS, startNode } from "./support.js";
import type { Node } from "./support.js";

// The client's copy of the error codes is the server's set, no more and no less (a type check).
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const sameCodes: Same<ErrorCode, ServerErrorCode> = true;

/** Collects what a subscription hands over. */
class Seen<T = unknown> {
  readonly messages: Envelope<T>[] = [];
  readonly errors: PlateClientError[] = [];
  readonly resets: Reset[] = [];
  readonly states: SubscriptionState[] = [];
  readies = 0;
  readonly handler = (envelope: Envelope<T>) => void this.messages.push(envelope);
  readonly options = {
    onReady: () => void (this.readies += 1),
    onError: (error: PlateClientError) => void this.errors.push(error),
    onReset: (reset: Reset) => void this.resets.push(reset),
    onStateChange: (state: SubscriptionState) => void this.states.push(state),
    reconnect: { initialDelayMs: 50, maxDelayMs: 200 },
  };
}

let node: Node;
let plate: PlateClient;
let channels = 0;
const channel = () => `client-${++channels}`;
const stops: Unsubscribe[] = [];

beforeAll(async () => {
  node = await startNode();
  plate = new PlateClient({ url: node.url, plate: "acme", key: KEYS.acme, WebSocket });
});
afterAll(async () => {
  for (const stop of stops) stop();
  await node?.stop();
});

describe.each(["sse", "ws"] as const)("subscribing over %s", (transport) => {
  it("hands over published messages as typed envelopes, in order, and stops at unsubscribe", async () => {
    const ch = channel();
    const seen = new Seen<{ n: number }>();
    const stop = plate.subscribe(ch, seen.handler, { ...seen.options, transport });
    expect(await eventually(() => seen.readies === 1)).toBe(true);
    const published = [];
    for (let n = 0; n < 5; n++) published.push(await plate.publish(ch, { n }));
    expect(await eventually(() => seen.messages.length === 5)).toBe(true);
    expect(seen.messages.map((m) => [m.type, m.id, m.channel, m.message.n])).toEqual(published.map((p, n) => ["message", p.id, ch, n]));
    expect(seen.states).toEqual(["connecting", "open"]);
    stop();
    await plate.publish(ch, { n: 5 });
    await new Promise((r) => setTimeout(r, 200));
    expect(seen.messages).toHaveLength(5);
    expect(seen.states.at(-1)).toBe("closed");
  });

  it("subscribes to a pattern and tells the concrete channel", async () => {
    const seen = new Seen();
    stops.push(plate.subscribe(`room.${transport}.?`, seen.handler, { ...seen.options, transport, pattern: true }));
    expect(await eventually(() => seen.readies === 1)).toBe(true);
    await plate.publish(`room.${transport}.a`, "hi");
    await plate.publish(`room.${transport}.ab`, "not matched");
    await plate.publish(`room.${transport}.b`, "there");
    expect(await eventually(() => seen.messages.length === 2)).toBe(true);
    expect(seen.messages.map((m) => m.channel)).toEqual([`room.${transport}.a`, `room.${transport}.b`]);
  });

  it("reports a bad key as a final invalid_api_key and does not retry", async () => {
    const seen = new Seen();
    const wrong = new PlateClient({ url: node.url, plate: "acme", key: "not-the-key-0123456789abcdef", WebSocket });
    wrong.subscribe(channel(), seen.handler, { ...seen.options, transport });
    expect(await eventually(() => seen.states.includes("closed"))).toBe(true);
    await new Promise((r) => setTimeout(r, 300));
    expect(seen.errors.map((e) => [e.code, e.retryable])).toEqual([["invalid_api_key", false]]);
  });

  it("tells a resume it cannot honour with onReset, then goes live", async () => {
    const ch = channel();
    const seen = new Seen();
    stops.push(plate.subscribe(ch, seen.handler, { ...seen.options, transport, since: "zzzzzzzz_1-0" }));
    // The reset follows the ready as its own frame, which may come up in a later read.
    expect(await eventually(() => seen.readies === 1 && seen.resets.length > 0)).toBe(true);
    expect(seen.resets.map((r) => r.reason)).toEqual(["epoch"]);
    await plate.publish(ch, "live");
    expect(await eventually(() => seen.messages.length === 1)).toBe(true);
  });

  it("subscribes with a client path and no key, and a used-up single-use path is a final exhausted_client_socket", async () => {
    const ch = channel();
    const path = await plate.clientPath(ch);
    expect(path.maxUses).toBe(1);
    const first = new Seen();
    stops.push(subscribePath(path.path, first.handler, { ...first.options, transport, base: node.url, WebSocket }));
    expect(await eventually(() => first.readies === 1)).toBe(true);
    await plate.publish(ch, "for the browser");
    expect(await eventually(() => first.messages.length === 1)).toBe(true);

    const second = new Seen();
    subscribePath(path.url, second.handler, { ...second.options, transport, WebSocket });
    expect(await eventually(() => second.states.includes("closed"))).toBe(true);
    expect(second.errors.map((e) => [e.code, e.retryable])).toEqual([["exhausted_client_socket", false]]);
  });

  it("asks for a fresh path before every connect and resumes across max_dur without losing a message", async () => {
    const ch = channel();
    let minted = 0;
    const seen = new Seen<number>();
    stops.push(
      subscribePath(
        async () => {
          minted += 1;
          return (await plate.clientPath(ch, { maxDurationMs: 300 })).path;
        },
        seen.handler,
        { ...seen.options, transport, base: node.url, WebSocket },
      ),
    );
    expect(await eventually(() => seen.readies === 1)).toBe(true);
    for (let n = 0; n < 40; n++) {
      await plate.publish(ch, n);
      await new Promise((r) => setTimeout(r, 25));
    }
    expect(await eventually(() => seen.messages.length >= 40)).toBe(true);
    expect(seen.messages.map((m) => m.message)).toEqual(Array.from({ length: 40 }, (_, n) => n));
    expect(minted).toBeGreaterThanOrEqual(3);
    expect(seen.errors.every((e) => e.code === "max_duration_reached" && e.retryable)).toBe(true);
    expect(seen.resets).toEqual([]);
  });
});

describe("publishing", () => {
  it("answers the message's id and time, and the same id for a retry with the same Idempotency-Key", async () => {
    const ch = channel();
    const first = await plate.publish(ch, { order: 1 }, { idempotencyKey: "order-1" });
    expect(first.channel).toBe(ch);
    expect(Date.parse(first.timestamp)).toBeGreaterThan(0);
    expect((await plate.publish(ch, { order: 1 }, { idempotencyKey: "order-1" })).id).toBe(first.id);
  });

  it("throws PlateClientError with the spec's code and status", async () => {
    const wrong = new PlateClient({ url: node.url, plate: "acme", key: "not-the-key-0123456789abcdef" });
    const refused = await wrong.publish("alerts", 1).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(PlateClientError);
    expect([(refused as PlateClientError).code, (refused as PlateClientError).details.status]).toEqual(["invalid_api_key", 401]);
    const big = await plate.publish("alerts", "x".repeat(70_000)).catch((e: PlateClientError) => [e.code, e.details.status]);
    expect(big).toEqual(["payload_too_large", 413]);
    const bad = await plate.publish("no spaces", 1).catch((e: PlateClientError) => [e.code, e.details.status]);
    expect(bad).toEqual(["invalid_channel", 400]);
  });

  it("throws network_error when nothing answers", async () => {
    const nowhere = new PlateClient({ url: `http://127.0.0.1:${await freePort()}`, plate: "acme", key: KEYS.acme });
    const err = await nowhere.publish("alerts", 1).catch((e: PlateClientError) => [e.code, e.retryable]);
    expect(err).toEqual(["network_error", true]);
  });

  it("knows exactly the server's error codes (checked when the tests are type-checked)", () => {
    expect(sameCodes).toBe(true);
  });
});

describe("reconnecting on Redis", () => {
  let redis: RedisServer;
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    await redis?.stop();
  });

  it.each(["sse", "ws"] as const)("over %s, comes back after its node restarts and gets what was published meanwhile, once", async (transport) => {
    const port = await freePort();
    const env = { REDIS_URL: redis.url, PORT: String(port) };
    let subscribed = await startNode(env);
    const other = await startNode({ REDIS_URL: redis.url });
    try {
      const ch = channel();
      const seen = new Seen<number>();
      const client = new PlateClient({ url: subscribed.url, plate: "acme", key: KEYS.acme, WebSocket });
      const via = new PlateClient({ url: other.url, plate: "acme", key: KEYS.acme });
      stops.push(client.subscribe(ch, seen.handler, { ...seen.options, transport }));
      expect(await eventually(() => seen.readies === 1)).toBe(true);
      for (let n = 0; n < 3; n++) await via.publish(ch, n);
      expect(await eventually(() => seen.messages.length === 3)).toBe(true);
      await subscribed.stop();
      expect(await eventually(() => seen.states.at(-1) === "reconnecting")).toBe(true);
      for (let n = 3; n < 6; n++) await via.publish(ch, n);
      subscribed = await startNode(env);
      expect(await eventually(() => seen.messages.length >= 6, 5000)).toBe(true);
      for (let n = 6; n < 8; n++) await via.publish(ch, n);
      expect(await eventually(() => seen.messages.length >= 8)).toBe(true);
      await new Promise((r) => setTimeout(r, 100));
      expect(seen.messages.map((m) => m.message)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
      expect(seen.resets).toEqual([]);
      expect(seen.readies).toBe(2);
      expect(seen.errors[0]?.code).toBe("shutting_down");
    } finally {
      await subscribed.stop();
      await other.stop();
    }
  });

  it("after a reset, resumes from where that connection started, not from the id it could not honour", async () => {
    const env = { REDIS_URL: redis.url, PORT: String(await freePort()) };
    let subscribed = await startNode(env);
    try {
      const ch = channel();
      const seen = new Seen<number>();
      const client = new PlateClient({ url: subscribed.url, plate: "acme", key: KEYS.acme });
      stops.push(client.subscribe(ch, seen.handler, { ...seen.options, since: "zzzzzzzz_1-0" }));
      expect(await eventually(() => seen.readies === 1)).toBe(true);
      expect(seen.resets.map((r) => r.reason)).toEqual(["epoch"]);
      await subscribed.stop();
      subscribed = await startNode(env);
      expect(await eventually(() => seen.readies === 2, 5000)).toBe(true);
      await client.publish(ch, 1);
      expect(await eventually(() => seen.messages.length === 1)).toBe(true);
      expect(seen.resets).toHaveLength(1);
    } finally {
      await subscribed.stop();
    }
  });
});
