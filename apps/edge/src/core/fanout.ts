import { PlateError } from "@plate/protocol";
import type { ChannelName, Message, PlateId, Topic } from "@plate/protocol";
import type { Broker, Retention, Unsubscribe } from "@plate/broker";
import type { Logger } from "../log.js";
import type { Metrics } from "../metrics.js";
import { TopicFeed } from "./delivery.js";
import { Outbound } from "./outbound.js";
import type { Subscription } from "./subscription.js";

interface TopicEntry {
  readonly topic: Topic;
  readonly subscribers: Set<Subscription>;
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

  constructor(
    private readonly broker: Broker,
    private readonly metrics: Metrics,
    private readonly log: Logger,
    private readonly retention: Retention,
    /** See `FeedPorts.beforeFill`. */
    private readonly beforeFill: () => Promise<void> = () => Promise.resolve(),
    /** Told when this node gets its first subscriber of a channel (not a pattern), and loses its last. */
    private readonly channels?: ChannelWatch,
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
    const key = sub.key;
    let entry = this.#topics.get(key);
    if (entry === undefined) {
      const topic = sub.topic;
      const subscribers = new Set<Subscription>();
      const feed: TopicFeed = new TopicFeed({
        topic,
        history: (since) => this.broker.history(topic.plateId, topic.channel as Message["channel"], since, this.retention),
        beforeFill: this.beforeFill,
        dispatch: (message) => this.#dispatch(subscribers, message),
        reset: (reason) => {
          this.log.warn("subscribers may have missed messages", { plateId: topic.plateId, reason });
          for (const s of subscribers) s.reset(reason);
          this.metrics.resets.inc({ reason }, subscribers.size);
        },
      });
      // The listener runs only once `subscribe` has returned (one thread).
      const active = this.broker.subscribe(topic, (message) => feed.receive(message));
      const created: TopicEntry = { topic, subscribers, active, feed };
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
    joined.subscribers.add(sub);
    sub.onEnd(() => this.#detach(key, joined, sub));
    try {
      await joined.active;
    } catch (err) {
      joined.subscribers.delete(sub);
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

  /** Distinct topics this node is subscribed to. */
  get topicCount(): number {
    return this.#topics.size;
  }

  #detach(key: string, entry: TopicEntry, sub: Subscription): void {
    if (!entry.subscribers.delete(sub) || entry.subscribers.size > 0) return;
    if (this.#topics.get(key) !== entry) return;
    this.#topics.delete(key);
    this.metrics.subscriptions.set(this.#topics.size);
    entry.active.then(
      (unsubscribe) => {
        if (!entry.topic.pattern) this.channels?.closed(entry.topic.plateId, entry.topic.channel);
        return unsubscribe();
      },
      () => undefined,
    ).catch((err: unknown) => this.log.warn("broker unsubscribe failed", { error: String(err) }));
  }

  #dispatch(subscribers: ReadonlySet<Subscription>, message: Message): void {
    let out = this.#lastOutbound;
    if (this.#lastMessage !== message || out === undefined) {
      out = new Outbound(message);
      this.#lastMessage = message;
      this.#lastOutbound = out;
      this.metrics.deliverySeconds.observe(Math.max(0, Date.now() - Date.parse(message.timestamp)) / 1000);
    }
    let sse = 0;
    let ws = 0;
    for (const sub of subscribers) {
      if (!sub.deliver(out)) continue;
      if (sub.conn.transport === "sse") sse += 1;
      else ws += 1;
    }
    if (sse > 0) this.metrics.delivered.inc({ transport: "sse" }, sse);
    if (ws > 0) this.metrics.delivered.inc({ transport: "ws" }, ws);
  }
}
