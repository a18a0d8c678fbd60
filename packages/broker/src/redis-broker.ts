import { Redis } from "ioredis";
import type { RedisOptions } from "ioredis";
import { PlateError, bodyFromForeignPayload, formatPosition, newEpoch, parsePosition } from "@plate/protocol";
import type { ChannelName, Message, MessageId, PlateId, Topic } from "@plate/protocol";
import type { Broker, GapPhase, HistoryRead, MessageListener, PublishRequest, PublishResult, Replay, Retention, Unsubscribe } from "./broker.js";
import { idempotencyName, resumeRule } from "./history.js";
import type { Order } from "./history.js";
import { DeafnessProbe, RefusalWarnings, reconnectOnReadOnly, redisRefusal } from "@plate/redis";
import type { RedisRefusal, Warn } from "@plate/redis";
import { withHistoryScripts } from "./redis-history.js";
import type { HistoryScripts, ReadReply } from "./redis-history.js";
import { RedisNames } from "./redis-names.js";

/** Settings of the Redis broker; each is a setting of the edge node (see the README). */
export interface RedisBrokerOptions {
  readonly url: string;
  /** Put before every Redis channel name (`REDIS_KEY_PREFIX`). */
  readonly keyPrefix: string;
  /** How long one Redis command may take before it fails, in ms. */
  readonly commandTimeoutMs: number;
  /** Longest wait between two reconnect attempts, in ms. */
  readonly reconnectMaxMs: number;
  /** How often the silent-loss probe is sent while the node has subscriptions, in ms. */
  readonly probeIntervalMs: number;
  /** How long a probe may take to come back before the subscriber connection counts as deaf, in ms. */
  readonly probeTimeoutMs: number;
  /** This node's id, unique among the nodes (names its probe channel). */
  readonly nodeId: string;
  /** Gives an id to a message a backend PUBLISHed straight into Redis (it carries none). */
  readonly newMessageId: () => MessageId;
  /** Where the broker reports what an operator should know (connection loss, deafness). */
  readonly warn?: Warn;
  /** Called each time a silent-loss probe did not come back in time (for a metric). */
  readonly onProbeLost?: () => void;
}

/** First wait before reconnecting, in ms; it doubles up to `reconnectMaxMs`. */
const RECONNECT_FIRST_MS = 50;

/**
 * Marks a payload that a Plate node published: `MARK id SEP timestamp SEP body`. JSON text never
 * holds a raw U+001F (the JSON grammar forbids control characters unescaped), so the separator is
 * safe inside the body's neighbours, and a foreign payload practically never starts with the mark.
 * Chosen over a JSON wrapper so a node neither parses nor re-serializes the body: the body's text
 * goes into the envelope as it is.
 */
const MARK = "\u001fP1\u001f";
const SEP = "\u001f";

/** The Redis payload of a message published by a node. */
export function encodeRedisPayload(message: Message): string {
  return MARK + message.id + SEP + message.timestamp + SEP + message.body;
}

/** A node's payload as a message of `plateId`'s `channel`; undefined if it is not one. */
function decodeNodePayload(plateId: PlateId, channel: ChannelName, payload: string): Message | undefined {
  if (!payload.startsWith(MARK)) return undefined;
  const idEnd = payload.indexOf(SEP, MARK.length);
  const timeEnd = payload.indexOf(SEP, idEnd + 1);
  if (idEnd < 0 || timeEnd < 0) return undefined;
  return {
    plateId,
    channel,
    id: payload.slice(MARK.length, idEnd) as MessageId,
    timestamp: payload.slice(idEnd + 1, timeEnd),
    body: payload.slice(timeEnd + 1),
  };
}

/** "ms-seq" as an order. */
function parseOrder(text: string | null): Order | undefined {
  if (text === null) return undefined;
  const dash = text.indexOf("-");
  return { ms: Number(text.slice(0, dash)), seq: Number(text.slice(dash + 1)) };
}

interface Interest {
  readonly pattern: boolean;
  readonly listeners: Set<MessageListener>;
  /** Resolves once Redis confirmed the (P)SUBSCRIBE that created this interest. */
  readonly active: Promise<void>;
}

/**
 * The broker for many nodes sharing one Redis. Messages go through Redis pub/sub; a node SUBSCRIBEs
 * to a channel, or PSUBSCRIBEs to a pattern, only while at least one local subscription needs it
 * (reference-counted per Redis name), so a node receives no traffic for channels nobody on it
 * watches.
 *
 * - Two connections: commands (auto-pipelined PUBLISH) and subscriber. Commands fail at once while
 *   Redis is unreachable (no offline queue), so a publish answers `broker_unavailable` instead of
 *   hanging, and nothing was published.
 * - Redis refusing a command (OOM, READONLY, ...) answers `broker_unavailable` naming the refusal,
 *   warned once until a command succeeds again. READONLY (a primary demoted by a failover) also
 *   reconnects the command connection, so it reaches the new primary at the same address.
 * - After a reconnect the subscriber connection subscribes again to everything local subscriptions
 *   need; they stay open and receive again with no action of theirs.
 * - A Redis message is decoded once into one `Message` object for every local listener, including
 *   a channel listener and a pattern listener that both match it (Redis sends it twice).
 * - Silent-loss guard: while the node has subscriptions it publishes a probe to its own probe
 *   channel every `probeIntervalMs`. A probe not back within `probeTimeoutMs` means the subscriber
 *   connection is up but deaf (as after a failover): the broker reports not ready, reconnects the
 *   subscriber and resubscribes.
 * - Not for Redis Cluster: pattern subscriptions must see every channel of one server.
 */
export class RedisBroker implements Broker {
  readonly #options: RedisBrokerOptions;
  readonly #names: RedisNames;
  readonly #commands: Redis & HistoryScripts;
  readonly #subscriber: Redis;
  readonly #interests = new Map<string, Interest>();
  /** Listeners of node-to-node notes, by Redis channel (see `send`). */
  readonly #notes = new Map<string, Set<(payload: string) => void>>();
  readonly #readyListeners = new Set<(ready: boolean) => void>();
  readonly #gapListeners = new Set<(phase: GapPhase) => void>();
  /** Whether the subscriber connection was ever subscribed: its next resubscription closes a gap. */
  #subscribedOnce = false;
  readonly #probeChannel: string;
  #subscriberReady = false;
  #deaf = false;
  #ready = false;
  #closed = false;
  readonly #probe: DeafnessProbe;
  readonly #refusals: RefusalWarnings;
  /**
   * The last payload decoded, what it became, and the names it was delivered under. Redis sends one
   * publish once per matching (P)SUBSCRIBE, back to back; the same payload under a name it already
   * went to is a new publish (a backend may PUBLISH the same text twice), so it is decoded anew.
   */
  #lastChannel = "";
  #lastPayload = "";
  #lastMessage: Message | undefined;
  readonly #lastNames: string[] = [];

  constructor(options: RedisBrokerOptions) {
    this.#options = options;
    this.#names = new RedisNames(options.keyPrefix);
    this.#probeChannel = this.#names.probe(options.nodeId);
    this.#refusals = new RefusalWarnings(options.warn, "redis refuses the broker's commands");
    const common: RedisOptions = {
      commandTimeout: options.commandTimeoutMs,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      retryStrategy: (attempt) => Math.min(RECONNECT_FIRST_MS * 2 ** Math.min(attempt, 16), options.reconnectMaxMs),
      // Resubscription is ours (#resubscribe): ioredis' own would also restore interests dropped while down.
      autoResubscribe: false,
    };
    this.#commands = withHistoryScripts(
      new Redis(options.url, {
        ...common,
        enableAutoPipelining: true,
        connectionName: `plate-${options.nodeId}-cmd`,
        reconnectOnError: reconnectOnReadOnly,
      }),
    );
    this.#subscriber = new Redis(options.url, { ...common, connectionName: `plate-${options.nodeId}-sub` });
    this.#commands.on("ready", () => this.#update());
    this.#commands.on("close", () => this.#update());
    this.#commands.on("error", () => undefined);
    this.#subscriber.on("ready", () => void this.#resubscribe());
    this.#subscriber.on("close", () => {
      this.#deliveryCut();
      this.#update();
    });
    this.#subscriber.on("error", () => undefined);
    this.#subscriber.on("message", (channel: string, payload: string) => this.#onMessage(channel, channel, payload));
    this.#subscriber.on("pmessage", (glob: string, channel: string, payload: string) => this.#onMessage(glob, channel, payload));
    this.#probe = new DeafnessProbe({
      intervalMs: options.probeIntervalMs,
      timeoutMs: options.probeTimeoutMs,
      wanted: () => this.#interests.size > 0 && this.#ready,
      publish: (payload) => this.#commands.publish(this.#probeChannel, payload),
      lost: () => this.#probeLost(),
    });
  }

  /**
   * One script (redis-history.ts) gives the id, appends to the channel's history, trims it and
   * PUBLISHes, atomically: a message is in the history if and only if it went out.
   */
  async publish(request: PublishRequest): Promise<PublishResult> {
    const { plateId, channel, retention, idempotency } = request;
    let reply;
    try {
      reply = await this.#commands.platePublish(
        ...this.#names.historyKeys(plateId, channel),
        this.#names.idempotency(plateId, idempotency === undefined ? "" : idempotencyName(idempotency)),
        newEpoch(),
        this.#names.channel(plateId, channel),
        MARK,
        SEP,
        request.timestamp,
        request.body,
        retention.count,
        retention.ageMs,
        retention.markTtlMs,
        idempotency?.windowMs ?? 0,
        channel,
      );
    } catch (err) {
      throw this.#failed(err);
    }
    this.#refusals.succeeded();
    if (reply[0] === 1) {
      return { message: { plateId, channel, id: reply[1] as MessageId, timestamp: request.timestamp, body: request.body }, repeated: false };
    }
    const [id, timestamp, firstChannel] = reply[1].split(SEP);
    return { message: { plateId, channel: firstChannel as ChannelName, id: id as MessageId, timestamp: timestamp!, body: "" }, repeated: true };
  }

  async history(plateId: PlateId, channel: ChannelName, since: string | undefined, retention: Retention): Promise<Replay> {
    let reply;
    try {
      reply = await this.#commands.plateReadHistory(...this.#readArgs(plateId, channel, since));
    } catch (err) {
      throw this.#failed(err);
    }
    return this.#replayOf(plateId, channel, since, reply, retention);
  }

  /** One MULTI of the read script per channel: Redis runs them back to back, nothing in between. */
  async histories(plateId: PlateId, reads: readonly HistoryRead[], retention: Retention): Promise<Replay[]> {
    if (reads.length === 1) return [await this.history(plateId, reads[0]!.channel, reads[0]!.since, retention)];
    const multi = this.#commands.multi() as unknown as HistoryScripts & { exec(): Promise<[Error | null, unknown][] | null> };
    for (const read of reads) void multi.plateReadHistory(...this.#readArgs(plateId, read.channel, read.since));
    let results;
    try {
      results = await multi.exec();
    } catch (err) {
      throw this.#failed(err);
    }
    if (results === null) throw unavailable();
    return results.map(([err, reply], i) => {
      if (err !== null) throw this.#failed(err);
      return this.#replayOf(plateId, reads[i]!.channel, reads[i]!.since, reply as ReadReply, retention);
    });
  }

  #readArgs(plateId: PlateId, channel: ChannelName, since: string | undefined): string[] {
    const position = since === undefined ? undefined : parsePosition(since);
    return [...this.#names.historyKeys(plateId, channel), newEpoch(), position === undefined ? "" : position.ms + "-" + position.seq];
  }

  #replayOf(plateId: PlateId, channel: ChannelName, since: string | undefined, reply: ReadReply, retention: Retention): Replay {
    const [epoch, headMs, headSeq, last, dropped, now, entries] = reply;
    const headOrder = { ms: Number(headMs), seq: Number(headSeq) };
    const head = formatPosition({ epoch, ...headOrder });
    if (since === undefined) return { complete: true, messages: [], head };
    const marks = { last: parseOrder(last), dropped: parseOrder(dropped) };
    const rule = resumeRule(since, epoch, headOrder, marks, Number(now), retention.markTtlMs);
    if (rule.kind === "reset") return { complete: false, reason: rule.reason, head };
    const messages: Message[] = [];
    for (const [, fields] of entries) {
      const message = decodeNodePayload(plateId, channel, fields[1]!);
      if (message !== undefined) messages.push(message);
    }
    return { complete: true, messages, head };
  }

  async send(address: string, payload: string): Promise<number> {
    try {
      const nodes = await this.#commands.publish(this.#names.node(address), payload);
      this.#refusals.succeeded();
      return nodes;
    } catch (err) {
      throw this.#failed(err);
    }
  }

  async listen(address: string, listener: (payload: string) => void): Promise<Unsubscribe> {
    if (this.#closed) throw new Error("RedisBroker is closed");
    const name = this.#names.node(address);
    let listeners = this.#notes.get(name);
    const first = listeners === undefined;
    if (listeners === undefined) {
      listeners = new Set();
      this.#notes.set(name, listeners);
    }
    const delivery = (payload: string) => listener(payload);
    listeners.add(delivery);
    const joined = listeners;
    const leave = async () => {
      if (!joined.delete(delivery) || joined.size > 0 || this.#notes.get(name) !== joined) return;
      this.#notes.delete(name);
      await this.#subscriber.unsubscribe(name).catch(() => undefined);
    };
    // While the subscriber is down, #resubscribe subscribes it with the rest when it is back.
    if (first && this.#subscriber.status === "ready") {
      try {
        await this.#subscriber.subscribe(name);
      } catch (err) {
        if (this.#subscriber.status === "ready") {
          await leave();
          throw unavailable(err, redisRefusal(err));
        }
      }
    }
    return leave;
  }

  async subscribe(topic: Topic, listener: MessageListener): Promise<Unsubscribe> {
    if (this.#closed) throw new Error("RedisBroker is closed");
    if (!this.#ready) throw unavailable();
    const name = this.#names.subscription(topic);
    let interest = this.#interests.get(name);
    if (interest === undefined) {
      const active = this.#redisSubscribe(name, topic.pattern);
      interest = { pattern: topic.pattern, listeners: new Set(), active };
      this.#interests.set(name, interest);
    }
    // Wrap so that the same function subscribed twice counts as two deliveries.
    const delivery: MessageListener = (message) => listener(message);
    const joined = interest;
    joined.listeners.add(delivery);
    try {
      await joined.active;
    } catch (err) {
      await this.#leave(name, joined, delivery);
      throw unavailable(err, redisRefusal(err));
    }
    let left = false;
    return () => {
      if (left) return Promise.resolve();
      left = true;
      return this.#leave(name, joined, delivery);
    };
  }

  isReady(): boolean {
    return this.#ready;
  }

  onGap(listener: (phase: GapPhase) => void): () => void {
    this.#gapListeners.add(listener);
    return () => this.#gapListeners.delete(listener);
  }

  onReadyChange(listener: (ready: boolean) => void): () => void {
    this.#readyListeners.add(listener);
    return () => this.#readyListeners.delete(listener);
  }

  /** Distinct channels and patterns this node is subscribed to in Redis (the probe excluded). */
  get redisSubscriptions(): number {
    return this.#interests.size;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#probe.stop();
    this.#interests.clear();
    this.#notes.clear();
    this.#readyListeners.clear();
    this.#gapListeners.clear();
    this.#ready = false;
    await Promise.all([quit(this.#commands), quit(this.#subscriber)]);
  }

  /** The error a failed command becomes; a Redis refusal is warned once until a publish succeeds. */
  #failed(err: unknown): PlateError {
    return unavailable(err, this.#refusals.failed(err));
  }

  /** Drops one listener; the last one of a name unsubscribes this node from it in Redis. */
  async #leave(name: string, interest: Interest, delivery: MessageListener): Promise<void> {
    if (!interest.listeners.delete(delivery) || interest.listeners.size > 0) return;
    if (this.#interests.get(name) !== interest) return;
    this.#interests.delete(name);
    // A subscribe of the same name that arrives now sends its SUBSCRIBE after this UNSUBSCRIBE on the
    // same connection; Redis applies them in order, so that newcomer is never left deaf.
    try {
      if (interest.pattern) await this.#subscriber.punsubscribe(name);
      else await this.#subscriber.unsubscribe(name);
    } catch {
      // Unreachable: the interest is already forgotten, and #resubscribe restores only live ones.
    }
  }

  async #redisSubscribe(name: string, pattern: boolean): Promise<void> {
    if (pattern) await this.#subscriber.psubscribe(name);
    else await this.#subscriber.subscribe(name);
  }

  /** After every (re)connect of the subscriber: subscribe again to the probe and every live interest. */
  async #resubscribe(): Promise<void> {
    const channels = [this.#probeChannel, ...this.#notes.keys()];
    const patterns: string[] = [];
    for (const [name, interest] of this.#interests) (interest.pattern ? patterns : channels).push(name);
    try {
      await this.#subscriber.subscribe(...channels);
      if (patterns.length > 0) await this.#subscriber.psubscribe(...patterns);
    } catch (err) {
      this.#options.warn?.("redis resubscribe failed; reconnecting", { error: String(err) });
      this.#subscriber.disconnect(true);
      return;
    }
    this.#subscriberReady = true;
    this.#deaf = false;
    this.#update();
    if (this.#subscribedOnce) for (const listener of this.#gapListeners) listener("restored");
    this.#subscribedOnce = true;
  }

  #onMessage(name: string, channel: string, payload: string): void {
    if (channel === this.#probeChannel) {
      this.#probe.returned(payload);
      return;
    }
    const notes = this.#notes.get(channel);
    if (notes !== undefined) {
      for (const listener of notes) {
        try {
          listener(payload);
        } catch {
          // A listener must not throw; one that does cannot stop the others.
        }
      }
      return;
    }
    const interest = this.#interests.get(name);
    if (interest === undefined) return;
    const message = this.#decode(name, channel, payload);
    if (message === undefined) return;
    for (const listener of interest.listeners) {
      try {
        listener(message);
      } catch {
        // A listener must not throw (see MessageListener); one that does cannot stop the others.
      }
    }
  }

  #decode(name: string, channel: string, payload: string): Message | undefined {
    if (channel === this.#lastChannel && payload === this.#lastPayload && !this.#lastNames.includes(name)) {
      this.#lastNames.push(name);
      return this.#lastMessage;
    }
    const where = this.#names.parse(channel);
    if (where === undefined) return undefined;
    let message: Message;
    if (payload.startsWith(MARK)) {
      const decoded = decodeNodePayload(where.plateId, where.channel, payload);
      if (decoded === undefined) return undefined;
      message = decoded;
    } else {
      // Published straight into Redis by a backend: JSON when it parses, else a string. It carries no
      // id or time, so each receiving node gives it its own.
      message = {
        plateId: where.plateId,
        channel: where.channel,
        id: this.#options.newMessageId(),
        timestamp: new Date().toISOString(),
        body: bodyFromForeignPayload(payload),
      };
    }
    this.#lastChannel = channel;
    this.#lastPayload = payload;
    this.#lastMessage = message;
    this.#lastNames.length = 0;
    this.#lastNames.push(name);
    return message;
  }

  #probeLost(): void {
    if (this.#closed) return;
    this.#options.warn?.("redis subscriber is deaf (probe lost); reconnecting it", { probeTimeoutMs: this.#options.probeTimeoutMs });
    this.#options.onProbeLost?.();
    this.#deaf = true;
    this.#deliveryCut();
    this.#update();
    this.#subscriber.disconnect(true);
  }

  /**
   * The subscriber connection stopped delivering (closed, or found deaf). The gap listeners hear
   * `"cut"` once per gap, before anything the restored delivery brings (see Broker.onGap): Redis
   * sends a message published right after a (P)SUBSCRIBE in the same read as its answer, and
   * ioredis hands it out before the answer's promise lets #resubscribe go on (seen: a connected
   * subscriber got no reset after Redis restarted empty, 1 run in ~20 under CPU load).
   */
  #deliveryCut(): void {
    if (this.#subscribedOnce && this.#subscriberReady) for (const listener of this.#gapListeners) listener("cut");
    this.#subscriberReady = false;
  }

  #update(): void {
    const ready = !this.#closed && !this.#deaf && this.#subscriberReady && this.#commands.status === "ready";
    if (ready === this.#ready) return;
    this.#ready = ready;
    if (!ready) this.#options.warn?.("redis broker not ready");
    for (const listener of this.#readyListeners) listener(ready);
  }
}

/** `broker_unavailable`, saying what Redis refused (OOM, READONLY, ...) or that it could not be reached. */
function unavailable(cause?: unknown, refusal?: RedisRefusal): PlateError {
  const what = refusal?.what ?? "Redis is unreachable";
  return new PlateError("broker_unavailable", `${what}; nothing was published, retry shortly.`, {
    retryAfterS: 1,
    cause,
  });
}

async function quit(redis: Redis): Promise<void> {
  try {
    await redis.quit();
  } catch {
    redis.disconnect();
  }
}
