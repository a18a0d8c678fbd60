import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { freePort, startRedis } from "@plate/testing";
import type { RedisServer } from "@plate/testing";
import { KEYS, eventually, publish } from "./test-support/node.js";
import { EdgeProcess, redisNodeEnv } from "./test-support/process.js";
import { SseClient } from "./test-support/sse.js";
import { WsClient } from "./test-support/ws.js";

/**
 * Resume as users live it: edge node processes on one redis-server (started empty and without
 * persistence, as the default Redis of many deployments), a node SIGKILLed or Redis restarted
 * while messages stream.
 */

const MESSAGES = 2000;
const AUTH = { Authorization: `Bearer ${KEYS.acme}` };

let redis: RedisServer;
const nodes: EdgeProcess[] = [];

async function startNode(): Promise<EdgeProcess> {
  const node = new EdgeProcess(await freePort(), { ...redisNodeEnv(redis.url), HISTORY_COUNT: String(MESSAGES), LOG_LEVEL: "warn" });
  nodes.push(node);
  await node.ready();
  expect(await eventually(async () => (await fetch(`${node.url}/readyz`)).status === 200, 5000)).toBe(true);
  return node;
}

/** An SSE subscriber that, like a browser's EventSource, reconnects with Last-Event-ID to the next node. */
class ResumingSse {
  readonly seqs: number[] = [];
  resets = 0;
  #client: SseClient | undefined;
  #lastId: string | undefined;

  async connect(base: string, ch: string): Promise<void> {
    const headers: Record<string, string> = this.#lastId === undefined ? AUTH : { ...AUTH, "Last-Event-ID": this.#lastId };
    const client = await SseClient.open(`${base}/acme/pubsub/${ch}/subscribe`, headers);
    if (client.status !== 200) throw new Error(`status ${client.status}: ${client.body}`);
    await client.waitFor("ready");
    this.#client = client;
  }

  /** Takes in what arrived since the last call; answers whether the stream is still open. */
  collect(): boolean {
    const client = this.#client!;
    for (const event of client.events.splice(0)) {
      if (event.id !== undefined) this.#lastId = event.id;
      if (event.event === "message") this.seqs.push(JSON.parse(event.data).message.seq);
      if (event.event === "reset") this.resets += 1;
    }
    return !client.ended;
  }

  close(): void {
    this.#client?.close();
  }
}

/** The same for a WebSocket, resuming with `since` in its auth frame. */
class ResumingWs {
  readonly seqs: number[] = [];
  resets = 0;
  #client: WsClient | undefined;
  #lastId: string | undefined;

  async connect(base: string, ch: string): Promise<void> {
    const client = await WsClient.connect(`${base.replace("http", "ws")}/acme/pubsub/${ch}/ws`, {
      auth: KEYS.acme,
      ...(this.#lastId === undefined ? {} : { since: this.#lastId }),
    });
    await client.waitFor("ready");
    this.#client = client;
  }

  collect(): boolean {
    const client = this.#client!;
    for (const frame of client.frames.splice(0)) {
      if (frame.type === "ready") this.#lastId ??= frame.position;
      if (frame.type === "message") {
        this.#lastId = frame.id;
        this.seqs.push(frame.message.seq);
      }
      if (frame.type === "reset") this.resets += 1;
    }
    return client.closeCode === undefined;
  }

  close(): void {
    this.#client?.close();
  }
}

/**
 * A route 9 connection holding several channels, resuming each after a drop: on WebSocket with
 * `since.<channel>` in the query (the last id of each), on SSE with `Last-Event-ID` (plate-wide).
 */
class ResumingRealtime {
  readonly seqs = new Map<string, number[]>();
  resets = 0;
  #ws: WsClient | undefined;
  #sse: SseClient | undefined;
  readonly #lastIds = new Map<string, string>();
  #lastEventId: string | undefined;

  constructor(
    readonly transport: "ws" | "sse",
    readonly channels: readonly string[],
  ) {
    for (const ch of channels) this.seqs.set(ch, []);
  }

  async connect(base: string): Promise<void> {
    let query = this.channels.map((ch) => `channel=${ch}`).join("&");
    if (this.transport === "ws") {
      for (const [ch, id] of this.#lastIds) query += `&since.${ch}=${encodeURIComponent(id)}`;
      this.#ws = await WsClient.connect(`${base.replace("http", "ws")}/acme/realtime?${query}`, { headers: AUTH });
      await this.#ws.waitFor("ready");
    } else {
      const headers = this.#lastEventId === undefined ? AUTH : { ...AUTH, "Last-Event-ID": this.#lastEventId };
      this.#sse = await SseClient.open(`${base}/acme/realtime?${query}`, headers);
      await this.#sse.waitFor("ready");
    }
  }

  collect(): boolean {
    if (this.#ws !== undefined) {
      for (const frame of this.#ws.frames.splice(0)) {
        if (frame.type === "ready") for (const sub of frame.subscriptions) if (!this.#lastIds.has(sub.channel)) this.#lastIds.set(sub.channel, sub.position);
        if (frame.type === "message") {
          this.#lastIds.set(frame.channel, frame.id);
          this.seqs.get(frame.channel)!.push(frame.message.seq);
        }
        if (frame.type === "reset") this.resets += 1;
      }
      return this.#ws.closeCode === undefined;
    }
    const client = this.#sse!;
    for (const event of client.events.splice(0)) {
      if (event.id !== undefined) this.#lastEventId = event.id;
      if (event.event === "message") {
        const envelope = JSON.parse(event.data);
        this.seqs.get(envelope.channel)!.push(envelope.message.seq);
      }
      if (event.event === "reset") this.resets += 1;
    }
    return !client.ended;
  }

  get count(): number {
    return [...this.seqs.values()].reduce((sum, list) => sum + list.length, 0);
  }

  close(): void {
    this.#ws?.close();
    this.#sse?.close();
  }
}

describe.skipIf((process.env.REDIS_URL ?? "") !== "")("resuming across failures (nodes on one Redis)", () => {
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterEach(() => {
    for (const node of nodes.splice(0)) node.kill();
  });
  afterAll(async () => {
    await redis?.stop();
  });

  it(`loses nothing and repeats nothing when the subscribers' node is SIGKILLed while ${MESSAGES} messages stream`, async () => {
    const doomed = await startNode();
    const survivor = await startNode();
    const subscribers = [new ResumingSse(), new ResumingSse(), new ResumingWs(), new ResumingWs()];
    for (const s of subscribers) await s.connect(doomed.url, "stream");
    let published = 0;
    const publishing = (async () => {
      for (; published < MESSAGES; published++) {
        const res = await publish(survivor.url, "acme", "stream", { seq: published });
        if (res.status !== 200) throw new Error(`publish ${published}: ${res.status}`);
      }
    })();
    try {
      expect(await eventually(() => published >= MESSAGES / 4, 20_000)).toBe(true);
      doomed.kill();
      // Each subscriber notices its stream end and reconnects to the surviving node with its last id.
      await Promise.all(
        subscribers.map(async (s) => {
          expect(await eventually(() => !s.collect(), 5000)).toBe(true);
          await s.connect(survivor.url, "stream");
        }),
      );
      await publishing;
      expect(await eventually(() => subscribers.every((s) => (s.collect(), s.seqs.length >= MESSAGES)), 20_000)).toBe(true);
      await new Promise((r) => setTimeout(r, 200));
      const expected = Array.from({ length: MESSAGES }, (_, i) => i);
      for (const s of subscribers) {
        s.collect();
        expect(s.resets).toBe(0);
        expect(s.seqs).toEqual(expected);
      }
    } finally {
      for (const s of subscribers) s.close();
    }
  }, 60_000);

  it("resumes every subscription of a realtime connection, WebSocket and SSE, when its node is SIGKILLed mid-stream", async () => {
    const doomed = await startNode();
    const survivor = await startNode();
    const channels = ["one", "two", "three"];
    const subscribers = [new ResumingRealtime("ws", channels), new ResumingRealtime("sse", channels)];
    for (const s of subscribers) await s.connect(doomed.url);
    const total = MESSAGES / 2;
    let published = 0;
    const publishing = (async () => {
      for (; published < total; published++) {
        const res = await publish(survivor.url, "acme", channels[published % 3]!, { seq: published });
        if (res.status !== 200) throw new Error(`publish ${published}: ${res.status}`);
      }
    })();
    try {
      expect(await eventually(() => published >= total / 4, 20_000)).toBe(true);
      doomed.kill();
      await Promise.all(
        subscribers.map(async (s) => {
          expect(await eventually(() => !s.collect(), 5000)).toBe(true);
          await s.connect(survivor.url);
        }),
      );
      await publishing;
      expect(await eventually(() => subscribers.every((s) => (s.collect(), s.count >= total)), 20_000)).toBe(true);
      await new Promise((r) => setTimeout(r, 200));
      for (const s of subscribers) {
        s.collect();
        expect(s.resets).toBe(0);
        channels.forEach((ch, i) => {
          const expected = Array.from({ length: total }, (_, seq) => seq).filter((seq) => seq % 3 === i);
          expect(s.seqs.get(ch), `${s.transport} ${ch}`).toEqual(expected);
        });
      }
    } finally {
      for (const s of subscribers) s.close();
    }
  }, 60_000);

  it("sends reset, not silence, when Redis restarts empty: to connected subscribers and to those resuming", { timeout: 60_000 }, async () => {
    const a = await startNode();
    const b = await startNode();
    const connected = new ResumingSse();
    await connected.connect(a.url, "restart");
    const resuming = new ResumingWs();
    await resuming.connect(b.url, "restart");
    expect((await publish(b.url, "acme", "restart", { seq: 0 })).status).toBe(200);
    // Within the 10 s the later steps allow too (a deaf probe under load adds a reconnect). With 3 s
    // it failed once in CI (2026-12-05) with no account of which subscriber lacked the message.
    const both = await eventually(() => (connected.collect(), resuming.collect(), connected.seqs.length === 1 && resuming.seqs.length === 1), 10_000);
    const account = { connected: { seqs: connected.seqs, resets: connected.resets }, resuming: { seqs: resuming.seqs, resets: resuming.resets } };
    if (!both) console.log(`node A's log:\n${a.stdout.slice(-4000)}\n${a.stderr.slice(-2000)}\nnode B's log:\n${b.stdout.slice(-4000)}\n${b.stderr.slice(-2000)}`);
    expect(both, JSON.stringify(account)).toBe(true);
    resuming.close();

    await redis.restart();
    // The nodes provision their plates again in the empty Redis; publishing works once they have.
    expect(await eventually(async () => (await publish(b.url, "acme", "restart", { seq: 1 })).status === 200, 10_000)).toBe(true);

    // The subscriber that stayed connected is told it may have missed messages. Its node learns of
    // the gap when its subscriber connection is back, and reads the history (or gives up on it)
    // within REDIS_COMMAND_TIMEOUT_MS; a deaf probe may add a reconnect.
    const told = await eventually(() => (connected.collect(), connected.resets >= 1), 15_000);
    // Once a message published right after the restart got ahead of the gap and no reset came
    // (fixed in the Redis broker); if it ever happens again, the node's own account says why.
    if (!told) console.log(`node A's log:\n${a.stdout.slice(-8000)}\n${a.stderr.slice(-4000)}`);
    expect(told).toBe(true);
    // One that resumes with an id from before the restart is told so too.
    await resuming.connect(b.url, "restart");
    expect(await eventually(() => (resuming.collect(), resuming.resets >= 1), 5000)).toBe(true);
    expect((await publish(b.url, "acme", "restart", { seq: 2 })).status).toBe(200);
    expect(await eventually(() => (connected.collect(), resuming.collect(), connected.seqs.includes(2) && resuming.seqs.includes(2)))).toBe(true);
    connected.close();
    resuming.close();
  });
});
