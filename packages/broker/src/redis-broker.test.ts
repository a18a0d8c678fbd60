import fc from "fast-check";
import { randomBytes } from "node:crypto";
import { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { PlateError, comparePositions, parsePosition } from "@plate/protocol";
import type { ChannelName, Message, PlateId } from "@plate/protocol";
import { HISTORY_COST, HISTORY_RUN_MAX_BYTES } from "./broker.js";
import type { PublishRequest } from "./broker.js";
import { startRedis, startRedisPair, startTcpProxy, whileOutOfMemory } from "@plate/testing";
import type { RedisServer, TcpProxy } from "@plate/testing";
import { RETENTION, exact, message, pattern, runBrokerContract } from "./broker.contract.js";
import type { RedisBroker } from "./redis-broker.js";
import { redisBrokers, until } from "./test-support/redis-brokers.js";
import { RedisNames, escapeGlob, patternToGlob } from "./redis-names.js";
import { keySlot } from "@plate/redis";

let redis: RedisServer;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis.stop();
});

const brokers = redisBrokers(() => ({ kind: "standalone", url: redis.url }));
afterEach(() => brokers.closeAll());
const newBroker = brokers.make;
const readyBroker = brokers.ready;

/** What `broker` delivers to a subscriber of acme's `channel` and to one of `glob`, in one list. */
async function channelAndPattern(broker: RedisBroker, channel: string, glob: string): Promise<Message[]> {
  const got: Message[] = [];
  await broker.subscribe(exact("acme", channel), (m) => got.push(m));
  await broker.subscribe(pattern("acme", glob), (m) => got.push(m));
  return got;
}

/** A plain Redis client, as a backend or an operator would use. */
async function withClient<T>(use: (client: Redis) => Promise<T>): Promise<T> {
  const client = new Redis(redis.url);
  try {
    return await use(client);
  } finally {
    client.disconnect();
  }
}

/** Scripts Redis has run so far (EVAL and EVALSHA), as `INFO commandstats` counts them. */
function scripts(): Promise<number> {
  return withClient(async (client) => {
    const stats = await client.info("commandstats");
    const calls = (name: string) => Number(new RegExp(`cmdstat_${name}:calls=(\\d+)`).exec(stats)?.[1] ?? 0);
    return calls("evalsha") + calls("eval");
  });
}

runBrokerContract("redis", () => {
  // Every node is another RedisBroker (its own two connections) on the same Redis, under a prefix
  // of its own so tests never see each other's traffic.
  const keyPrefix = `t${randomBytes(4).toString("hex")}:`;
  return Promise.resolve({ node: () => readyBroker({ keyPrefix }), close: () => Promise.resolve() });
});

describe("Redis channel names", () => {
  it("escapes every glob character in a literal", () => {
    expect(escapeGlob("a*b?c[d]e\\f^g")).toBe("a\\*b\\?c\\[d\\]e\\\\f\\^g");
  });

  it("keeps only * and ? of a pattern as wildcards, whatever position the others stand in", () => {
    for (const ch of ["[", "]", "\\", "^"]) {
      for (const text of [`${ch}a`, `a${ch}`, `a${ch}b`, `${ch}`, `*${ch}?`]) {
        expect(patternToGlob(text)).toBe(text.split(ch).join(`\\${ch}`));
      }
    }
    expect(patternToGlob("user:*:?")).toBe("user:*:?");
  });

  it("reads a Redis channel back as its plate and channel, and nothing else", () => {
    const names = new RedisNames("plate:");
    const name = names.channel("acme" as PlateId, "user:42:events" as ChannelName);
    expect(name).toBe("plate:acme:user:42:events");
    expect(names.parse(name)).toEqual({ plateId: "acme", channel: "user:42:events" });
    expect(names.parse("other:acme:x")).toBeUndefined();
    expect(names.parse("plate:nocolon")).toBeUndefined();
    const sharded = new RedisNames("plate:", true);
    const shard = sharded.channel("acme" as PlateId, "user:42:events" as ChannelName);
    expect(shard).toBe("plate:{acme}:user:42:events");
    expect(sharded.parse(shard)).toEqual({ plateId: "acme", channel: "user:42:events" });
    expect(sharded.parse("plate:acme:x")).toBeUndefined();
  });

  it("puts every key and channel of a plate in the plate's hash slot", () => {
    const names = new RedisNames("plate:", true);
    const plate = "acme" as PlateId;
    const all = [
      names.channel(plate, "a" as ChannelName),
      names.channel(plate, "b:c" as ChannelName),
      names.plateWide(plate),
      names.idempotency(plate, "owner:key{x}"),
      ...names.historyKeys(plate, "a" as ChannelName),
      ...names.historyKeys(plate, "zz" as ChannelName),
    ];
    expect(new Set(all.map(keySlot))).toEqual(new Set([keySlot("acme")]));
    expect(() => new RedisNames("pl{ate}:")).toThrow(/brace/);
  });
});

describe("RedisBroker", () => {
  it("never widens a pattern: [, ], \\, *, ? and ^ in plate ids and channels match only themselves", async () => {
    const broker = await readyBroker();
    const received: string[] = [];
    // Validation refuses these names at the edge; the broker must not depend on that.
    for (const [plateId, glob] of [
      ["p[1]", "a[bc]"],
      ["p\\", "x\\*"],
      ["p?", "^q"],
      ["p*", "*"],
    ] as const) {
      await broker.subscribe(pattern(plateId, glob), (m) => received.push(`${m.plateId}|${m.channel}`));
    }
    const other = ["p1:ab", "p1:ac", "pa:abc", "pX:anything", "p:anything", "plong:a[bc]"];
    await withClient(async (client) => {
      for (const name of other) await client.publish(`plate:${name}`, "1");
    });
    for (const [plateId, channel] of [
      ["p[1]", "a[bc]"],
      ["p\\", "x\\zzz"],
      ["p?", "^q"],
      ["p*", "anything"],
    ] as const) {
      await broker.publish(message(plateId, channel));
    }
    expect(await until(() => received.length >= 4)).toBe(true);
    await new Promise((r) => setTimeout(r, 100));
    expect(received.sort()).toEqual(["p*|anything", "p?|^q", "p[1]|a[bc]", "p\\|x\\zzz"].sort());
  });

  it("listens in Redis once per channel, and once per plate for all its patterns (never PSUBSCRIBE), only while needed", async () => {
    const broker = await readyBroker();
    const names = ["plate:acme:room.1", "plate:acme#"];
    const count = () =>
      withClient(async (client) => {
        const numsub = (await client.pubsub("NUMSUB", ...names)) as (string | number)[];
        return [Number(numsub[1]), Number(numsub[3]), Number(await client.pubsub("NUMPAT"))];
      });
    const [, , patsBefore] = await count();
    const stops = [
      await broker.subscribe(exact("acme", "room.1"), () => undefined),
      await broker.subscribe(exact("acme", "room.1"), () => undefined),
      await broker.subscribe(pattern("acme", "user:*"), () => undefined),
      await broker.subscribe(pattern("acme", "user:*"), () => undefined),
      await broker.subscribe(pattern("acme", "room.?"), () => undefined),
    ];
    expect(await count()).toEqual([1, 1, patsBefore]);
    for (const stop of stops.slice(0, 4)) await stop();
    expect(await count()).toEqual([0, 1, patsBefore]);
    await stops[4]!();
    expect(await count()).toEqual([0, 0, patsBefore]);
  });

  it("reads the head once for the fresh subscriptions of a plate asked for in one turn, each starting where a read of its own would", async () => {
    const broker = await readyBroker({ keyPrefix: `h${randomBytes(4).toString("hex")}:` });
    const plate = "acme" as PlateId;
    let last: Message | undefined;
    for (let i = 0; i < 3; i++) last = (await broker.publish(message("acme", `ch${i}`))).message;
    const before = await scripts();
    const channels = Array.from({ length: 50 }, (_, i) => `ch${i % 5}` as ChannelName);
    const [alone, together] = await Promise.all([
      Promise.all(channels.map((channel) => broker.history(plate, channel, undefined, RETENTION))),
      broker.histories(plate, channels.map((channel) => ({ channel, since: undefined })), RETENTION),
    ]);
    // 100 fresh reads, one script (a second only if a turn boundary split them).
    expect((await scripts()) - before).toBeLessThanOrEqual(2);
    for (const replay of [...alone, ...together]) expect(replay).toEqual({ complete: true, messages: [], head: last!.id });
    // A read that resumes is its own, and the next fresh ones read the head anew.
    const resumed = await broker.history(plate, "ch0" as ChannelName, alone[0]!.head, RETENTION);
    expect(resumed).toEqual({ complete: true, messages: [], head: last!.id });
    const { message: next } = await broker.publish(message("acme", "ch1"));
    expect((await broker.history(plate, "ch3" as ChannelName, undefined, RETENTION)).head).toBe(next.id);
  });

  it("delivers a payload a backend PUBLISHes straight into Redis to the channel's subscribers: JSON decoded when it parses, else a string", async () => {
    const broker = await readyBroker();
    const got: Message[] = [];
    const byPattern: Message[] = [];
    await broker.subscribe(exact("acme", "orders"), (m) => got.push(m));
    await broker.subscribe(pattern("acme", "ord*"), (m) => byPattern.push(m));
    await withClient(async (client) => {
      await client.publish("plate:acme:orders", '{"total": 12.50}');
      await client.publish("plate:acme:orders", "plain text");
      await client.publish("plate:acme:orders", "plain text");
      // Not a payload a node wrote: a plate-wide channel takes only those (see redis-names.ts).
      await client.publish("plate:acme#", "orders plain text");
    });
    expect(await until(() => got.length >= 3)).toBe(true);
    expect(got.map((m) => m.body)).toEqual(['{"total": 12.50}', '"plain text"', '"plain text"']);
    // Two publishes of the same text are two messages with two ids.
    expect(new Set(got.map((m) => m.id)).size).toBe(3);
    expect(got.every((m) => m.channel === "orders" && m.plateId === "acme")).toBe(true);
    // Patterns are matched on the plate-wide channel, which only nodes publish to.
    await new Promise((r) => setTimeout(r, 100));
    expect(byPattern).toEqual([]);
  });

  it("gives a channel subscriber and a pattern subscriber one decoded message per publish", async () => {
    const broker = await readyBroker();
    const publisher = await readyBroker();
    const got = await channelAndPattern(broker, "orders", "ord*");
    await broker.subscribe(pattern("acme", "*s"), (m) => got.push(m));
    await publisher.publish(message("acme", "orders", '"same"'));
    await publisher.publish(message("acme", "orders", '"same"'));
    expect(await until(() => got.length >= 6)).toBe(true);
    expect(got[0]).toBe(got[1]);
    expect(got[1]).toBe(got[2]);
    expect(got[3]).toBe(got[5]);
    expect(got[0]).not.toBe(got[3]);
    expect(new Set(got.map((m) => m.id)).size).toBe(2);
  });

  it("delivers a publish to its subscribers, on the publishing node and on another, before the publisher has its answer", async () => {
    const publisher = await readyBroker();
    const other = await readyBroker();
    const heard: string[] = [];
    await publisher.subscribe(exact("acme", "first"), (m) => heard.push(`here ${m.body}`));
    await other.subscribe(exact("acme", "first"), (m) => heard.push(`there ${m.body}`));
    const unheard: number[] = [];
    for (let i = 0; i < 20; i++) {
      await publisher.publish(message("acme", "first", `${i}`));
      if (!heard.includes(`here ${i}`) || !heard.includes(`there ${i}`)) unheard.push(i);
    }
    expect(unheard, heard.join(" ")).toEqual([]);
    expect(heard).toHaveLength(40);
  });

  it("publishes after Redis forgets its scripts (SCRIPT FLUSH), and the message is delivered and kept", async () => {
    const publisher = await readyBroker();
    const subscriber = await readyBroker();
    const got: Message[] = [];
    await subscriber.subscribe(exact("acme", "flushed"), (m) => got.push(m));
    const { message: before } = await publisher.publish(message("acme", "flushed"));
    await withClient((client) => client.script("FLUSH"));
    const { message: after } = await publisher.publish(message("acme", "flushed"));
    expect(await until(() => got.length >= 2)).toBe(true);
    expect(got.map((m) => m.id)).toEqual([before.id, after.id]);
    expect(await publisher.history("acme" as PlateId, "flushed" as ChannelName, before.id, RETENTION)).toEqual({ complete: true, messages: [after], head: after.id });
  });

  it("survives any payload PUBLISHed into a channel or a plate-wide channel, marks and separators included, and still delivers nodes' messages", async () => {
    const got = await channelAndPattern(await readyBroker(), "fuzz", "fu*");
    const publisher = await readyBroker();
    const piece = fc.constantFrom("\u001fP1\u001f", "\u001fP2\u001f", "\u001fP3\u001f", "\u001fPV\u001f", "\u001fPB\u001f", "\u001f", "\u001e", "fuzz", "{", "}", '"', "x", "1_2-3", "é");
    const payloads = fc.sample(fc.array(piece, { maxLength: 12 }).map((parts) => parts.join("")), 300);
    await withClient(async (client) => {
      for (const payload of payloads) {
        await client.publish("plate:acme:fuzz", payload);
        await client.publish("plate:acme#", "fuzz" + payload);
      }
    });
    const { message: last } = await publisher.publish(message("acme", "fuzz", '"still here"'));
    expect(await until(() => got.some((m) => m.id === last.id))).toBe(true);
    expect(got.filter((m) => m.id === last.id)).toEqual([last, last]);
  });

  describe("publishes of consecutive turns (group commit)", () => {
    /** Publishes `first` messages to acme's "orders" in this turn and `second` in the next; answers them and the scripts Redis ran for them. */
    async function twoTurns(broker: RedisBroker, first: number, second: number) {
      const before = await scripts();
      const publishes = Array.from({ length: first }, (_, i) => broker.publish(message("acme", "orders", String(i))));
      const next = new Promise<Promise<{ message: Message }>[]>((resolve) =>
        setImmediate(() => resolve(Array.from({ length: second }, (_, i) => broker.publish(message("acme", "orders", String(first + i)))))),
      );
      const results = await Promise.all([...publishes, ...(await next)]);
      return { messages: results.map((r) => r.message), scripts: (await scripts()) - before };
    }

    it("go in one script while the node is busy publishing, in order, each delivered once", async () => {
      const keyPrefix = `g${randomBytes(4).toString("hex")}:`;
      const publisher = await readyBroker({ keyPrefix });
      const subscriber = await readyBroker({ keyPrefix });
      const got: Message[] = [];
      await subscriber.subscribe(exact("acme", "orders"), (m) => got.push(m));
      // Busy: its last send carried more than one publish.
      await Promise.all([publisher.publish(message("acme", "orders", '"a"')), publisher.publish(message("acme", "orders", '"b"'))]);
      const { messages, scripts: ran } = await twoTurns(publisher, 5, 5);
      expect(ran).toBe(1);
      expect(messages.map((m) => m.body)).toEqual(["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]);
      for (let i = 1; i < messages.length; i++) expect(comparePositions(parsePosition(messages[i - 1]!.id)!, parsePosition(messages[i]!.id)!)).toBeLessThan(0);
      expect(await until(() => got.length >= 12)).toBe(true);
      await new Promise((r) => setTimeout(r, 50));
      expect(got.slice(2)).toEqual(messages);
    });

    it("go in a script each when the node publishes one at a time: a lone publish waits for nothing but its turn's end", async () => {
      const broker = await readyBroker({ keyPrefix: `g${randomBytes(4).toString("hex")}:` });
      await broker.publish(message("acme", "orders", '"alone"'));
      const { messages, scripts: ran } = await twoTurns(broker, 1, 1);
      expect(ran).toBe(2);
      expect(messages.map((m) => m.body)).toEqual(["0", "1"]);
    });
  });

  describe("what one turn publishes to a channel", () => {
    /** Five messages of every shape, published in one turn to acme's "orders" (one script, one run). */
    function turn(): PublishRequest[] {
      return [
        message("acme", "orders", '"plain, and not ASCII: é ✓ 😀"'),
        { ...message("acme", "orders", '{"n":2}'), event: "created" },
        { ...message("acme", "orders", "[3]"), volatile: '{"typing":true}' },
        { ...message("acme", "orders", '"from a client"'), event: "chat", from: { clientId: "c1", user: "u\u001f1" } },
        { ...message("acme", "orders", '"last \\u001e"'), from: { clientId: "c2" } },
      ];
    }

    /** What a Redis client subscribed to acme's "orders" hears while `publisher` publishes one turn, and what two subscribers of another node get. */
    async function publishTurn(publisher: RedisBroker, subscriber: RedisBroker) {
      const byChannel: Message[] = [];
      const byPattern: Message[] = [];
      await subscriber.subscribe(exact("acme", "orders"), (m) => byChannel.push(m));
      await subscriber.subscribe(pattern("acme", "ord*"), (m) => byPattern.push(m));
      return withClient(async (client) => {
        const heard: string[] = [];
        client.on("message", (_name: string, payload: string) => heard.push(payload));
        await client.subscribe("plate:acme:orders");
        const published = (await Promise.all(turn().map((request) => publisher.publish(request)))).map((r) => r.message);
        expect(await until(() => byChannel.length >= 5 && byPattern.length >= 5)).toBe(true);
        await new Promise((r) => setTimeout(r, 100));
        return { heard, published, byChannel, byPattern };
      });
    }

    it("goes out as one pub/sub message, which every subscriber gets as the messages published, in order, once each", async () => {
      const { heard, published, byChannel, byPattern } = await publishTurn(await readyBroker(), await readyBroker());
      expect(heard).toHaveLength(1);
      expect(published.map((m) => m.body)).toEqual(turn().map((r) => r.body));
      expect(byChannel).toEqual(published.map((m, i) => (i === 2 ? { ...m, volatile: '{"typing":true}' } : m)));
      expect(byPattern).toEqual(byChannel);
      expect(byPattern[4]).toBe(byChannel[4]);
    });

    it("goes out as one pub/sub message per message with REDIS_PUBSUB_BATCHES=false, which a node reads the same", async () => {
      const { heard, published, byChannel, byPattern } = await publishTurn(await readyBroker({ pubsubBatches: false }), await readyBroker());
      expect(heard).toHaveLength(5);
      expect(byChannel).toEqual(published.map((m, i) => (i === 2 ? { ...m, volatile: '{"typing":true}' } : m)));
      expect(byPattern).toEqual(byChannel);
    });

    it("keeps each message's own channel, timestamp, event, volatile metadata and idempotency key when one turn moves between them", async () => {
      const publisher = await readyBroker();
      const subscriber = await readyBroker();
      const got = new Map<string, Message[]>([["orders", []], ["audit", []]]);
      for (const [channel, list] of got) await subscriber.subscribe(exact("acme", channel), (m) => list.push(m));
      const at = (ms: number) => new Date(Date.UTC(2026, 11, 4, 12, 0, 0, ms)).toISOString();
      const idem = (key: string) => ({ key, owner: "k1", windowMs: 60_000 });
      // One script: runs orders, audit, orders, audit; timestamps shared, changed and changed back.
      const requests: PublishRequest[] = [
        { ...message("acme", "orders", "1"), timestamp: at(1) },
        { ...message("acme", "orders", "2"), timestamp: at(1), event: "e2" },
        { ...message("acme", "orders", "3"), timestamp: at(1) },
        { ...message("acme", "audit", "4"), timestamp: at(1), idempotency: idem("i4") },
        { ...message("acme", "audit", "5"), timestamp: at(2), volatile: "true" },
        { ...message("acme", "audit", "6"), timestamp: at(2) },
        { ...message("acme", "orders", "7"), timestamp: at(1) },
        { ...message("acme", "audit", "8"), timestamp: at(3), idempotency: idem("i8"), event: "e8" },
        { ...message("acme", "audit", "9"), timestamp: at(3), idempotency: idem("i4") },
      ];
      const results = await Promise.all(requests.map((r) => publisher.publish(r)));
      const published = results.map((r) => r.message);
      // The last repeats the fourth's key: it answers the fourth's id (a repeat has no body), published nothing.
      const idOf = (m: Message) => [m.id, m.channel, m.timestamp];
      expect(results.map((r) => r.repeated)).toEqual([false, false, false, false, false, false, false, false, true]);
      expect(idOf(published[8]!)).toEqual(idOf(published[3]!));
      expect(published.slice(0, 8).map((m) => [m.channel, m.body, m.timestamp, m.event])).toEqual(
        requests.slice(0, 8).map((r) => [r.channel, r.body, r.timestamp, r.event]),
      );
      expect(await until(() => got.get("orders")!.length >= 4 && got.get("audit")!.length >= 4)).toBe(true);
      expect(got.get("orders")).toEqual([published[0], published[1], published[2], published[6]]);
      expect(got.get("audit")).toEqual([published[3], { ...published[4]!, volatile: "true" }, published[5], published[7]]);
      const replay = await publisher.history("acme" as PlateId, "audit" as ChannelName, published[0]!.id, RETENTION);
      expect(replay.complete && replay.messages).toEqual([published[3], published[4], published[5], published[7]]);
      // The keys were remembered with the messages they published: a retry on another node gets them.
      const retry = await subscriber.publish({ ...message("acme", "audit", "10"), idempotency: idem("i8") });
      expect([retry.repeated, ...idOf(retry.message)]).toEqual([true, ...idOf(published[7]!)]);
    });

    it("is in the history as the messages published, for a resume", async () => {
      const publisher = await readyBroker();
      const { message: before } = await publisher.publish(message("acme", "orders"));
      const published = (await Promise.all(turn().map((request) => publisher.publish(request)))).map((r) => r.message);
      const replay = await publisher.history("acme" as PlateId, "orders" as ChannelName, before.id, RETENTION);
      expect(replay).toEqual({ complete: true, messages: published, head: published[4]!.id });
    });

    it("is kept as one history entry that a resume from any message, a trim by count and the budget read as the messages published one by one", async () => {
      // Turns of any size, some of large messages, some from a node without runs
      // (REDIS_PUBSUB_BATCHES=false: an entry a message; before any run, also as a node of a
      // version before runs leaves it, with no count in the channel's marks), with a retention
      // that drops part of a run: after each turn, a
      // resume from every message published is what the last `count` say, the budget counts
      // exactly them, and Redis holds at most one run's worth more.
      const runs = await readyBroker();
      const singles = await readyBroker({ pubsubBatches: false });
      let plates = 0;
      await fc.assert(
        fc.asyncProperty(fc.integer({ min: 1, max: 6 }), fc.array(fc.record({ size: fc.integer({ min: 1, max: 9 }), alone: fc.boolean(), old: fc.boolean(), big: fc.boolean() }), { minLength: 1, maxLength: 6 }), async (count, turns) => {
          const plate = `runs${++plates}`;
          const retention = { count, ageMs: 60_000, markTtlMs: 3_600_000 };
          const budget = { channels: 0, bytes: 1_000_000_000 };
          const sent: Message[] = [];
          let ran = false;
          for (const { size, alone, old, big } of turns) {
            const publisher = alone ? singles : runs;
            // Big: a run of more than five is over HISTORY_RUN_MAX_BYTES, kept as an entry a message.
            const body = () => `"${big ? "x".repeat(3000) : ""}${sent.length}"`;
            const requests = Array.from({ length: size }, () => ({ ...message(plate, "c", body(), retention), budget }));
            sent.push(...(await Promise.all(requests.map((r) => publisher.publish(r)))).map((r) => r.message));
            ran ||= !alone && size > 1;
            if (alone && old && !ran) await withClient((client) => client.hdel(`plate:history-marks:{${plate}}:c`, "kept"));
            const kept = sent.slice(-count);
            for (let i = 0; i < sent.length; i++) {
              const replay = await runs.history(plate as PlateId, "c" as ChannelName, sent[i]!.id, retention);
              // Complete from the last message dropped on (its id is where the kept ones start).
              if (i < sent.length - count - 1) expect(replay).toMatchObject({ complete: false, reason: "expired" });
              else expect(replay).toEqual({ complete: true, messages: sent.slice(i + 1), head: sent.at(-1)!.id });
            }
            const bytes = kept.reduce((sum, m) => sum + "\u001fP1\u001f".length + m.id.length + 1 + m.timestamp.length + 1 + m.body.length + HISTORY_COST.entry, 0);
            expect(await runs.historyUsage(plate as PlateId, retention)).toEqual({ channels: 1, bytes: bytes + HISTORY_COST.stream + HISTORY_COST.remembered });
            const entries = await withClient(async (client) => (await client.xrange(`plate:history:{${plate}}:c`, "-", "+")).map(([, fields]) => fields[1]!.split("\u001e")));
            expect(entries.reduce((sum, e) => sum + e.length, 0)).toBeLessThanOrEqual(count + Math.max(...turns.map((t) => t.size)) - 1);
            // A run is one entry only up to HISTORY_RUN_MAX_BYTES of payloads (the batch mark is 4).
            for (const e of entries) if (e.length > 1) expect(e.join("").length - 4).toBeLessThanOrEqual(HISTORY_RUN_MAX_BYTES);
          }
        }),
        { numRuns: 25 },
      );
    });
  });

  it.skipIf((process.env.REDIS_URL ?? "") !== "")(
    "answers broker_unavailable while Redis is down, keeps subscriptions, and delivers again within 2 s of its return",
    // Needs a Redis it may kill: skipped when REDIS_URL points the tests at a shared one.
    async () => {
      const publisher = await readyBroker();
      const subscriber = await readyBroker();
      const got: string[] = [];
      let gaps = 0;
      subscriber.onGap((phase) => (gaps += phase === "restored" ? 1 : 0));
      await subscriber.subscribe(exact("acme", "alerts"), (m) => got.push(m.body));
      const { message: before } = await publisher.publish(message("acme", "alerts", "before"));
      expect(await until(() => got.includes("before"))).toBe(true);
      got.length = 0;
      await redis.kill();
      expect(await until(() => !publisher.isReady() && !subscriber.isReady())).toBe(true);
      const started = Date.now();
      const err = await publisher.publish(message("acme", "alerts", "lost")).catch((e: unknown) => e);
      expect(Date.now() - started).toBeLessThan(1000);
      expect(err).toBeInstanceOf(PlateError);
      expect((err as PlateError).code).toBe("broker_unavailable");
      const refused = await subscriber.subscribe(exact("acme", "other"), () => undefined).catch((e: unknown) => e);
      expect((refused as PlateError).code).toBe("broker_unavailable");

      await redis.restart();
      const back = Date.now();
      expect(await until(() => publisher.isReady() && subscriber.isReady(), 2000)).toBe(true);
      await publisher.publish(message("acme", "alerts", "after"));
      expect(await until(() => got.includes("after"), 2000)).toBe(true);
      expect(Date.now() - back).toBeLessThan(2000);
      expect(got).toEqual(["after"]);
      // The subscriber heard that its delivery was cut; the history was lost with the data (no
      // persistence), so an id from before resumes as a reset, never as "nothing missed".
      expect(gaps).toBe(1);
      const replay = await subscriber.history("acme" as PlateId, "alerts" as ChannelName, before.id, RETENTION);
      expect(replay).toMatchObject({ complete: false, reason: "epoch" });
    },
  );

  it.skipIf((process.env.REDIS_URL ?? "") !== "")(
    "starts not ready while Redis is down and becomes ready when it appears",
    // Needs a Redis it may kill: skipped when REDIS_URL points the tests at a shared one.
    async () => {
      await redis.kill();
      const broker = newBroker();
      await new Promise((r) => setTimeout(r, 300));
      expect(broker.isReady()).toBe(false);
      const changes: boolean[] = [];
      broker.onReadyChange((ready) => changes.push(ready));
      await redis.restart();
      expect(await until(() => broker.isReady(), 2000)).toBe(true);
      expect(changes).toEqual([true]);
    },
  );

  describe("silent-loss guard", () => {
    let proxy: TcpProxy | undefined;
    afterEach(async () => {
      await proxy?.close();
      proxy = undefined;
    });

    it("notices a subscriber connection that is up but deaf, reports not ready, and reconnects it", async () => {
      proxy = await startTcpProxy(redis.port);
      const warnings: string[] = [];
      const broker = await readyBroker({
        target: { kind: "standalone", url: `redis://127.0.0.1:${proxy.port}` },
        probeIntervalMs: 100,
        probeTimeoutMs: 300,
        warn: (m) => warnings.push(m),
      });
      const publisher = await readyBroker();
      const got: string[] = [];
      let gaps = 0;
      broker.onGap((phase) => (gaps += phase === "restored" ? 1 : 0));
      await broker.subscribe(exact("acme", "alerts"), (m) => got.push(m.body));
      const { message: before } = await publisher.publish(message("acme", "alerts", "before"));
      expect(await until(() => got.includes("before"))).toBe(true);

      proxy.deafenSubscribers();
      await publisher.publish(message("acme", "alerts", "into the void"));
      expect(await until(() => !broker.isReady(), 2000)).toBe(true);
      expect(warnings.some((w) => w.includes("deaf"))).toBe(true);
      expect(await until(() => broker.isReady(), 3000)).toBe(true);
      // The gap is announced, and what went into the void is in the history after "before".
      expect(gaps).toBe(1);
      const replay = await broker.history("acme" as PlateId, "alerts" as ChannelName, before.id, RETENTION);
      expect(replay.complete && replay.messages.map((m) => m.body)).toEqual(["into the void"]);
      await publisher.publish(message("acme", "alerts", "after"));
      expect(await until(() => got.includes("after"))).toBe(true);
    });

    it("tells of the cut before it delivers anything that comes with the resubscription, so the history fills it", async () => {
      proxy = await startTcpProxy(redis.port);
      const broker = await readyBroker({ target: { kind: "standalone", url: `redis://127.0.0.1:${proxy.port}` }, probeIntervalMs: 100, probeTimeoutMs: 300 });
      const publisher = await readyBroker();
      const beforeGap: string[] = [];
      const phases: string[] = [];
      broker.onGap((phase) => phases.push(phase));
      await broker.subscribe(exact("acme", "busy"), (m) => {
        if (phases.length === 0) beforeGap.push(m.id);
      });
      // Publishers that never pause, so that messages come back on the subscriber connection in
      // the same reads as the answers to its resubscription.
      const published: string[] = [];
      let publishing = true;
      const loops = Array.from({ length: 4 }, async () => {
        while (publishing) published.push((await publisher.publish(message("acme", "busy", "x"))).message.id);
      });
      try {
        expect(await until(() => beforeGap.length > 20)).toBe(true);
        proxy.deafenSubscribers();
        expect(await until(() => phases.includes("restored"), 5000)).toBe(true);
        await new Promise((r) => setTimeout(r, 100));
      } finally {
        publishing = false;
        await Promise.all(loops);
      }
      expect(phases).toEqual(["cut", "restored"]);
      // What was delivered before the cut was told is the start of the publish order: the fill
      // reads the history after its last one, so nothing published later may precede the cut.
      const order = [...published].sort((a, b) => comparePositions(parsePosition(a)!, parsePosition(b)!));
      expect(beforeGap).toEqual(order.slice(0, beforeGap.length));
    });
  });
});

describe("RedisBroker when Redis refuses commands", () => {
  /** The PlateError a publish rejects with. */
  async function refusal(broker: RedisBroker, request = message("acme", "refused")): Promise<PlateError> {
    try {
      await broker.publish(request);
    } catch (err) {
      if (err instanceof PlateError) return err;
      throw err;
    }
    return expect.fail("expected the publish to reject");
  }

  /** Publishes until one is accepted or `timeoutMs` passes; answers whether one was. */
  async function publishesWithin(broker: RedisBroker, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const ok = await broker.publish(message("acme", "again")).then(
        () => true,
        () => false,
      );
      if (ok || Date.now() > deadline) return ok;
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  it.skipIf((process.env.REDIS_URL ?? "") !== "")(
    "answers broker_unavailable naming OOM while Redis is out of memory, warns naming it, and publishes again once memory is freed",
    async () => {
      const warnings: string[] = [];
      const broker = await readyBroker({ warn: (m, fields) => warnings.push(`${m} ${JSON.stringify(fields)}`) });
      const error = await whileOutOfMemory(redis.port, () => refusal(broker));
      expect(error.code).toBe("broker_unavailable");
      expect(error.retryAfterS).toBeGreaterThan(0);
      expect(error.message).toMatch(/OOM/);
      expect(error.message).not.toMatch(/unreachable/);
      expect(warnings.some((w) => w.includes("OOM"))).toBe(true);
      expect(await publishesWithin(broker, 1000)).toBe(true);
    },
  );

  it.skipIf((process.env.REDIS_URL ?? "") !== "")(
    "publishes again, without a restart, after a failover demoted its Redis to a replica (READONLY)",
    async () => {
      const pair = await startRedisPair();
      const proxy = await startTcpProxy(pair.a.port);
      try {
        const warnings: string[] = [];
        const broker = await readyBroker({ target: { kind: "standalone", url: `redis://127.0.0.1:${proxy.port}` }, warn: (m, fields) => warnings.push(`${m} ${JSON.stringify(fields)}`) });
        const got: string[] = [];
        await broker.subscribe(exact("acme", "again"), (m) => got.push(m.body));
        expect(await publishesWithin(broker, 1000)).toBe(true);

        // The address the broker uses now names the new primary, but its connections stay with the old one.
        await pair.failover();
        proxy.retarget(pair.b.port);
        const error = await refusal(broker);
        expect(error.code).toBe("broker_unavailable");
        expect(error.message).toMatch(/READONLY/);
        expect(warnings.some((w) => w.includes("READONLY"))).toBe(true);
        expect(await publishesWithin(broker, 3000)).toBe(true);
        // And what it publishes reaches its subscribers again.
        const { message: sent } = await broker.publish(message("acme", "again", "after the failover"));
        expect(await until(() => got.includes("after the failover"), 3000)).toBe(true);
        expect(sent.body).toBe("after the failover");
      } finally {
        await brokers.closeAll();
        await proxy.close();
        await pair.stop();
      }
    },
    20_000,
  );
});

describe("presence on Redis", () => {
  const TIMES = { leaseMs: 600, sweepMs: 150 };
  const plate = "p1" as PlateId;
  const record = (n: number) => JSON.stringify({ state: n, joinedAt: "2026-12-02T00:00:00.000Z" });

  it("removes the members of a node that stops without untracking them, within its lease and a sweep, as leaves every listener hears", async () => {
    const keyPrefix = `t${randomBytes(4).toString("hex")}:`;
    const dyingId = `dying${randomBytes(3).toString("hex")}`;
    const dying = await readyBroker({ keyPrefix, presence: TIMES, nodeId: dyingId });
    const survivor = await readyBroker({ keyPrefix, presence: TIMES });
    const channel = "lobby" as ChannelName;
    const heard: { joins: string; leaves: string }[] = [];
    await survivor.presence.listen(plate, channel, (c) => void heard.push(c));
    const swept: string[] = [];
    survivor.presence.onSwept((_plate, _channel, clientId, record) => void swept.push(`${clientId} ${record}`));
    const vacated: string[] = [];
    survivor.presence.onVacated((_plate, ch) => void vacated.push(ch));
    // The dying node alone has subscribers of "hall"; both have of "lobby".
    expect(await dying.presence.occupy(plate, "hall" as ChannelName)).toBe(true);
    expect(await dying.presence.occupy(plate, channel)).toBe(true);
    expect(await survivor.presence.occupy(plate, channel)).toBe(false);
    for (const n of [1, 2, 3]) await dying.presence.track(plate, channel, `${dyingId}.${n}`, record(n), 10);
    await survivor.presence.track(plate, channel, "alive.1", record(9), 10);
    expect((await survivor.presence.state(plate, channel)).members.size).toBe(4);
    const stoppedAt = Date.now();
    await dying.close();
    expect(await until(() => heard.filter((c) => c.leaves !== "{}").length === 3, 5000)).toBe(true);
    // Lease (600) + one sweep (150) + one renewal period (200) of slack.
    expect(Date.now() - stoppedAt).toBeLessThan(TIMES.leaseMs + 3 * TIMES.sweepMs + 400);
    expect([...(await survivor.presence.state(plate, channel)).members.keys()]).toEqual(["alive.1"]);
    const left = heard.filter((c) => c.leaves !== "{}").map((c) => Object.keys(JSON.parse(c.leaves) as object)[0]);
    expect(left.sort()).toEqual([1, 2, 3].map((n) => `${dyingId}.${n}`));
    // The node that removed them is told, once each, with their records (for webhooks).
    expect(swept.sort()).toEqual([1, 2, 3].map((n) => `${dyingId}.${n} ${record(n)}`));
    expect(await until(() => vacated.length === 1, 3000)).toBe(true);
    expect(vacated).toEqual(["hall"]);
    expect(await survivor.presence.vacate(plate, channel)).toBe(true);
    // Its bookkeeping is gone too: no lease, no member list.
    const bookkeeping = () => withClient((client) => Promise.all([client.zscore(`${keyPrefix}presence-leases`, dyingId), client.exists(`${keyPrefix}presence-node:${dyingId}`)]));
    let kept = await bookkeeping();
    for (let tries = 0; tries < 50 && kept[0] !== null; tries++) kept = await new Promise((r) => setTimeout(r, 20)).then(bookkeeping);
    expect(kept).toEqual([null, 0]);
  });

  it("tracks a node's members again when its lease lapsed while it lived (cut from Redis longer than the lease)", async () => {
    const keyPrefix = `t${randomBytes(4).toString("hex")}:`;
    const nodeId = `slow${randomBytes(3).toString("hex")}`;
    const slow = await readyBroker({ keyPrefix, presence: TIMES, nodeId });
    const other = await readyBroker({ keyPrefix, presence: TIMES });
    const channel = "lobby" as ChannelName;
    const heard: { joins: string; leaves: string }[] = [];
    await other.presence.listen(plate, channel, (c) => void heard.push(c));
    await slow.presence.track(plate, channel, `${nodeId}.1`, record(1), 10);
    // As if it had not renewed for a while: its lease ends now.
    await withClient((client) => client.zadd(`${keyPrefix}presence-leases`, 0, nodeId));
    expect(await until(() => heard.some((c) => c.leaves !== "{}"), 3000)).toBe(true);
    expect(await until(() => heard.filter((c) => c.joins !== "{}").length === 2, 3000)).toBe(true);
    expect([...(await other.presence.state(plate, channel)).members]).toEqual([[`${nodeId}.1`, record(1)]]);
  });
});
