import { afterEach, describe, expect, it } from "vitest";
import { comparePositions, formatPosition, parsePosition } from "@plate/protocol";
import type { PlateError } from "@plate/protocol";
import type { ChannelName, ChannelPattern, Message, PlateId, Topic } from "@plate/protocol";
import { HISTORY_COST } from "./broker.js";
import type { Broker, PublishRequest, Retention } from "./broker.js";
import type { PresenceChange } from "./presence.js";

/** Makes the brokers of one test: `node()` returns another node sharing the same backing broker. */
export interface BrokerFixture {
  node(): Promise<Broker>;
  close(): Promise<void>;
}

/** The retention of most cases: more than they publish, for longer than they run. */
export const RETENTION: Retention = { count: 100, ageMs: 60_000, markTtlMs: 3_600_000 };

let seq = 0;
/** A publish of `plateId`'s `channel` (the body defaults to a counter). */
export function message(plateId: string, channel: string, body = `${++seq}`, retention = RETENTION): PublishRequest {
  return {
    plateId: plateId as PlateId,
    channel: channel as ChannelName,
    timestamp: new Date().toISOString(),
    body,
    retention,
  };
}

/** Publishes and answers the message as published (with its id). */
async function publish(broker: Broker, plateId: string, channel: string, retention = RETENTION, body?: string): Promise<Message> {
  return (await broker.publish(message(plateId, channel, body, retention))).message;
}

/** The topic of one concrete channel. */
export function exact(plateId: string, channel: string): Topic {
  return { plateId: plateId as PlateId, pattern: false, channel: channel as ChannelName };
}

/** The topic of a pattern. */
export function pattern(plateId: string, channel: string): Topic {
  return { plateId: plateId as PlateId, pattern: true, channel: channel as ChannelPattern };
}

/** Collects what a subscription receives and waits for a count. */
function collector() {
  const received: Message[] = [];
  return {
    received,
    listener: (m: Message) => void received.push(m),
    async until(count: number, timeoutMs = 2000): Promise<Message[]> {
      const deadline = Date.now() + timeoutMs;
      while (received.length < count && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 5));
      }
      return received;
    },
  };
}

/** Long enough for a message that should not arrive to have arrived if it were going to. */
async function settle(): Promise<void> {
  await new Promise((r) => setTimeout(r, 100));
}

/**
 * The broker contract, written once and run against every implementation (see `Broker`).
 */
export function runBrokerContract(name: string, makeFixture: () => Promise<BrokerFixture>): void {
  describe(`${name} broker contract`, () => {
    let fixture: BrokerFixture | undefined;
    afterEach(async () => {
      await fixture?.close();
      fixture = undefined;
    });
    async function node(): Promise<Broker> {
      fixture ??= await makeFixture();
      return fixture.node();
    }

    it("delivers a message to a subscriber of its channel with the body unchanged", async () => {
      const broker = await node();
      const c = collector();
      await broker.subscribe(exact("p1", "alerts"), c.listener);
      const sent = message("p1", "alerts", '{"a":[1,2,"x"]}');
      const { message: published, repeated } = await broker.publish(sent);
      const [got] = await c.until(1);
      expect(repeated).toBe(false);
      expect(got).toEqual(published);
      expect(got).toMatchObject({ plateId: "p1", channel: "alerts", body: '{"a":[1,2,"x"]}', timestamp: sent.timestamp });
    });

    it("carries a message's event name to channel and pattern subscribers on another node, and through the history", async () => {
      const a = await node();
      const b = await node();
      const exactly = collector();
      const byPattern = collector();
      await b.subscribe(exact("p1", "chat"), exactly.listener);
      await b.subscribe(pattern("p1", "ch*"), byPattern.listener);
      const { message: before } = await a.publish(message("p1", "chat", '"plain"'));
      const { message: named } = await a.publish({ ...message("p1", "chat", '{"text":"hi"}'), event: "typing.start" });
      expect(named.event).toBe("typing.start");
      for (const c of [exactly, byPattern]) {
        const got = await c.until(2);
        expect(got.map((m) => [m.event, m.body])).toEqual([
          [undefined, '"plain"'],
          ["typing.start", '{"text":"hi"}'],
        ]);
      }
      const replay = await b.history("p1" as PlateId, "chat" as ChannelName, before.id, RETENTION);
      expect(replay.complete && replay.messages.map((m) => [m.event, m.body, m.id])).toEqual([["typing.start", '{"text":"hi"}', named.id]]);
    });

    it("carries the client that published a message (with or without an event, a user id in any characters) to another node and through the history", async () => {
      const a = await node();
      const b = await node();
      const exactly = collector();
      const byPattern = collector();
      await b.subscribe(exact("p1", "chat"), exactly.listener);
      await b.subscribe(pattern("p1", "ch*"), byPattern.listener);
      const { message: before } = await a.publish(message("p1", "chat", '"plain"'));
      const plain = { clientId: "n1.abc" };
      const user = { clientId: "n1.def", user: 'ann "\u001f\n" é' };
      const { message: first } = await a.publish({ ...message("p1", "chat", '{"text":"hi"}'), from: plain });
      const { message: second } = await a.publish({ ...message("p1", "chat", "[1]"), event: "typing", from: user });
      expect([first.from, second.from, second.event]).toEqual([plain, user, "typing"]);
      const expected = [
        [undefined, undefined, '"plain"'],
        [plain, undefined, '{"text":"hi"}'],
        [user, "typing", "[1]"],
      ];
      for (const c of [exactly, byPattern]) {
        const got = await c.until(3);
        expect(got.map((m) => [m.from, m.event, m.body])).toEqual(expected);
      }
      const replay = await b.history("p1" as PlateId, "chat" as ChannelName, before.id, RETENTION);
      expect(replay.complete && replay.messages.map((m) => [m.from, m.event, m.body])).toEqual(expected.slice(1));
    });

    it("carries volatile metadata to live channel and pattern subscribers on another node, and never into the history", async () => {
      const a = await node();
      const b = await node();
      const exactly = collector();
      const byPattern = collector();
      await b.subscribe(exact("p1", "vol"), exactly.listener);
      await b.subscribe(pattern("p1", "vo*"), byPattern.listener);
      const { message: before } = await a.publish(message("p1", "vol", '"plain"'));
      const { message: first } = await a.publish({ ...message("p1", "vol", "1"), volatile: '{"typing":true,"s":"\\u001f é"}' });
      const { message: second } = await a.publish({ ...message("p1", "vol", "2"), event: "e", from: { clientId: "n.x" }, volatile: "null" });
      const expected = [
        [undefined, '"plain"', undefined],
        ['{"typing":true,"s":"\\u001f é"}', "1", undefined],
        ["null", "2", "e"],
      ];
      for (const c of [exactly, byPattern]) {
        const got = await c.until(3);
        expect(got.map((m) => [m.volatile, m.body, m.event])).toEqual(expected);
      }
      // What the publish answers and what the history keeps have none.
      expect([first.volatile, second.volatile]).toEqual([undefined, undefined]);
      const replay = await b.history("p1" as PlateId, "vol" as ChannelName, before.id, RETENTION);
      expect(replay.complete && replay.messages.map((m) => [m.volatile, m.body, m.id])).toEqual([
        [undefined, "1", first.id],
        [undefined, "2", second.id],
      ]);
    });

    it("takes a plate's publish rates where every node meets: messages and bytes over them are refused on any node, nothing of them published, and other plates untouched", async () => {
      const a = await node();
      const b = await node();
      const seen = collector();
      await b.subscribe(exact("p1", "rated"), seen.listener);
      // A slow refill: what the test sends in its few ms adds less than one token.
      const rate = { perS: 1, burst: 4, bytesPerS: 0, bytesBurst: 0, count: 1, bytes: 0 };
      const outcomes: string[] = [];
      for (let i = 0; i < 8; i++) {
        const by = i % 2 === 0 ? a : b;
        try {
          await by.publish({ ...message("p1", "rated", String(i)), rate });
          outcomes.push("ok");
        } catch (err) {
          expect(err).toMatchObject({ code: "rate_limited" });
          expect((err as PlateError).retryAfterS).toBeGreaterThanOrEqual(1);
          outcomes.push("limited");
        }
      }
      expect(outcomes).toEqual(["ok", "ok", "ok", "ok", "limited", "limited", "limited", "limited"]);
      expect((await seen.until(4)).map((m) => m.body)).toEqual(["0", "1", "2", "3"]);
      // Another plate has its own buckets.
      await a.publish({ ...message("p2", "rated", "1"), rate });
      // Bytes: a bucket of 100 takes a 60-byte message, not a second one; a batch of 3 takes 3 at once or nothing.
      const bytes = { perS: 0, burst: 0, bytesPerS: 1, bytesBurst: 100, count: 1, bytes: 60 };
      await a.publish({ ...message("p3", "b", "1"), rate: bytes });
      await expect(b.publish({ ...message("p3", "b", "2"), rate: bytes })).rejects.toMatchObject({ code: "rate_limited" });
      const batch = { perS: 1, burst: 2, bytesPerS: 0, bytesBurst: 0, count: 3, bytes: 0 };
      await expect(a.publish({ ...message("p4", "b", "1"), rate: batch })).rejects.toMatchObject({ code: "rate_limited" });
      await a.publish({ ...message("p4", "b", "1"), rate: { ...batch, count: 2 } });
    });

    it("keeps a plate's history within its budget where every node meets: channels and bytes past it are refused on any node, nothing of them published, and other plates untouched", async () => {
      const a = await node();
      const b = await node();
      const seen = collector();
      await b.subscribe(exact("p1", "c4"), seen.listener);
      const channels = { channels: 3, bytes: 0 };
      for (const [i, channel] of ["c1", "c2", "c3"].entries()) await (i % 2 === 0 ? a : b).publish({ ...message("p1", channel), budget: channels });
      for (const by of [a, b]) {
        await expect(by.publish({ ...message("p1", "c4"), budget: channels })).rejects.toMatchObject({ code: "quota_exceeded" });
      }
      // What the budget counts: three channels, each a stream and its marks and one small message.
      const used = await b.historyUsage("p1" as PlateId, RETENTION);
      expect(used.channels).toBe(3);
      expect(used.bytes).toBeGreaterThan(3 * (HISTORY_COST.stream + HISTORY_COST.remembered + HISTORY_COST.entry));
      expect(used.bytes).toBeLessThan(3 * (HISTORY_COST.stream + HISTORY_COST.remembered + HISTORY_COST.entry + 100));
      expect(await a.historyUsage("p9" as PlateId, RETENTION)).toEqual({ channels: 0, bytes: 0 });
      // A channel that has history takes more; another plate has its own budget.
      await b.publish({ ...message("p1", "c1"), budget: channels });
      for (const channel of ["c4", "c5", "c6"]) await a.publish({ ...message("p2", channel), budget: channels });
      await settle();
      expect(seen.received).toEqual([]);
      const replay = await a.history("p1" as PlateId, "c4" as ChannelName, (await publish(a, "p1", "c1", RETENTION)).id, RETENTION);
      expect(replay.complete && replay.messages).toEqual([]);

      // Bytes: one channel (a stream and its marks) and about four 1 KB messages fit; at the budget a
      // channel keeping its last two messages goes on replacing them, since it grows no more.
      const kb = JSON.stringify("x".repeat(1000));
      const bytes = { channels: 0, bytes: HISTORY_COST.stream + HISTORY_COST.remembered + 4 * (1100 + HISTORY_COST.entry) };
      const outcomes: string[] = [];
      for (let i = 0; i < 6; i++) {
        try {
          await (i % 2 === 0 ? a : b).publish({ ...message("p3", "big", kb), budget: bytes });
          outcomes.push("ok");
        } catch (err) {
          expect(err).toMatchObject({ code: "quota_exceeded" });
          outcomes.push("full");
        }
      }
      expect(outcomes).toEqual(["ok", "ok", "ok", "ok", "full", "full"]);
      const two = { count: 2, ageMs: 60_000, markTtlMs: 3_600_000 };
      for (let i = 0; i < 10; i++) await (i % 2 === 0 ? a : b).publish({ ...message("p4", "big", kb, two), budget: bytes });
    });

    it("counts each idempotency key a plate's publishes leave against its history budget, for the key's window", async () => {
      const a = await node();
      const b = await node();
      // One channel keeping its last message (under 300 bytes), and three keys.
      const budget = { channels: 0, bytes: HISTORY_COST.stream + HISTORY_COST.remembered + 300 + 3 * HISTORY_COST.idempotency };
      const one = { count: 1, ageMs: 60_000, markTtlMs: 3_600_000 };
      const keyed = (key: string) => ({ ...message("p1", "k", "1", one), budget, idempotency: { key, owner: "o", windowMs: 60_000 } });
      for (const [i, key] of ["k1", "k2", "k3"].entries()) await (i % 2 === 0 ? a : b).publish(keyed(key));
      await expect(a.publish(keyed("k4"))).rejects.toMatchObject({ code: "quota_exceeded" });
      // A repeated key adds nothing and answers the first publish.
      expect((await b.publish(keyed("k1"))).repeated).toBe(true);
      const used = await a.historyUsage("p1" as PlateId, RETENTION);
      expect(used.bytes).toBeGreaterThanOrEqual(3 * HISTORY_COST.idempotency + HISTORY_COST.stream);
      // Keys whose window passed stop counting.
      const p2 = (key: string, windowMs: number) => ({ ...message("p2", "k", "1", one), budget, idempotency: { key, owner: "o", windowMs } });
      for (const key of ["s1", "s2", "s3"]) await a.publish(p2(key, 300));
      await expect(b.publish(p2("s4", 300))).rejects.toMatchObject({ code: "quota_exceeded" });
      await new Promise((r) => setTimeout(r, 400));
      await b.publish(p2("s4", 300));
    });

    it("publishes a batch up to its first refusal and nothing after it, even what would fit", async () => {
      const a = await node();
      const b = await node();
      const seen = collector();
      await b.subscribe(pattern("p1", "*"), seen.listener);
      const budget = { channels: 2, bytes: 0 };
      await a.publish({ ...message("p1", "c1", "0"), budget });
      // Sent in one go, as the publisher sends a batch: c2 fits, c3 is one channel too many, c1 and c2 would fit.
      const outcomes = await Promise.allSettled(
        ["c2", "c3", "c1", "c2"].map((channel, i) => a.publish({ ...message("p1", channel, String(i + 1)), budget, batch: "batch-1" })),
      );
      expect(outcomes.map((o) => o.status)).toEqual(["fulfilled", "rejected", "rejected", "rejected"]);
      expect(outcomes.slice(1).map((o) => (o as PromiseRejectedResult).reason.code)).toEqual(["quota_exceeded", "quota_exceeded", "quota_exceeded"]);
      // Another batch, and a message in no batch, are weighed on their own.
      await b.publish({ ...message("p1", "c1", "5"), budget, batch: "batch-2" });
      await b.publish({ ...message("p1", "c2", "6"), budget });
      expect((await seen.until(4)).map((m) => m.body)).toEqual(["0", "1", "5", "6"]);
    });

    it("frees a plate's history budget when its channels' history expires", async () => {
      const a = await node();
      const b = await node();
      const short = { count: 10, ageMs: 300, markTtlMs: 600 };
      const channels = { channels: 2, bytes: 0 };
      await a.publish({ ...message("p1", "c1", "1", short), budget: channels });
      await b.publish({ ...message("p1", "c2", "1", short), budget: channels });
      await expect(a.publish({ ...message("p1", "c3", "1", short), budget: channels })).rejects.toMatchObject({ code: "quota_exceeded" });
      await new Promise((r) => setTimeout(r, 400));
      await b.publish({ ...message("p1", "c3", "1", short), budget: channels });
      await a.publish({ ...message("p1", "c4", "1", short), budget: channels });
      // The channels' marks (remembered past their messages) count in bytes until they expire too.
      const bytes = { channels: 0, bytes: 2 * HISTORY_COST.remembered + HISTORY_COST.stream + 200 };
      await expect(a.publish({ ...message("p1", "c5", "1", short), budget: bytes })).rejects.toMatchObject({ code: "quota_exceeded" });
      await new Promise((r) => setTimeout(r, 700));
      await b.publish({ ...message("p1", "c5", "1", short), budget: bytes });
      expect((await a.historyUsage("p1" as PlateId, short)).channels).toBe(1);
    });

    it("delivers a message published on one node to a subscriber on another", async () => {
      const a = await node();
      const b = await node();
      const c = collector();
      await b.subscribe(exact("p1", "room"), c.listener);
      await a.publish(message("p1", "room"));
      expect(await c.until(1)).toHaveLength(1);
    });

    it("answers publishes sent all at once exactly as it answers them sent one by one: ids in order, trims, refusals, repeats and history", async () => {
      const broker = await node();
      const kb = JSON.stringify("x".repeat(1000));
      const three = { count: 3, ageMs: 60_000, markTtlMs: 3_600_000 };
      const five = { count: 5, ageMs: 60_000, markTtlMs: 3_600_000 };
      // Two channels may hold history and eight messages may go out (the bucket barely refills in
      // the test); about two 1 KB messages fit in "big"'s bytes; "r" keeps 3 of a longer run.
      const scenario = (plateId: string): PublishRequest[] => {
        const at = (channel: string, body: string, more: Partial<PublishRequest> = {}, retention = three): PublishRequest => ({ ...message(plateId, channel, body, retention), ...more });
        const limited = { budget: { channels: 2, bytes: 0 }, rate: { perS: 1, burst: 8, bytesPerS: 0, bytesBurst: 0, count: 1, bytes: 1 } };
        const keyed = (key: string) => ({ ...limited, idempotency: { key, owner: "o", windowMs: 60_000 } });
        const bytes = { budget: { channels: 0, bytes: HISTORY_COST.stream + HISTORY_COST.remembered + 2.5 * (1100 + HISTORY_COST.entry) } };
        return [
          at("a", "1", limited),
          at("a", "2", limited),
          at("b", "3", keyed("k1")),
          at("a", "4", limited),
          at("c", "5", limited),
          at("b", "6", keyed("k1")),
          at("a", "7", { ...limited, batch: "x" }),
          at("a", "8", { ...limited, batch: "x" }),
          at("a", "9", limited),
          at("b", "10", keyed("k2")),
          at("a", "11", limited),
          ...Array.from({ length: 6 }, (_, i) => ({ ...at("big", kb.slice(0, -1) + i + '"', bytes, five), plateId: `${plateId}-big` as PlateId })),
          ...Array.from({ length: 7 }, (_, i) => at("r", `${20 + i}`)),
          at("s", "30"),
          at("r", "31"),
          at("r", "32"),
        ];
      };
      const outcomes = (settled: PromiseSettledResult<{ message: Message; repeated: boolean }>[]) =>
        settled.map((r) => (r.status === "rejected" ? (r.reason as PlateError).code : r.value.repeated ? "repeated" : "ok"));
      const seen = { one: collector(), all: collector() };
      await broker.subscribe(pattern("one", "*"), seen.one.listener);
      await broker.subscribe(pattern("all", "*"), seen.all.listener);
      const one: PromiseSettledResult<{ message: Message; repeated: boolean }>[] = [];
      for (const request of scenario("one")) one.push(...(await Promise.allSettled([broker.publish(request)])));
      const all = await Promise.allSettled(scenario("all").map((request) => broker.publish(request)));
      expect(outcomes(all)).toEqual(outcomes(one));
      expect(outcomes(one)).toEqual([
        "ok", "ok", "ok", "ok", "quota_exceeded", "repeated", "ok", "ok", "ok", "ok", "rate_limited",
        "ok", "ok", "quota_exceeded", "quota_exceeded", "quota_exceeded", "quota_exceeded",
        "ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok",
      ]);
      // Ids in publish order, each after the last.
      const ids = (settled: typeof one) => settled.flatMap((r) => (r.status === "fulfilled" && !r.value.repeated ? [r.value.message] : []));
      const published = ids(all).filter((m) => m.plateId === "all");
      for (let i = 1; i < published.length; i++) expect(comparePositions(parsePosition(published[i]!.id)!, parsePosition(published[i - 1]!.id)!)).toBeGreaterThan(0);
      // The same history to resume from after each message, and the same deliveries, in order.
      const resumes = async (messages: Message[]) =>
        Promise.all(
          messages.map(async (m) => {
            const replay = await broker.history(m.plateId, m.channel, m.id, m.channel === "big" ? five : three);
            return replay.complete ? replay.messages.map((r) => r.body) : replay.reason;
          }),
        );
      expect(await resumes(ids(all))).toEqual(await resumes(ids(one)));
      // "r" keeps its last 3: a resume before the last one dropped (25) resets, after it replays.
      const r = ids(all).filter((m) => m.channel === "r");
      expect(await resumes(r)).toEqual([...Array<string>(5).fill("expired"), ["26", "31", "32"], ["31", "32"], ["32"], []]);
      await seen.all.until(published.length);
      await settle();
      expect(seen.all.received.map((m) => m.channel + m.body)).toEqual(seen.one.received.map((m) => m.channel + m.body));
      expect(seen.all.received.map((m) => m.id)).toEqual(published.map((m) => m.id));
      for (const plate of ["", "-big"]) {
        const used = { one: await broker.historyUsage(`one${plate}` as PlateId, three), all: await broker.historyUsage(`all${plate}` as PlateId, three) };
        expect(used.all.channels).toBe(used.one.channels);
        expect(Math.abs(used.all.bytes - used.one.bytes)).toBeLessThan(100);
      }
    });

    it("keeps 1,000 messages from one publisher in order, each exactly once", async () => {
      const broker = await node();
      const c = collector();
      await broker.subscribe(exact("p1", "ordered"), c.listener);
      const sent = Array.from({ length: 1000 }, (_, i) => message("p1", "ordered", String(i)));
      for (const m of sent) await broker.publish(m);
      await c.until(1000, 5000);
      await settle();
      expect(c.received.map((m) => m.body)).toEqual(sent.map((m) => m.body));
      // A thousand round trips one after another: on a loaded two-core machine (CI runs the
      // packages' tests side by side) a Redis Cluster's took over 5 s once. Order is asserted, not speed.
    }, 30_000);

    it("gives a pattern subscriber the concrete channel of each matching message", async () => {
      const broker = await node();
      const c = collector();
      await broker.subscribe(pattern("p1", "user:*:events"), c.listener);
      await broker.publish(message("p1", "user:1:events"));
      await broker.publish(message("p1", "user:2:3:events"));
      await broker.publish(message("p1", "user:1:other"));
      await c.until(2);
      await settle();
      expect(c.received.map((m) => m.channel)).toEqual(["user:1:events", "user:2:3:events"]);
    });

    it("matches ? to exactly one character and * to any run, empty included", async () => {
      const broker = await node();
      const q = collector();
      const star = collector();
      await broker.subscribe(pattern("p1", "room.?"), q.listener);
      await broker.subscribe(pattern("p1", "a*b"), star.listener);
      for (const ch of ["room.1", "room.", "room.12", "ab", "a:b", "a.x.b", "abc"]) {
        await broker.publish(message("p1", ch));
      }
      await settle();
      expect(q.received.map((m) => m.channel)).toEqual(["room.1"]);
      expect(star.received.map((m) => m.channel)).toEqual(["ab", "a:b", "a.x.b"]);
    });

    it("never delivers one plate's messages to another plate, not even to a * pattern", async () => {
      const broker = await node();
      const exactOther = collector();
      const starOther = collector();
      const own = collector();
      await broker.subscribe(exact("p2", "alerts"), exactOther.listener);
      await broker.subscribe(pattern("p2", "*"), starOther.listener);
      await broker.subscribe(pattern("p1", "*"), own.listener);
      await broker.publish(message("p1", "alerts"));
      await own.until(1);
      await settle();
      expect(own.received).toHaveLength(1);
      expect(exactOther.received).toHaveLength(0);
      expect(starOther.received).toHaveLength(0);
    });

    it("gives each of two subscriptions of one topic its own copy", async () => {
      const broker = await node();
      const a = collector();
      const b = collector();
      await broker.subscribe(exact("p1", "x"), a.listener);
      await broker.subscribe(exact("p1", "x"), b.listener);
      await broker.publish(message("p1", "x"));
      await a.until(1);
      await b.until(1);
      await settle();
      expect([a.received.length, b.received.length]).toEqual([1, 1]);
    });

    it("stops delivering after unsubscribe, leaving other subscriptions of the topic alone", async () => {
      const broker = await node();
      const gone = collector();
      const stays = collector();
      const stop = await broker.subscribe(exact("p1", "x"), gone.listener);
      await broker.subscribe(exact("p1", "x"), stays.listener);
      await stop();
      await stop();
      await broker.publish(message("p1", "x"));
      await stays.until(1);
      await settle();
      expect(gone.received).toHaveLength(0);
      expect(stays.received).toHaveLength(1);
    });

    it("delivers again to a topic subscribed anew right after its last subscriber left", async () => {
      const broker = await node();
      const c = collector();
      const stop = await broker.subscribe(pattern("p1", "a.*"), () => undefined);
      const leaving = stop();
      await broker.subscribe(pattern("p1", "a.*"), c.listener);
      await leaving;
      await broker.publish(message("p1", "a.b"));
      expect(await c.until(1)).toHaveLength(1);
    });

    it("gives ids that are positions, growing across the channels of a plate", async () => {
      const broker = await node();
      const ids: string[] = [];
      for (const channel of ["a", "b", "a", "c", "b"]) ids.push((await publish(broker, "p1", channel)).id);
      const positions = ids.map((id) => parsePosition(id));
      expect(positions.every((p) => p !== undefined)).toBe(true);
      for (let i = 1; i < positions.length; i++) expect(comparePositions(positions[i - 1]!, positions[i]!)).toBeLessThan(0);
      expect(new Set(positions.map((p) => p!.epoch)).size).toBe(1);
    });

    it("replays a channel's messages after an id, in order, and nothing of other channels", async () => {
      const broker = await node();
      const first = await publish(broker, "p1", "room");
      await publish(broker, "p1", "other");
      const later = [await publish(broker, "p1", "room"), await publish(broker, "p1", "room")];
      await publish(broker, "p2", "room");
      const replay = await broker.history("p1" as PlateId, "room" as ChannelName, first.id, RETENTION);
      expect(replay.complete).toBe(true);
      if (!replay.complete) return;
      expect(replay.messages).toEqual(later);
      const upToDate = await broker.history("p1" as PlateId, "room" as ChannelName, later[1]!.id, RETENTION);
      expect(upToDate).toMatchObject({ complete: true, messages: [] });
    });

    it("answers the plate's head, without messages, when asked for no id", async () => {
      const broker = await node();
      await publish(broker, "p1", "a");
      const last = await publish(broker, "p1", "b");
      expect(await broker.history("p1" as PlateId, "a" as ChannelName, undefined, RETENTION)).toEqual({ complete: true, messages: [], head: last.id });
    });

    it("resets instead of replaying when messages after the id were dropped by count", async () => {
      const broker = await node();
      const three = { ...RETENTION, count: 3 };
      const sent: Message[] = [];
      for (let i = 0; i < 5; i++) sent.push(await publish(broker, "p1", "capped", three));
      // sent[0] and sent[1] are gone: after sent[0], sent[1] is missing.
      expect(await broker.history("p1" as PlateId, "capped" as ChannelName, sent[0]!.id, three)).toMatchObject({ complete: false, reason: "expired" });
      // After the last one dropped, everything missed is still there.
      const replay = await broker.history("p1" as PlateId, "capped" as ChannelName, sent[1]!.id, three);
      expect(replay).toMatchObject({ complete: true, messages: sent.slice(2) });
    });

    it("resets when messages after the id were dropped by age, and replays what is younger", async () => {
      const broker = await node();
      const short = { ...RETENTION, ageMs: 300 };
      const old = await publish(broker, "p1", "aging", short);
      const dropped = await publish(broker, "p1", "aging", short);
      await new Promise((r) => setTimeout(r, 450));
      const fresh = await publish(broker, "p1", "aging", short);
      expect(await broker.history("p1" as PlateId, "aging" as ChannelName, old.id, short)).toMatchObject({ complete: false, reason: "expired" });
      expect(await broker.history("p1" as PlateId, "aging" as ChannelName, dropped.id, short)).toMatchObject({ complete: true, messages: [fresh] });
    });

    it("drops by age at the first of a burst of publishes sent at once, counting what it drops", async () => {
      const broker = await node();
      const short = { count: 3, ageMs: 300, markTtlMs: 3_600_000 };
      const budget = { channels: 10, bytes: 1_000_000 };
      const old = await broker.publish({ ...message("p1", "aging", "old", short), budget });
      const dropped = await broker.publish({ ...message("p1", "aging", "dropped", short), budget });
      await new Promise((r) => setTimeout(r, 450));
      const burst = await Promise.all(["f1", "f2", "f3", "f4"].map((body) => broker.publish({ ...message("p1", "aging", body, short), budget })));
      expect(await broker.history("p1" as PlateId, "aging" as ChannelName, old.message.id, short)).toMatchObject({ complete: false, reason: "expired" });
      const replay = await broker.history("p1" as PlateId, "aging" as ChannelName, dropped.message.id, short);
      expect(replay.complete).toBe(false);
      const after = await broker.history("p1" as PlateId, "aging" as ChannelName, burst[0]!.message.id, short);
      expect(after.complete && after.messages.map((m) => m.body)).toEqual(["f2", "f3", "f4"]);
      // What the budget counts is what is kept: one stream, its marks and three small messages.
      const used = await broker.historyUsage("p1" as PlateId, short);
      expect(used.channels).toBe(1);
      expect(used.bytes).toBeGreaterThan(HISTORY_COST.stream + HISTORY_COST.remembered + 3 * HISTORY_COST.entry);
      expect(used.bytes).toBeLessThan(HISTORY_COST.stream + HISTORY_COST.remembered + 3 * (HISTORY_COST.entry + 100));
    });

    it("with no history kept, resumes only when nothing was published after the id", async () => {
      const broker = await node();
      const none = { ...RETENTION, count: 0 };
      const seen = await publish(broker, "p1", "bare", none);
      expect(await broker.history("p1" as PlateId, "bare" as ChannelName, seen.id, none)).toMatchObject({ complete: true, messages: [] });
      await publish(broker, "p1", "bare", none);
      expect(await broker.history("p1" as PlateId, "bare" as ChannelName, seen.id, none)).toMatchObject({ complete: false, reason: "expired" });
    });

    it("resets ids it never gave: another epoch, a later position, or not an id at all", async () => {
      const broker = await node();
      const seen = parsePosition((await publish(broker, "p1", "x")).id)!;
      const otherEpoch = formatPosition({ ...seen, epoch: seen.epoch === "00000000" ? "11111111" : "00000000" });
      const future = formatPosition({ ...seen, ms: seen.ms + 60_000 });
      const ask = (since: string) => broker.history("p1" as PlateId, "x" as ChannelName, since, RETENTION);
      expect(await ask(otherEpoch)).toMatchObject({ complete: false, reason: "epoch" });
      expect(await ask(future)).toMatchObject({ complete: false, reason: "unknown_id" });
      expect(await ask("m123")).toMatchObject({ complete: false, reason: "unknown_id" });
    });

    it("publishes once per idempotency key of one owner within a plate, answering the first publish to a retry on any node", async () => {
      const broker = await node();
      const other = await node();
      const c = collector();
      await broker.subscribe(exact("p1", "orders"), c.listener);
      const once = { key: "order-42", owner: "key_a", windowMs: 60_000 };
      const first = await broker.publish({ ...message("p1", "orders", "1"), idempotency: once });
      const retry = await other.publish({ ...message("p1", "orders", "1"), idempotency: once });
      const elsewhere = await broker.publish({ ...message("p2", "orders", "1"), idempotency: once });
      expect(first.repeated).toBe(false);
      expect(retry).toMatchObject({ repeated: true, message: { id: first.message.id, channel: "orders", timestamp: first.message.timestamp } });
      expect(elsewhere.repeated).toBe(false);
      await c.until(2, 300);
      expect(c.received.map((m) => m.id)).toEqual([first.message.id]);
    });

    it("keeps the idempotency keys of different owners apart, whatever the characters of key and owner", async () => {
      const broker = await node();
      const c = collector();
      await broker.subscribe(exact("p1", "secret"), c.listener);
      const mine = await broker.publish({ ...message("p1", "public:x"), idempotency: { key: "k:1", owner: "key_a", windowMs: 60_000 } });
      const theirs = await broker.publish({ ...message("p1", "secret"), idempotency: { key: "k:1", owner: "key_b", windowMs: 60_000 } });
      // "key_a" + ":" + "k:1" must not meet "key_a:k" + ":" + "1".
      const spliced = await broker.publish({ ...message("p1", "secret"), idempotency: { key: "1", owner: "key_a:k", windowMs: 60_000 } });
      expect(mine.repeated).toBe(false);
      expect(theirs.repeated).toBe(false);
      expect(spliced.repeated).toBe(false);
      expect(new Set([mine.message.id, theirs.message.id, spliced.message.id]).size).toBe(3);
      await c.until(2);
      expect(c.received.map((m) => m.id)).toEqual([theirs.message.id, spliced.message.id]);
    });

    it("reads several channels' histories at one instant, while publishes stream in", async () => {
      const publisher = await node();
      const reader = await node();
      // Enough history that nothing is dropped while the test runs: every read can be complete.
      const kept = { ...RETENTION, count: 1_000_000 };
      const start = await publish(publisher, "p1", "x", kept);
      let publishing = true;
      const loops = Array.from({ length: 4 }, async (_, i) => {
        while (publishing) {
          await publish(publisher, "p1", i % 2 === 0 ? "x" : "y", kept);
          // The embedded broker answers at once: without a turn of the event loop, nothing else runs.
          await new Promise((r) => setImmediate(r));
        }
      });
      try {
        for (let round = 0; round < 30; round++) {
          const reads = [
            { channel: "x" as ChannelName, since: start.id },
            { channel: "y" as ChannelName, since: start.id },
            { channel: "z" as ChannelName, since: undefined },
          ];
          const [x, y, z] = await reader.histories("p1" as PlateId, reads, kept);
          // One instant: one head for all, and each replay holds its channel's messages up to it.
          expect(new Set([x!.head, y!.head, z!.head]).size).toBe(1);
          const head = parsePosition(x!.head)!;
          for (const replay of [x!, y!]) {
            expect(replay.complete).toBe(true);
            const last = replay.complete ? replay.messages.at(-1) : undefined;
            if (last !== undefined) expect(comparePositions(parsePosition(last.id)!, head)).toBeLessThanOrEqual(0);
          }
          await new Promise((r) => setTimeout(r, 1));
        }
      } finally {
        publishing = false;
        await Promise.all(loops);
      }
      // The last read's replays together are every message published after `start` up to its head.
      const [x, y] = await reader.histories(
        "p1" as PlateId,
        [
          { channel: "x" as ChannelName, since: start.id },
          { channel: "y" as ChannelName, since: start.id },
        ],
        kept,
      );
      const ids = [...(x!.complete ? x!.messages : []), ...(y!.complete ? y!.messages : [])].map((m) => m.id);
      expect(new Set(ids).size).toBe(ids.length);
      expect(ids.every((id) => comparePositions(parsePosition(id)!, parsePosition(x!.head)!) <= 0)).toBe(true);
    });

    it("carries a node-to-node note to the node that listens to its address, and counts the nodes that listen", async () => {
      const a = await node();
      const b = await node();
      const notes: string[] = [];
      const plate = collector();
      await a.subscribe(pattern("p1", "*"), plate.listener);
      const stop = await b.listen("node-b", (payload) => notes.push(payload));
      expect(await a.send("node-b", '{"x":1}')).toBe(1);
      expect(await a.send("node-c", "nobody")).toBe(0);
      const deadline = Date.now() + 2000;
      while (notes.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
      expect(notes).toEqual(['{"x":1}']);
      await stop();
      expect(await a.send("node-b", "after")).toBe(0);
      await settle();
      expect(notes).toEqual(['{"x":1}']);
      // Notes are apart from every plate: not even a * pattern hears them.
      expect(plate.received).toEqual([]);
    });

    it("is ready until closed", async () => {
      const broker = await node();
      expect(broker.isReady()).toBe(true);
    });

    describe("presence", () => {
      const plate = "p1" as PlateId;
      let channelSeq = 0;
      const fresh = () => `room.${Date.now()}.${++channelSeq}` as ChannelName;
      const record = (state: unknown) => JSON.stringify({ state, joinedAt: "2026-12-02T00:00:00.000Z" });

      function changes() {
        const heard: PresenceChange[] = [];
        return {
          heard,
          listener: (change: PresenceChange) => void heard.push(change),
          async until(count: number, timeoutMs = 2000): Promise<PresenceChange[]> {
            const deadline = Date.now() + timeoutMs;
            while (heard.length < count && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
            return heard;
          },
        };
      }

      it("tells every node's listeners of joins, updates and leaves, in version order, and answers the state with its version", async () => {
        const a = await node();
        const b = await node();
        const channel = fresh();
        const onB = changes();
        const stop = await b.presence.listen(plate, channel, onB.listener);
        const t1 = await a.presence.track(plate, channel, "n1.ann", record({ x: 1 }), 10);
        const t2 = await a.presence.track(plate, channel, "n1.ann", record({ x: 2 }), 10);
        const t3 = await b.presence.track(plate, channel, "n2.bob", record("hi"), 10);
        if (t1 === "full" || t2 === "full" || t3 === "full") throw new Error("not full");
        expect([t1.joined, t2.joined, t3.joined]).toEqual([true, false, true]);
        const [v1, v2, v3] = [t1.version, t2.version, t3.version];
        expect(await a.presence.untrack(plate, channel, "n1.ann")).toBeGreaterThan(v3);
        expect(await a.presence.untrack(plate, channel, "n1.ann")).toBe(0);
        const heard = await onB.until(4);
        expect(heard.map((c) => [JSON.parse(c.joins), JSON.parse(c.leaves)])).toEqual([
          [{ "n1.ann": JSON.parse(record({ x: 1 })) }, {}],
          [{ "n1.ann": JSON.parse(record({ x: 2 })) }, { "n1.ann": JSON.parse(record({ x: 1 })) }],
          [{ "n2.bob": JSON.parse(record("hi")) }, {}],
          [{}, { "n1.ann": JSON.parse(record({ x: 2 })) }],
        ]);
        expect(heard.slice(0, 3).map((c) => c.version)).toEqual([v1, v2, v3]);
        const state = await a.presence.state(plate, channel);
        expect([...state.members]).toEqual([["n2.bob", record("hi")]]);
        expect(state.version).toBe(heard[3]!.version);
        await stop();
        await settle();
        expect(onB.heard).toHaveLength(4);
        // Another plate's channel of the same name has no members.
        expect((await b.presence.state("p2" as PlateId, channel)).members.size).toBe(0);
      });

      it("says when a channel becomes occupied (the first node with subscribers) and vacant (the last one gone)", async () => {
        const a = await node();
        const b = await node();
        const channel = fresh();
        expect(await a.presence.occupy(plate, channel)).toBe(true);
        expect(await b.presence.occupy(plate, channel)).toBe(false);
        expect(await a.presence.vacate(plate, channel)).toBe(false);
        expect(await b.presence.vacate(plate, channel)).toBe(true);
        expect(await a.presence.occupy(plate, channel)).toBe(true);
        expect(await a.presence.occupy("p2" as PlateId, channel)).toBe(true);
      });

      it("refuses a member past maxMembers (an update of a member still passes), and changes nothing", async () => {
        const a = await node();
        const channel = fresh();
        expect(await a.presence.track(plate, channel, "n.1", record(1), 2)).toMatchObject({ joined: true });
        expect(await a.presence.track(plate, channel, "n.2", record(2), 2)).toMatchObject({ joined: true });
        expect(await a.presence.track(plate, channel, "n.3", record(3), 2)).toBe("full");
        expect(await a.presence.track(plate, channel, "n.2", record(22), 2)).toMatchObject({ joined: false });
        expect([...(await a.presence.state(plate, channel)).members.keys()].sort()).toEqual(["n.1", "n.2"]);
      });

      it("lets a listener that reads the state after it started rebuild every later state exactly from the changes after that version", async () => {
        const a = await node();
        const b = await node();
        const channel = fresh();
        const onB = changes();
        await b.presence.listen(plate, channel, onB.listener);
        const work = Array.from({ length: 30 }, (_, i) => {
          const broker = i % 2 === 0 ? a : b;
          const id = `n.${i % 7}`;
          return i % 3 === 2 ? broker.presence.untrack(plate, channel, id) : broker.presence.track(plate, channel, id, record(i), 100);
        });
        const midway = b.presence.state(plate, channel);
        const versions = (await Promise.all(work)).map((done) => (typeof done === "number" ? done : done === "full" ? 0 : done.version));
        const state = await midway;
        const final = await a.presence.state(plate, channel);
        await onB.until(versions.filter((v) => v !== 0).length);
        const heard = onB.heard;
        for (let i = 1; i < heard.length; i++) expect(heard[i]!.version).toBeGreaterThan(heard[i - 1]!.version);
        const rebuilt = new Map(state.members);
        for (const change of heard.filter((c) => c.version > state.version)) {
          for (const id of Object.keys(JSON.parse(change.leaves) as object)) rebuilt.delete(id);
          for (const [id, value] of Object.entries(JSON.parse(change.joins) as Record<string, unknown>)) rebuilt.set(id, JSON.stringify(value));
        }
        expect(new Map([...rebuilt].sort())).toEqual(new Map([...final.members].sort()));
      });
    });
  });
}
