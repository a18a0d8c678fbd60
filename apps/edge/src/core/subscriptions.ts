import { PlateError, comparePositions, parsePosition, toPlateError, topicKey } from "@plate/protocol";
import type { ChannelName, FilterSpec, MessageId, PlateId, Ref, SubscriptionInfo, SubscriptionName, Topic } from "@plate/protocol";
import type { Broker, Replay, Retention } from "@plate/broker";
import type { Connection, Start } from "./connection.js";
import type { Logger } from "../log.js";
import type { Metrics } from "../metrics.js";
import type { ConnectionSlot, Connections } from "./connections.js";
import type { Fanout } from "./fanout.js";
import type { Filters } from "./filters.js";
import type { Limits } from "./tenancy.js";
import type { Subscription } from "./subscription.js";
import { nameOf } from "./subscription.js";

/** A subscription asked for: its topic, and the id to resume after. */
export interface Asked {
  readonly topic: Topic;
  readonly since?: string | undefined;
  /** False: its own connection's publications are not delivered to it (route 12's `self`). */
  readonly self?: boolean | undefined;
  /** The filter its messages must match (route 13), as the client wrote it. */
  readonly filter?: FilterSpec | undefined;
}

/** How a connection opens. */
export interface OpenOptions {
  /** A client token's `max_dur`, in ms; 0 = unlimited. */
  readonly maxDurationMs?: number;
  /** The request that opened it, for the log. */
  readonly requestId?: string | undefined;
  /** A connection slot of its plate held for it (`Connections.reserve`), which it takes over. */
  readonly slot?: ConnectionSlot | undefined;
  /**
   * The filter its credential enforces on every subscription it makes (a client path minted with
   * one, route 4): ANDed with the client's own, so the client can narrow it, never widen it.
   */
  readonly filter?: FilterSpec | undefined;
  /** Refuses the connect the one way (log, count: `http/refusals.ts`), answering the error to end it with. */
  readonly refuse?: ((err: unknown) => PlateError) | undefined;
}

/**
 * A subscription's life, whatever the transport: opened with its connection or asked for later
 * (`subscribe`), ended by `unsubscribe` or with its connection.
 *
 * The order of steps is part of the no-gap rule (delivery.ts): a subscription's broker
 * subscription is active before its history is read, and it starts (its `subscribed` frame, its
 * replay, the live messages it held) only once the history is read, all in one turn. A connection
 * opening one fresh subscription to a topic the node already delivers starts where that delivery
 * is instead (`Fanout.head`, `HEAD_REUSE_MS`), in the turn it attached.
 */
export class Subscriptions {
  constructor(
    private readonly connections: Connections,
    private readonly fanout: Fanout,
    private readonly broker: Broker,
    private readonly retention: Retention,
    private readonly metrics: Metrics,
    private readonly log: Logger,
    private readonly filters: Filters,
    /** A plate's limits in force (its own, else the node's settings). */
    private readonly limitsOf: (plateId: PlateId) => Promise<Limits>,
    /** `HEAD_REUSE_MS`: how recent what the fan-out knows of a topic's head must be to stand for a read. */
    private readonly headReuseMs = 0,
  ) {}

  /**
   * Opens an authorized connection with its first subscriptions: registers it (the per-plate
   * limit), subscribes them in the fan-out, reads their history, then sends `ready` (v1: the one
   * topic; v2: every subscription with its position), what each missed (or `reset`), and starts
   * its `max_dur` clock. It never throws: a connection that cannot open is ended with the error's
   * code, which its transport turns into an HTTP answer or a close frame.
   */
  async open(conn: Connection, asked: readonly Asked[], options: OpenOptions = {}): Promise<void> {
    const started = Date.now();
    // Only at debug: a hook per connection is memory held by every idle one.
    if (this.log.debugEnabled) conn.onEnd((reason) => {
      this.log.debug("connection ended", {
        requestId: options.requestId,
        plateId: conn.plateId,
        transport: conn.transport,
        reason,
        seconds: Math.round((Date.now() - started) / 1000),
      });
    });
    let subs: Subscription[];
    let replays: Replay[];
    try {
      conn.enforcedFilter = options.filter;
      // Registered before anything is awaited, so that a revocation heard meanwhile closes it too;
      // then held to the plate's own connection limit (a slot held for it was already).
      this.connections.add(conn, options.slot, 0);
      const limits = await this.limitsOf(conn.plateId);
      await this.connections.learn(conn.plateId, limits.connections);
      if (conn.ended) return;
      this.connections.checkOver(conn.plateId, limits.connections);
      if (asked.length > limits.subscriptionsPerConnection) {
        throw new PlateError("bad_request", `A connection of this plate may hold at most ${limits.subscriptionsPerConnection} subscriptions.`);
      }
      const filters = asked.map((a) => this.#filterOf(conn, a, limits.filters));
      subs = asked.map((a, i) => conn.adopt(a.topic, a.self, filters[i]));
      await Promise.all(subs.map((sub) => this.fanout.attach(sub)));
      if (conn.ended) return;
      // One fresh subscription may start where the node's feed of its topic is (`Fanout.head`):
      // nothing to read. Several are read at one instant, so the stream's ids only grow.
      const head = subs.length === 1 && asked[0]!.since === undefined ? this.fanout.head(subs[0]!, this.headReuseMs) : undefined;
      replays = head === undefined ? await this.#readAll(conn.plateId, asked) : [{ complete: true, messages: [], head: head as MessageId }];
    } catch (err) {
      const error = options.refuse?.(err) ?? toPlateError(err);
      conn.end(error.code, error.message);
      return;
    }
    if (conn.ended) return;
    const starts: Start[] = subs.map((sub, i) => this.#started(sub, replays[i]!, asked[i]!.since));
    if (conn.wire === "v1") {
      const { topic } = subs[0]!;
      const replay = replays[0]!;
      const since = asked[0]!.since;
      conn.begin(
        { type: "ready", clientId: conn.clientId, channel: topic.channel, pattern: topic.pattern, position: replay.head },
        resumeFrom(replay, since),
      );
    } else {
      let streamId: string | undefined;
      for (let i = 0; i < subs.length; i++) streamId = earlier(streamId, resumeFrom(replays[i]!, asked[i]!.since));
      conn.begin({ type: "ready", clientId: conn.clientId, subscriptions: subs.map(infoOf) }, streamId);
    }
    conn.startSubscriptions(starts);
    const maxDurationMs = options.maxDurationMs ?? 0;
    if (maxDurationMs > 0) {
      const timer = setTimeout(() => conn.end("max_duration_reached"), maxDurationMs);
      conn.onEnd(() => clearTimeout(timer));
    }
  }

  /**
   * Adds a subscription to an open connection: its `subscribed` frame (with `ref`), then what it
   * missed after `since` (or `reset`), then live messages. Throws the refusal (`conflict` when it
   * is already subscribed, `bad_request` past the plate's subscriptions per connection, `broker_unavailable`), leaving
   * nothing behind; answers what the client was told, or undefined when the connection ended first.
   */
  async subscribe(conn: Connection, asked: Asked, ref?: Ref): Promise<SubscriptionInfo | undefined> {
    const { topic, since } = asked;
    if (conn.subscriptions.has(topicKey(topic))) {
      throw new PlateError("conflict", "This connection is already subscribed to that; unsubscribe first.");
    }
    // The plate's limit in force (its own, else the node's `MAX_SUBSCRIPTIONS_PER_CONNECTION`).
    const limits = await this.limitsOf(conn.plateId);
    const { subscriptionsPerConnection } = limits;
    if (conn.subscriptions.size >= subscriptionsPerConnection) {
      throw new PlateError("bad_request", `A connection may hold at most ${subscriptionsPerConnection} subscriptions; unsubscribe from some first.`);
    }
    const sub = conn.adopt(topic, asked.self, this.#filterOf(conn, asked, limits.filters));
    let replay: Replay;
    try {
      await this.fanout.attach(sub);
      if (sub.ended || conn.ended) return undefined;
      [replay] = (await this.#readAll(conn.plateId, [asked])) as [Replay];
    } catch (err) {
      sub.end();
      throw err;
    }
    if (sub.ended || conn.ended) return undefined;
    const start = this.#started(sub, replay, since);
    const info = infoOf(sub);
    conn.startSubscriptions([start], { type: "subscribed", ...(ref === undefined ? {} : { ref }), ...info });
    return info;
  }

  /** The filter a subscription asked for must match, compiled: the connection's enforced one and the client's, ANDed. */
  #filterOf(conn: Connection, asked: Asked, max: number): Subscription["filter"] {
    const parts = [conn.enforcedFilter, asked.filter].filter((f): f is FilterSpec => f !== undefined);
    if (parts.length === 0) return undefined;
    return { filter: this.filters.compile(parts, topicKey(asked.topic)), filters: this.filters, max };
  }

  /**
   * Ends one subscription of a connection and tells the client (`unsubscribed`, with `ref`, or
   * with `reason` when the server ends it): nothing more is delivered for it. Throws `not_found`
   * when the connection has no such subscription.
   */
  unsubscribe(conn: Connection, name: SubscriptionName, ref?: Ref): void {
    const topic = topicOf(conn, name);
    const sub = conn.subscriptions.get(topicKey(topic));
    if (sub === undefined) throw new PlateError("not_found", "This connection has no such subscription.");
    sub.end();
    conn.frame({ type: "unsubscribed", ...(ref === undefined ? {} : { ref }), ...sub.name });
  }

  #started(sub: Subscription, replay: Replay, since: string | undefined): Start {
    sub.position = replay.head;
    this.fanout.started(sub, replay.head);
    if (!replay.complete) this.metrics.resets.inc({ reason: replay.reason });
    return { sub, replay, since };
  }

  /**
   * The histories of subscriptions (a connection's first ones, or one asked for later), read at
   * one instant (`Broker.histories`):
   * their replays, merged, and the live messages after them meet at one head, so a stream's ids
   * only grow and a client resuming from the last id it saw misses nothing.
   */
  async #readAll(plateId: PlateId, asked: readonly Asked[]): Promise<Replay[]> {
    if (asked.length === 0) return [];
    // A pattern is read under its text, a channel that never has a history: the head only.
    const reads = asked.map(({ topic, since }) => ({ channel: topic.channel as string as ChannelName, since: topic.pattern ? undefined : since }));
    const replays = await this.broker.histories(plateId, reads, this.retention);
    return replays.map((replay, i) =>
      asked[i]!.topic.pattern && asked[i]!.since !== undefined ? { complete: false, reason: "pattern", head: replay.head } : replay,
    );
  }
}

/** What the client is told of a subscription: its name and starting position. */
export function infoOf(sub: Subscription): SubscriptionInfo {
  return sub.position === undefined ? sub.name : { ...sub.name, position: sub.position };
}

/** The topic of `name` in a connection's plate. */
export function topicOf(conn: Pick<Connection, "plateId">, name: SubscriptionName): Topic {
  return "channel" in name
    ? { plateId: conn.plateId, pattern: false, channel: name.channel }
    : { plateId: conn.plateId, pattern: true, channel: name.pattern };
}

/**
 * The id a client resumes from after the first frame, until a message arrives (SSE `id:`): `since`
 * on a complete resume (it has nothing past it until the replayed messages, each with its id,
 * reach it, so a drop during the replay resumes from there again), otherwise the starting position.
 * Parsed, so only a well-formed id is ever written back.
 */
function resumeFrom(replay: Replay, since: string | undefined): string | undefined {
  if (replay.complete && since !== undefined && parsePosition(since) !== undefined) return since;
  return replay.head;
}

/** Of two ids, the one to resume from so that neither's subscriptions miss anything: the earlier. */
function earlier(a: string | undefined, b: string | undefined): string | undefined {
  if (a === undefined) return b;
  if (b === undefined) return a;
  const x = parsePosition(a);
  const y = parsePosition(b);
  if (x === undefined || y === undefined || x.epoch !== y.epoch) return a;
  return comparePositions(x, y) <= 0 ? a : b;
}

export { nameOf };
