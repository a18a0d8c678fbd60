import { closeDirectBatch, openDirectBatch } from "@plate/direct-send";
import { PlateError } from "@plate/protocol";
import type { ChannelName, Message, PlateId, Topic } from "@plate/protocol";
import type { Broker, Retention, Unsubscribe } from "@plate/broker";
import type { Logger } from "../log.js";
import type { Metrics } from "../metrics.js";
import { TopicFeed } from "./delivery.js";
import { filterDocument } from "./filters.js";
import type { Filters } from "./filters.js";
import type { Usage } from "./usage.js";
import { Outbound } from "./outbound.js";
import type { Subscription } from "./subscription.js";

interface TopicEntry {
  readonly topic: Topic;
  /** Its subscriptions without a filter: every message goes to each. */
  readonly subscribers: Set<Subscription>;
  /** Its filtered subscriptions by filter id (route 13): a message goes to those whose filter it matches. */
  readonly filtered: Map<string, Set<Subscription>>;
  /** The broker subscription; resolves once it is active. */
  readonly active: Promise<Unsubscribe>;
  /** The topic's stream across cuts in the broker's delivery (see delivery.ts). */
  readonly feed: TopicFeed;
}

/**
 * Local fan-out: one broker subscription per topic that at least one local subscription needs,
 * whatever the number of subscriptions. A message from the broker is encoded once (`Outbound`) and
 * the same bytes are written to every subscriber of every matching topic. What to hand over after
 * a cut in the broker's delivery is the `TopicFeed`'s to decide (delivery.ts).
 */
/** Who is told when this node's first subscriber of a channel arrives and its last leaves (see `ChannelEvents`). */
export interface ChannelWatch {
  opened(plateId: PlateId, channel: ChannelName): void;
  closed(plateId: PlateId, channel: ChannelName): void;
}

export class Fanout {
  readonly #topics = new Map<string, TopicEntry>();
  /**
   * The last message encoded and its bytes. A message matching several local topics (a channel and
   * a pattern, say) is handed over once per topic, back to back; this reuses its encoding.
   */
  #lastMessage: Message | undefined;
  #lastOutbound: Outbound | undefined;
  /** The document the filters of the last message's topics are tested against, made once for all of them. */
  #lastDocument: Record<string, unknown> | undefined;
  /** The last timestamp read for the delivery latency metric, and its time in ms. */
  #lastTimestamp = "";
  #lastTimestampMs = 0;

  constructor(
    private readonly broker: Broker,
    private readonly metrics: Metrics,
    private readonly log: Logger,
    private readonly retention: Retention,
    /** See `FeedPorts.beforeFill`. */
    private readonly beforeFill: () => Promise<void> = () => Promise.resolve(),
    /** Told when this node gets its first subscriber of a channel (not a pattern), and loses its last. */
    private readonly channels?: ChannelWatch,
    /** The node's filter engine (route 13), which holds the filters of every topic's filtered subscriptions. */
    private readonly filters?: Filters,
    /** Where deliveries are metered, per plate. */
    private readonly usage?: Pick<Usage, "count">,
  ) {
    // On Redis Cluster a cut names the plates of one master; the others' feeds go on untouched.
    broker.onGap((phase, plates) => {
      for (const entry of this.#topics.values()) {
        if (plates !== undefined && !plates.has(entry.topic.plateId)) continue;
        if (phase === "cut") entry.feed.cut();
        else void entry.feed.restored();
      }
    });
  }

  /**
   * Subscribes a subscription to its topic. Resolves once the broker delivers that topic to this
   * node; rejects with `broker_unavailable` (and leaves nothing behind) when it cannot.
   */
  async attach(sub: Subscription): Promise<void> {
    // Counted against its plate first (`FILTERS_PER_PLATE`): one too many is refused before it is anywhere.
    sub.filter?.filters.admit(sub.topic.plateId, sub.filter.max);
    const key = sub.key;
    let entry = this.#topics.get(key);
    if (entry === undefined) {
      const topic = sub.topic;
      const subscribers = new Set<Subscription>();
      const filtered = new Map<string, Set<Subscription>>();
      const feed: TopicFeed = new TopicFeed({
        topic,
        history: (since) => this.broker.history(topic.plateId, topic.channel as Message["channel"], since, this.retention),
        beforeFill: this.beforeFill,
        dispatch: (message) => this.#dispatch(key, subscribers, filtered, message),
        reset: (reason, cause) => {
          this.log.warn("subscribers may have missed messages", {
            plateId: topic.plateId,
            reason,
            ...(cause === undefined ? {} : { error: cause instanceof Error ? cause.message : JSON.stringify(cause) }),
          });
          let told = 0;
          for (const s of subscribers) s.reset(reason);
          told += subscribers.size;
          for (const group of filtered.values()) {
            for (const s of group) s.reset(reason);
            told += group.size;
          }
          this.metrics.resets.inc({ reason }, told);
        },
      });
      // The listener runs only once `subscribe` has returned (one thread).
      const active = this.broker.subscribe(topic, (message) => feed.receive(message));
      const created: TopicEntry = { topic, subscribers, filtered, active, feed };
      entry = created;
      this.#topics.set(key, created);
      if (!topic.pattern) active.then(() => this.channels?.opened(topic.plateId, topic.channel), () => undefined);
      this.metrics.subscriptions.set(this.#topics.size);
      active.catch(() => {
        if (this.#topics.get(key) === created) this.#topics.delete(key);
        this.metrics.subscriptions.set(this.#topics.size);
      });
    }
    const joined = entry;
    this.#join(joined, sub);
    sub.onEnd(this.#ended);
    try {
      await joined.active;
    } catch (err) {
      this.#leave(joined, sub);
      throw new PlateError("broker_unavailable", "The broker is unreachable; retry shortly.", {
        retryAfterS: 1,
        cause: err,
      });
    }
  }

  /**
   * Notes where a subscription's topic's subscribers start in the history (the head read when one subscribed),
   * unless a message was already handed to them.
   */
  started(sub: Subscription, position: string): void {
    this.#topics.get(sub.key)?.feed.started(position);
  }

  /**
   * Where a new subscription of `sub`'s topic may start without a head read, or `undefined` when a
   * read must say (`TopicFeed.head`): called once it is attached, before anything is awaited.
   */
  head(sub: Subscription, maxAgeMs: number): string | undefined {
    return this.#topics.get(sub.key)?.feed.head(maxAgeMs);
  }

  /** Distinct topics this node is subscribed to. */
  get topicCount(): number {
    return this.#topics.size;
  }

  /** Adds a subscription to its topic's subscribers, or to its filter's group (its filter stored with the group's first, removed after its last). */
  #join(entry: TopicEntry, sub: Subscription): void {
    const filter = sub.filter;
    if (filter === undefined) {
      entry.subscribers.add(sub);
      return;
    }
    let group = entry.filtered.get(filter.filter.id);
    if (group === undefined) {
      group = new Set();
      entry.filtered.set(filter.filter.id, group);
      filter.filters.hold(filter.filter);
    }
    group.add(sub);
  }

  /** Takes a subscription out of its topic; answers whether it was in. */
  #leave(entry: TopicEntry, sub: Subscription): boolean {
    const filter = sub.filter;
    if (filter === undefined) return entry.subscribers.delete(sub);
    const group = entry.filtered.get(filter.filter.id);
    if (group === undefined || !group.delete(sub)) return false;
    if (group.size === 0) {
      entry.filtered.delete(filter.filter.id);
      filter.filters.letGo(filter.filter);
    }
    filter.filters.release(sub.topic.plateId);
    return true;
  }

  /**
   * Every subscription's end hook: one function, not a closure per subscription (120 bytes of each
   * idle connection). A subscription is in the entry its key names, or in one that failed and was
   * dropped, which it left then. The topic's last subscriber unsubscribes it.
   */
  readonly #ended = (sub: Subscription): void => {
    const entry = this.#topics.get(sub.key);
    if (entry === undefined || !this.#leave(entry, sub) || entry.subscribers.size > 0 || entry.filtered.size > 0) return;
    this.#topics.delete(sub.key);
    this.metrics.subscriptions.set(this.#topics.size);
    entry.active.then(
      (unsubscribe) => {
        if (!entry.topic.pattern) this.channels?.closed(entry.topic.plateId, entry.topic.channel);
        return unsubscribe();
      },
      () => undefined,
    ).catch((err: unknown) => this.log.warn("broker unsubscribe failed", { error: String(err) }));
  };

  /**
   * Hands a message of topic `index` to its subscribers: every unfiltered one, then the groups of
   * the filters it matches, which the filter engine answers in one test (route 13), however many
   * filters the topic holds.
   */
  #dispatch(index: string, subscribers: ReadonlySet<Subscription>, filtered: ReadonlyMap<string, ReadonlySet<Subscription>>, message: Message): void {
    let out = this.#lastOutbound;
    if (this.#lastMessage !== message || out === undefined) {
      out = new Outbound(message);
      this.#lastMessage = message;
      this.#lastOutbound = out;
      this.#lastDocument = undefined;
      // Messages of one millisecond share their timestamp: it is parsed once (Date.parse was 1.4% of
      // a node's instructions when publishing, load-tests W3 under callgrind).
      if (message.timestamp !== this.#lastTimestamp) {
        this.#lastTimestamp = message.timestamp;
        this.#lastTimestampMs = Date.parse(message.timestamp);
      }
      this.metrics.deliverySeconds.observe(Math.max(0, Date.now() - this.#lastTimestampMs) / 1000);
    }
    let sse = 0;
    let ws = 0;
    // The subscribers' writes of the same bytes go to the addon a batch at a time (`SUBSCRIBER_DIRECT_SEND`).
    openDirectBatch();
    try {
      for (const sub of subscribers) {
        if (!sub.deliver(out)) continue;
        if (sub.conn.transport === "sse") sse += 1;
        else ws += 1;
      }
      if (filtered.size > 0 && this.filters !== undefined) {
        const document = (this.#lastDocument ??= filterDocument(message.body, message.event));
        for (const id of this.filters.test(document, index)) {
          const group = filtered.get(id);
          if (group === undefined) continue;
          for (const sub of group) {
            if (!sub.deliver(out)) continue;
            if (sub.conn.transport === "sse") sse += 1;
            else ws += 1;
          }
        }
      }
    } finally {
      closeDirectBatch();
    }
    if (sse + ws > 0) this.usage?.count(message.plateId, "delivered", sse + ws);
    this.metrics.countDelivered(sse, ws);
  }
}
