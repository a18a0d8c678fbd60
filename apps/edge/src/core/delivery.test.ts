import type { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { formatPosition } from "@plate/protocol";
import type { ChannelName, ChannelPattern, Message, MessageId, PlateId, ReadyFrame, RealtimeReadyFrame, ResetReason, Topic } from "@plate/protocol";
import type { Replay } from "@plate/broker";
import { Connection } from "./connection.js";
import type { EndReason, Wire } from "./connection.js";
import { FILL_RETRY_MAX_HELD, TopicFeed } from "./delivery.js";
import { Outbound } from "./outbound.js";
import type { SharedFrame } from "./outbound.js";

/**
 * The delivery rules (delivery.ts), driven step by step with a fake broker: each row is a race
 * that was found (or could happen) between live messages, history reads and cuts.
 */

const PLATE = "acme" as PlateId;
const EPOCH = "abcdefgh";

function id(n: number): MessageId {
  return formatPosition({ epoch: EPOCH, ms: 1_000 + n, seq: 0 });
}

function msg(n: number, channel = "room"): Message {
  return { plateId: PLATE, channel: channel as ChannelName, id: id(n), timestamp: "2026-12-02T00:00:00.000Z", body: String(n) };
}

function channelTopic(channel = "room"): Topic {
  return { plateId: PLATE, pattern: false, channel: channel as ChannelName };
}

function patternTopic(pattern: string): Topic {
  return { plateId: PLATE, pattern: true, channel: pattern as ChannelPattern };
}

/** A history read that the test answers when it wants. */
function deferredHistory() {
  const reads: { since: string; answer: (replay: Replay) => void }[] = [];
  return {
    reads,
    history: (since: string) => new Promise<Replay>((resolve) => reads.push({ since, answer: resolve })),
  };
}

/** A history whose reads answer `answers` in turn (an Error fails that read), the last one again after; it keeps each read's `since`. */
function scriptedHistory(...answers: (Replay | Error)[]) {
  const sinces: string[] = [];
  return {
    sinces,
    history: (since: string) => {
      const answer = answers[Math.min(sinces.length, answers.length - 1)]!;
      sinces.push(since);
      return answer instanceof Error ? Promise.reject(answer) : Promise.resolve(answer);
    },
  };
}

function complete(...messages: Message[]): Replay {
  return { complete: true, messages, head: messages.at(-1)?.id ?? id(0) };
}

/** Lets pending promise callbacks run. */
async function flush(): Promise<void> {
  for (let i = 0; i < 5; i++) await Promise.resolve();
}

function feed(history: (since: string) => Promise<Replay>, topic = channelTopic(), fillRetryDelaysMs: readonly number[] = []) {
  const got: string[] = [];
  const resets: ResetReason[] = [];
  const causes: unknown[] = [];
  const f = new TopicFeed({
    topic,
    history,
    beforeFill: () => Promise.resolve(),
    dispatch: (m) => got.push(m.body),
    reset: (reason, cause) => {
      resets.push(reason);
      causes.push(cause);
    },
    fillRetryDelaysMs,
  });
  return { feed: f, got, resets, causes };
}

describe("TopicFeed: a topic's stream across cuts in the broker's delivery", () => {
  it("holds live messages from the cut, hands over what the history gave first, then what it held, none twice", async () => {
    const h = deferredHistory();
    const { feed: f, got } = feed(h.history);
    f.started(id(0));
    f.receive(msg(1));
    f.cut();
    // The restored delivery brings 4 and 5 before the fill has read anything.
    const filling = f.restored();
    f.receive(msg(4));
    f.receive(msg(5));
    await flush();
    expect(h.reads.map((r) => r.since)).toEqual([id(1)]);
    h.reads[0]!.answer(complete(msg(2), msg(3), msg(4)));
    await filling;
    expect(got).toEqual(["1", "2", "3", "4", "5"]);
  });

  it("reads again after the last read when a second cut comes inside one history read, before anything held goes out", async () => {
    const h = deferredHistory();
    const { feed: f, got } = feed(h.history);
    f.started(id(0));
    f.cut();
    const filling = f.restored();
    await flush();
    // Second cut and restore while the first read is out: messages of that gap are only in the history.
    f.cut();
    void f.restored();
    f.receive(msg(6));
    h.reads[0]!.answer(complete(msg(1), msg(2)));
    await flush();
    expect(h.reads.map((r) => r.since)).toEqual([id(0), id(2)]);
    h.reads[1]!.answer(complete(msg(3), msg(4), msg(5)));
    await filling;
    expect(got).toEqual(["1", "2", "3", "4", "5", "6"]);
  });

  it("drops the live copy of a message the history gave, when it comes after the fill (Redis: the read overtook it)", async () => {
    const h = deferredHistory();
    const { feed: f, got } = feed(h.history);
    f.started(id(0));
    f.cut();
    const filling = f.restored();
    await flush();
    h.reads[0]!.answer(complete(msg(1), msg(2)));
    await filling;
    f.receive(msg(1));
    f.receive(msg(2));
    f.receive(msg(3));
    expect(got).toEqual(["1", "2", "3"]);
  });

  it("sends reset during a fill whose history is gone, then what it held", async () => {
    const h = deferredHistory();
    const { feed: f, got, resets } = feed(h.history);
    f.started(id(0));
    f.cut();
    const filling = f.restored();
    f.receive(msg(9));
    await flush();
    h.reads[0]!.answer({ complete: false, reason: "expired", head: id(9) });
    await filling;
    expect(resets).toEqual(["gap"]);
    expect(got).toEqual(["9"]);
  });

  it("resets a pattern after a cut without reading a history (a pattern has none)", async () => {
    const h = deferredHistory();
    const { feed: f, got, resets } = feed(h.history, patternTopic("room*"));
    f.started(id(0));
    f.cut();
    const filling = f.restored();
    f.receive(msg(3));
    await filling;
    expect(h.reads).toEqual([]);
    expect(resets).toEqual(["gap"]);
    expect(got).toEqual(["3"]);
  });

  it("sends reset, with the read's error, when the history cannot be read at all, after trying again once per retry delay", async () => {
    const down = new Error("down");
    const { sinces, history } = scriptedHistory(down);
    const { feed: f, got, resets, causes } = feed(history, channelTopic(), [1, 1]);
    f.started(id(0));
    f.cut();
    const filling = f.restored();
    f.receive(msg(4));
    await filling;
    expect(sinces).toEqual([id(0), id(0), id(0)]);
    expect(resets).toEqual(["gap"]);
    expect(causes).toEqual([down]);
    expect(got).toEqual(["4"]);
  });

  it("gives up retrying at once, with reset, while it holds FILL_RETRY_MAX_HELD live messages, and hands them all over", async () => {
    const { sinces, history } = scriptedHistory(new Error("down"));
    const { feed: f, got, resets } = feed(history, channelTopic(), [1, 1, 1]);
    f.started(id(0));
    f.cut();
    const filling = f.restored();
    for (let n = 1; n <= FILL_RETRY_MAX_HELD; n++) f.receive(msg(n));
    await filling;
    expect(sinces).toEqual([id(0)]);
    expect(resets).toEqual(["gap"]);
    expect(got).toHaveLength(FILL_RETRY_MAX_HELD);
    expect(got.at(-1)).toBe(String(FILL_RETRY_MAX_HELD));
  });

  it("reads again after a read that failed in passing, and hands over what was missed with no reset", async () => {
    const moving = new Error("slot moving");
    const { sinces, history } = scriptedHistory(moving, moving, complete(msg(2), msg(3)));
    const { feed: f, got, resets } = feed(history, channelTopic(), [1, 1, 1]);
    f.started(id(0));
    f.receive(msg(1));
    f.cut();
    const filling = f.restored();
    f.receive(msg(3));
    f.receive(msg(4));
    await filling;
    expect(sinces).toEqual([id(1), id(1), id(1)]);
    expect(resets).toEqual([]);
    expect(got).toEqual(["1", "2", "3", "4"]);
  });
});

describe("TopicFeed.head: where a new subscription may start without a head read", () => {
  // Positions of `id(n)` are published at ms 1,000 + n; a read's time is the feed's clock.
  const AGE = 5_000;

  it("answers the first head read while it is recent, then the last message handed over while that is", () => {
    const { feed: f } = feed(() => Promise.reject(new Error("unused")));
    expect(f.head(AGE, 0)).toBeUndefined();
    f.started(id(0), 50_000);
    expect(f.head(AGE, 50_000 + AGE)).toBe(id(0));
    expect(f.head(AGE, 50_001 + AGE)).toBeUndefined();
    f.receive(msg(7));
    expect(f.head(AGE, 1_007 + AGE)).toBe(id(7));
    expect(f.head(AGE, 1_008 + AGE)).toBeUndefined();
    // A later head read does not move it: it may have been sent before a message it does not count.
    f.started(id(9), 1_100);
    expect(f.head(AGE, 1_100)).toBe(id(7));
  });

  it("answers nothing from a cut until a fill gave everything missed", async () => {
    const h = deferredHistory();
    const { feed: f } = feed(h.history);
    f.started(id(0), 1_000);
    f.receive(msg(1));
    f.cut();
    expect(f.head(AGE, 1_001)).toBeUndefined();
    const filling = f.restored();
    await flush();
    expect(f.head(AGE, 1_001)).toBeUndefined();
    h.reads[0]!.answer(complete(msg(2), msg(3)));
    await filling;
    expect(f.head(AGE, 1_003)).toBe(id(3));
  });

  it("answers nothing after a fill that could not give what was missed, until a live message comes after it", async () => {
    const h = deferredHistory();
    const { feed: f, resets } = feed(h.history);
    f.started(id(0), 1_000);
    f.receive(msg(1));
    f.cut();
    const filling = f.restored();
    await flush();
    // 2 to 5 were published during the cut and are gone: a subscription starting at 1 would claim them.
    h.reads[0]!.answer({ complete: false, reason: "expired", head: id(5) });
    await filling;
    expect(resets).toEqual(["gap"]);
    expect(f.head(AGE, 1_005)).toBeUndefined();
    f.receive(msg(6));
    expect(f.head(AGE, 1_006)).toBe(id(6));
  });

  it("answers nothing when reuse is off (HEAD_REUSE_MS=0)", () => {
    const { feed: f } = feed(() => Promise.reject(new Error("unused")));
    f.started(id(0), 1_000);
    f.receive(msg(1));
    expect(f.head(0, 1_001)).toBeUndefined();
  });
});

/** A connection writing to memory: each frame or message as the text a client would read. */
class RecordingConnection extends Connection {
  readonly transport = "ws" as const;
  readonly written: string[] = [];
  endedWith: EndReason | undefined;
  /** The socket as the paced replay sees it: the test says when it is full, and lets it drain. */
  readonly socket = {
    writableLength: 0,
    writableNeedDrain: false,
    writableEnded: false,
    destroyed: false,
    drained: undefined as (() => void) | undefined,
    write(_chunk: Buffer, drained: () => void): boolean {
      this.drained = drained;
      return true;
    },
  };

  constructor(wire: Wire = "v2", private readonly maxBytes = 1 << 20) {
    super({ plateId: PLATE, keyId: "key_1", clientId: "node.client", wire, maxOverlapChannels: 4 });
    this.onEnd((reason) => (this.endedWith = reason));
  }

  /** What the client got, as short labels: message bodies, frame types with their subscription. */
  get seen(): string[] {
    return this.written;
  }

  heartbeat(): void {}
  protected get output(): Writable {
    return this.socket as unknown as Writable;
  }

  /** The socket holds more than it wants: a paced replay waits. */
  fill(): void {
    this.socket.writableLength = 10;
    this.socket.writableNeedDrain = true;
  }

  /** The socket's bytes have left: the paced replay goes on. */
  drain(): void {
    this.socket.writableLength = 0;
    this.socket.writableNeedDrain = false;
    const drained = this.socket.drained;
    this.socket.drained = undefined;
    drained?.();
  }
  protected get maxBufferedBytes(): number {
    return this.maxBytes;
  }
  protected get noDelayNow(): boolean {
    return true;
  }
  protected get directSend(): undefined {
    return undefined;
  }
  protected bytesOf(out: Outbound): number {
    return out.wsFrame.length;
  }
  protected frameBytes(_type: string, json: string): number {
    return json.length;
  }
  protected writeReady(ready: ReadyFrame | RealtimeReadyFrame): void {
    this.written.push(ready.type);
  }
  protected writeFrame(type: string, json: string): void {
    const frame = JSON.parse(json) as { channel?: string; pattern?: string };
    this.written.push(`${type}:${frame.channel ?? frame.pattern}`);
  }
  protected writeShared(frame: SharedFrame): void {
    this.writeFrame(frame.type, frame.json);
  }
  protected write(out: Outbound): boolean {
    this.written.push(`${out.channel}#${Number(out.id.split("_")[1]!.split("-")[0]) - 1_000}`);
    return true;
  }
  protected close(): void {}
}

describe("Seam: a subscription's start", () => {
  it("drops the live copy of a replayed message that overtakes the replay, and passes what comes after", () => {
    const conn = new RecordingConnection();
    const sub = conn.adopt(channelTopic());
    conn.begin({ type: "ready", clientId: conn.clientId, subscriptions: [] }, undefined);
    // Live before the start: 2 (also in the replay) and 4 (after it).
    sub.deliver(new Outbound(msg(2)));
    conn.startSubscriptions([{ sub, replay: complete(msg(1), msg(2), msg(3)), since: id(0) }]);
    // Live after the start: 3 again (Redis: the history's answer overtook it), then 4 again, 5.
    sub.deliver(new Outbound(msg(3)));
    sub.deliver(new Outbound(msg(5)));
    expect(conn.seen).toEqual(["ready", "room#1", "room#2", "room#3", "room#5"]);
  });

  it("writes a reset that comes during a paced replay in its place in line, after what came before it", () => {
    const conn = new RecordingConnection();
    const sub = conn.adopt(channelTopic());
    conn.begin({ type: "ready", clientId: conn.clientId, subscriptions: [] }, undefined);
    conn.fill();
    conn.startSubscriptions([{ sub, replay: complete(msg(1), msg(2)), since: id(0) }]);
    expect(conn.seen).toEqual(["ready"]);
    sub.deliver(new Outbound(msg(3)));
    sub.reset("gap");
    sub.deliver(new Outbound(msg(4)));
    expect(conn.seen).toEqual(["ready"]);
    conn.drain();
    expect(conn.seen).toEqual(["ready", "room#1", "room#2", "room#3", "reset:room", "room#4"]);
  });

  it("counts live messages held before the start against the output limit, and drops a client past it", () => {
    const conn = new RecordingConnection("v2", 200);
    const sub = conn.adopt(channelTopic());
    for (let n = 1; n <= 10 && conn.endedWith === undefined; n++) sub.deliver(new Outbound(msg(n)));
    expect(conn.endedWith).toBe("slow_consumer");
  });
});

describe("Overlap: once per connection, in order per channel", () => {
  it("writes a message that a channel and a pattern both match once", () => {
    const conn = new RecordingConnection();
    const channel = conn.adopt(channelTopic("room"));
    const pattern = conn.adopt(patternTopic("ro*"));
    conn.begin({ type: "ready", clientId: conn.clientId, subscriptions: [] }, undefined);
    conn.startSubscriptions([
      { sub: channel, replay: complete(), since: undefined },
      { sub: pattern, replay: complete(), since: undefined },
    ]);
    for (const n of [1, 2]) {
      const out = new Outbound(msg(n));
      channel.deliver(out);
      pattern.deliver(out);
    }
    // Not back to back (a gap's fill hands over one topic after the other): still once.
    const three = msg(3);
    const four = msg(4);
    channel.deliver(new Outbound(three));
    channel.deliver(new Outbound(four));
    pattern.deliver(new Outbound(three));
    pattern.deliver(new Outbound(four));
    // A channel the pattern matches alone passes as usual.
    pattern.deliver(new Outbound(msg(5, "rook")));
    expect(conn.seen).toEqual(["ready", "room#1", "room#2", "room#3", "room#4", "rook#5"]);
  });

  it("does not write again what a pattern wrote when a channel it covers is subscribed later with since", () => {
    const conn = new RecordingConnection();
    const pattern = conn.adopt(patternTopic("room*"));
    conn.begin({ type: "ready", clientId: conn.clientId, subscriptions: [] }, undefined);
    conn.startSubscriptions([{ sub: pattern, replay: complete(), since: undefined }]);
    pattern.deliver(new Outbound(msg(1)));
    pattern.deliver(new Outbound(msg(2)));
    const channel = conn.adopt(channelTopic("room"));
    // Live while the channel's history is read: the pattern writes it; the channel holds a copy.
    const three = new Outbound(msg(3));
    pattern.deliver(three);
    channel.deliver(three);
    conn.startSubscriptions([{ sub: channel, replay: complete(msg(1), msg(2), msg(3)), since: id(0) }], {
      type: "subscribed",
      channel: "room" as ChannelName,
    });
    const four = new Outbound(msg(4));
    channel.deliver(four);
    pattern.deliver(four);
    expect(conn.seen).toEqual(["ready", "room#1", "room#2", "room#3", "subscribed:room", "room#4"]);
  });

  it("merges the replays of several subscriptions in id order, so a stream's ids only grow", () => {
    const conn = new RecordingConnection();
    const a = conn.adopt(channelTopic("a"));
    const b = conn.adopt(channelTopic("b"));
    conn.begin({ type: "ready", clientId: conn.clientId, subscriptions: [] }, undefined);
    conn.startSubscriptions([
      { sub: a, replay: complete(msg(1, "a"), msg(4, "a")), since: id(0) },
      { sub: b, replay: complete(msg(2, "b"), msg(3, "b")), since: id(0) },
    ]);
    expect(conn.seen).toEqual(["ready", "a#1", "b#2", "b#3", "a#4"]);
  });

  it("writes nothing of a subscription after its unsubscribe, even what waited behind a replay", () => {
    const conn = new RecordingConnection();
    const a = conn.adopt(channelTopic("a"));
    const b = conn.adopt(channelTopic("b"));
    conn.begin({ type: "ready", clientId: conn.clientId, subscriptions: [] }, undefined);
    conn.fill();
    conn.startSubscriptions([
      { sub: a, replay: complete(msg(1, "a"), msg(3, "a")), since: id(0) },
      { sub: b, replay: complete(msg(2, "b")), since: id(0) },
    ]);
    a.deliver(new Outbound(msg(4, "a")));
    b.deliver(new Outbound(msg(5, "b")));
    a.end();
    conn.frame({ type: "unsubscribed", channel: "a" as ChannelName });
    a.deliver(new Outbound(msg(6, "a")));
    conn.drain();
    expect(conn.seen).toEqual(["ready", "b#2", "b#5", "unsubscribed:a"]);
    expect(conn.subscriptions.size).toBe(1);
  });
});
