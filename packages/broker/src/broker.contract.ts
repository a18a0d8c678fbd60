import { afterEach, describe, expect, it } from "vitest";
import type { ChannelName, ChannelPattern, Message, MessageId, PlateId, Topic } from "@plate/protocol";
import type { Broker } from "./broker.js";

/** Makes the brokers of one test: `node()` returns another node sharing the same backing broker. */
export interface BrokerFixture {
  node(): Promise<Broker>;
  close(): Promise<void>;
}

let seq = 0;
/** A message of `plateId`'s `channel` with a fresh id (the body defaults to a counter). */
export function message(plateId: string, channel: string, body = `${++seq}`): Message {
  return {
    plateId: plateId as PlateId,
    channel: channel as ChannelName,
    id: `m${++seq}` as MessageId,
    timestamp: new Date().toISOString(),
    body,
  };
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
      await broker.publish(sent);
      const [got] = await c.until(1);
      expect(got).toEqual(sent);
    });

    it("delivers a message published on one node to a subscriber on another", async () => {
      const a = await node();
      const b = await node();
      const c = collector();
      await b.subscribe(exact("p1", "room"), c.listener);
      await a.publish(message("p1", "room"));
      expect(await c.until(1)).toHaveLength(1);
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
    });

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

    it("is ready until closed", async () => {
      const broker = await node();
      expect(broker.isReady()).toBe(true);
    });
  });
}
