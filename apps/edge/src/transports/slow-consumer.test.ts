import { request } from "node:http";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { call, sleep } from "../test-support/calls.js";
import { KEYS, eventually, publish, startTestNode } from "../test-support/node.js";
import type { TestNode } from "../test-support/node.js";
import { SseClient } from "../test-support/sse.js";
import { WsClient } from "../test-support/ws.js";

const AUTH = { Authorization: `Bearer ${KEYS.acme}` };
/** Most publishes a drop may take; at 2 KB each that is 40 MB, far past any socket buffer. */
const MAX_PUBLISHES = 20_000;
/** A ~2 KB message. */
const PAYLOAD = "x".repeat(2000);

/**
 * The garbage collector, to measure memory after it ran: `global.gc` when Node runs with
 * --expose-gc, else the same function exposed at run time (V8 allows turning the flag on late).
 */
function collector(): (() => void) | undefined {
  const exposed = (globalThis as { gc?: () => void }).gc;
  if (typeof exposed === "function") return exposed;
  try {
    setFlagsFromString("--expose-gc");
    const gc = runInNewContext("gc") as unknown;
    return typeof gc === "function" ? (gc as () => void) : undefined;
  } catch {
    return undefined;
  }
}

/** The value of `plate_connections_dropped_total{reason="slow_consumer"}` in /metrics, or 0. */
async function slowConsumerDrops(base: string): Promise<number> {
  const res = await call(base, "GET", "/metrics");
  expect(res.status).toBe(200);
  const line = res.text
    .split("\n")
    .find((l) => l.startsWith('plate_connections_dropped_total{reason="slow_consumer"}'));
  return line === undefined ? 0 : Number(line.split(" ").pop());
}

/** A raw SSE request that can stop reading and read again (SseClient cannot resume). */
function openPausable(url: string) {
  return new Promise<{ text: string; ended: boolean; pause(): void; resume(): void; close(): void }>(
    (resolve, reject) => {
      const req = request(url, { headers: { ...AUTH, Accept: "text/event-stream" } }, (res) => {
        const state = {
          text: "",
          ended: false,
          pause: () => {
            res.pause();
            res.socket.pause();
          },
          resume: () => {
            res.socket.resume();
            res.resume();
          },
          close: () => req.destroy(),
        };
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => (state.text += chunk));
        for (const event of ["end", "close", "error", "aborted"]) res.on(event, () => (state.ended = true));
        resolve(state);
      });
      req.on("error", reject);
      req.end();
    },
  );
}

/**
 * Publishes ~2 KB messages on `channel`, one at a time, until the node holds `remaining`
 * connections (the slow one was dropped) or `MAX_PUBLISHES` pass. Answers how many were published.
 */
async function publishUntilDropped(t: TestNode, channel: string, remaining: number): Promise<number> {
  let sent = 0;
  while (t.node.services.connections.size > remaining && sent < MAX_PUBLISHES) {
    const res = await publish(t.url, "acme", channel, { i: sent, pad: PAYLOAD });
    expect(res.status).toBe(200);
    sent += 1;
  }
  return sent;
}

// With the addon's own send(2) (the default) and through Node's stream: the limit counts the same bytes either way.
describe.each(["true", "false"])("slow consumers (SLOW_CONSUMER_MAX_BYTES=65536, SLOW_CONSUMER_GRACE_MS=200, SUBSCRIBER_DIRECT_SEND=%s)", (direct) => {
  let t: TestNode;
  beforeAll(async () => {
    t = await startTestNode({ SLOW_CONSUMER_MAX_BYTES: "65536", SLOW_CONSUMER_GRACE_MS: "200", SUBSCRIBER_DIRECT_SEND: direct });
  });
  afterAll(() => t.cleanup());

  it("drops an SSE subscriber that stops reading, while a reading one on the same channel loses nothing", async () => {
    const dropsBefore = await slowConsumerDrops(t.url);
    const slow = await SseClient.open(`${t.url}/acme/pubsub/firehose-sse/subscribe`, AUTH);
    const healthy = await SseClient.open(`${t.url}/acme/pubsub/firehose-sse/subscribe`, AUTH);
    try {
      await slow.waitFor("ready");
      await healthy.waitFor("ready");
      expect(t.node.services.connections.size).toBe(2);
      slow.pause();

      const sent = await publishUntilDropped(t, "firehose-sse", 1);
      expect(t.node.services.connections.size).toBe(1);
      expect(sent).toBeLessThan(MAX_PUBLISHES);

      const got = await healthy.waitForMessages(sent, 10_000);
      expect(got.map((m: any) => m.message.i)).toEqual(Array.from({ length: sent }, (_, i) => i));
      expect(healthy.ended).toBe(false);
      expect(await slowConsumerDrops(t.url)).toBeGreaterThanOrEqual(dropsBefore + 1);
    } finally {
      slow.close();
      healthy.close();
    }
  });

  it("ends the dropped SSE stream: the client sees it end once it reads again", async () => {
    const slow = await openPausable(`${t.url}/acme/pubsub/firehose-end/subscribe`);
    try {
      expect(await eventually(() => slow.text.includes("event: ready"))).toBe(true);
      slow.pause();
      await publishUntilDropped(t, "firehose-end", 0);
      expect(t.node.services.connections.size).toBe(0);
      slow.resume();
      expect(await eventually(() => slow.ended, 3000)).toBe(true);
    } finally {
      slow.close();
    }
  });

  it("drops a WebSocket subscriber that stops reading, while a reading one on the same channel loses nothing", async () => {
    const dropsBefore = await slowConsumerDrops(t.url);
    const slow = await WsClient.connect(`${t.wsUrl}/acme/pubsub/firehose-ws/ws`, { headers: AUTH });
    const healthy = await WsClient.connect(`${t.wsUrl}/acme/pubsub/firehose-ws/ws`, { auth: KEYS.acme });
    try {
      await slow.waitFor("ready");
      await healthy.waitFor("ready");
      expect(t.node.services.connections.size).toBe(2);
      slow.socket.pause();

      const sent = await publishUntilDropped(t, "firehose-ws", 1);
      expect(t.node.services.connections.size).toBe(1);
      expect(sent).toBeLessThan(MAX_PUBLISHES);

      const got = await healthy.waitForMessages(sent, 10_000);
      expect(got.map((m) => m.message.i)).toEqual(Array.from({ length: sent }, (_, i) => i));
      expect(healthy.closeCode).toBeUndefined();
      expect(await slowConsumerDrops(t.url)).toBeGreaterThanOrEqual(dropsBefore + 1);

      // Reading again within SLOW_CONSUMER_GRACE_MS, the dropped client finds the close frame
      // behind the bytes it had not read: 4408 slow_consumer.
      slow.socket.resume();
      expect(await slow.waitForClose(3000)).toBe(4408);
      expect(slow.closeReason).toBe("slow_consumer");
    } finally {
      slow.close();
      healthy.close();
    }
  });
});

describe("resuming with more to replay than SLOW_CONSUMER_MAX_BYTES=65536 (HISTORY_COUNT=1000)", () => {
  let t: TestNode;
  /** Messages published before each resume: 300 of ~8 KB, about 37 times the limit. */
  const MISSED = 300;
  const BIG = "z".repeat(8000);
  beforeAll(async () => {
    t = await startTestNode({ SLOW_CONSUMER_MAX_BYTES: "65536", SLOW_CONSUMER_GRACE_MS: "200", HISTORY_COUNT: "1000" });
  });
  afterAll(() => t.cleanup());

  /** Publishes the id to resume from, then MISSED big messages after it; answers that id. */
  async function missed(channel: string): Promise<string> {
    const res = await publish(t.url, "acme", channel, { i: -1 });
    expect(res.status).toBe(200);
    for (let i = 0; i < MISSED; i += 1) expect((await publish(t.url, "acme", channel, { i, big: BIG })).status).toBe(200);
    return res.body.data.id as string;
  }

  /** Publishes `count` small live messages numbered from MISSED on, without waiting between them. */
  async function live(channel: string, count: number): Promise<void> {
    for (let i = MISSED; i < MISSED + count; i += 1) expect((await publish(t.url, "acme", channel, { i })).status).toBe(200);
  }

  const numbers = (count: number) => Array.from({ length: count }, (_, i) => i);

  it("replays everything to an SSE client that reads, at its pace, without dropping it, then goes live", async () => {
    const since = await missed("replay-sse");
    const sub = await SseClient.open(`${t.url}/acme/pubsub/replay-sse/subscribe`, { ...AUTH, "Last-Event-ID": since });
    try {
      expect(sub.status).toBe(200);
      await live("replay-sse", 20);
      const got = await sub.waitForMessages(MISSED + 20, 10_000);
      expect(got.map((m: any) => m.message.i)).toEqual(numbers(MISSED + 20));
      expect(sub.ended).toBe(false);
      expect(t.node.services.connections.size).toBe(1);
    } finally {
      sub.close();
    }
  });

  it("replays everything to a WebSocket client that reads, at its pace, without dropping it, then goes live", async () => {
    const since = await missed("replay-ws");
    const client = await WsClient.connect(`${t.wsUrl}/acme/pubsub/replay-ws/ws`, { auth: KEYS.acme, since });
    try {
      await client.waitFor("ready");
      await live("replay-ws", 20);
      const got = await client.waitForMessages(MISSED + 20, 10_000);
      expect(got.map((m) => m.message.i)).toEqual(numbers(MISSED + 20));
      expect(client.closeCode).toBeUndefined();
    } finally {
      client.close();
    }
  });

  it("still drops a resuming SSE or WebSocket client that does not read once live messages pile up behind the replay", async () => {
    await eventually(() => t.node.services.connections.size === 0, 2000);
    const since = await missed("replay-stuck");
    const sse = await openPausable(`${t.url}/acme/pubsub/replay-stuck/subscribe?lastEventId=${encodeURIComponent(since)}`);
    sse.pause();
    const ws = await WsClient.connect(`${t.wsUrl}/acme/pubsub/replay-stuck/ws?since=${encodeURIComponent(since)}`, { headers: AUTH });
    ws.socket.pause();
    try {
      expect(await eventually(() => t.node.services.connections.size === 2)).toBe(true);
      const dropsBefore = await slowConsumerDrops(t.url);
      const sent = await publishUntilDropped(t, "replay-stuck", 0);
      expect(t.node.services.connections.size).toBe(0);
      expect(sent).toBeLessThan(MAX_PUBLISHES);
      expect(await slowConsumerDrops(t.url)).toBe(dropsBefore + 2);
    } finally {
      sse.close();
      ws.close();
    }
  });
});

describe("slow consumers do not grow the node's memory", () => {
  let t: TestNode;
  beforeAll(async () => {
    t = await startTestNode({
      SLOW_CONSUMER_MAX_BYTES: "65536",
      SLOW_CONSUMER_GRACE_MS: "200",
      MAX_MESSAGE_BYTES: "65536",
    });
  });
  afterAll(() => t.cleanup());

  it("keeps what the node holds (heap and buffers) within 30 MB while 40 MB is published past paused SSE and WebSocket subscribers", async () => {
    const gc = collector();
    const big = "y".repeat(32_000);
    const publishMb = async (mb: number) => {
      const count = Math.ceil((mb * 1_000_000) / big.length);
      for (let i = 0; i < count; i += 1) {
        const res = await publish(t.url, "acme", "memory", { i, big });
        expect(res.status).toBe(200);
      }
    };
    // Warm up the publish path (heap, buffers, JIT) so the baseline is its steady state.
    await publishMb(8);
    gc?.();
    await sleep(50);
    gc?.();
    // Heap plus buffers outside it: what the node holds. RSS also counts pages the allocator has not
    // returned yet, and swung by tens of MB when other test files loaded the machine.
    const held = () => {
      const usage = process.memoryUsage();
      return usage.heapUsed + usage.external;
    };
    const before = held();

    const sse = await SseClient.open(`${t.url}/acme/pubsub/memory/subscribe`, AUTH);
    const ws = await WsClient.connect(`${t.wsUrl}/acme/pubsub/memory/ws`, { headers: AUTH });
    try {
      await sse.waitFor("ready");
      await ws.waitFor("ready");
      sse.pause();
      ws.socket.pause();
      await publishMb(40);
      expect(t.node.services.connections.size).toBe(0);
      await sleep(300);
      gc?.();
      await sleep(50);
      gc?.();
      const grown = held() - before;
      // Without --expose-gc garbage may still be waiting: allow more, still well under 40 MB kept.
      expect(grown / 1_000_000).toBeLessThan(gc === undefined ? 40 : 30);
    } finally {
      sse.close();
      ws.close();
    }
  });
});
