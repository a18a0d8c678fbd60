import { PlateError, comparePositions, parsePosition, topicKey } from "@plate/protocol";
import type { Message, ResetReason, Topic } from "@plate/protocol";
import type { Broker, Retention, Unsubscribe } from "@plate/broker";
import type { Logger } from "../log.js";
import type { Metrics } from "../metrics.js";
import type { Connection } from "./connection.js";
import { Outbound } from "./outbound.js";

interface TopicEntry {
  readonly topic: Topic;
  readonly subscribers: Set<Connection>;
  /** The broker subscription; resolves once it is active. */
  readonly active: Promise<Unsubscribe>;
  /**
   * The last id handed to the subscribers (or the position they started from): after a gap in the
   * broker's delivery, the history after it is what they missed.
   */
  lastId: string | undefined;
  /** Live messages held while a gap is being filled from the history; undefined otherwise. */
  held: Message[] | undefined;
  /** Another gap came while this one was being filled: the history is read again before `held` goes out. */
  refill: boolean;
  /**
   * After a gap was filled from the history, until a live message past `lastId` arrives: the live
   * copy of a message the history already gave can come later (on Redis the history is read on
   * another connection), and is not handed over twice.
   */
  fenced: boolean;
}

/**
 * Local fan-out: one broker subscription per topic that at least one local connection needs,
 * whatever the number of connections. A message from the broker is encoded once (`Outbound`) and
 * the same bytes are written to every subscriber of every matching topic.
 */
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
    /**
     * Awaited after a gap before what was missed is handed over (live messages are held
     * meanwhile): the node uses it to close connections whose key was revoked during the gap
     * first, so they get nothing published after their revocation. Never rejects.
     */
    private readonly beforeFill: () => Promise<void> = () => Promise.resolve(),
  ) {
    broker.onGap(() => {
      for (const entry of this.#topics.values()) void this.#fillGap(entry);
    });
  }

  /**
   * Subscribes a connection to its topic. Resolves once the broker delivers that topic to this
   * node; rejects with `broker_unavailable` (and leaves nothing behind) when it cannot.
   */
  async attach(conn: Connection): Promise<void> {
    const key = topicKey(conn.topic);
    let entry = this.#topics.get(key);
    if (entry === undefined) {
      const created: TopicEntry = {
        topic: conn.topic,
        subscribers: new Set(),
        // The listener runs only once `subscribe` has returned and `created` exists (one thread).
        active: this.broker.subscribe(conn.topic, (message) => this.#receive(created, message)),
        lastId: undefined,
        held: undefined,
        refill: false,
        fenced: false,
      };
      const active = created.active;
      entry = created;
      this.#topics.set(key, entry);
      this.metrics.subscriptions.set(this.#topics.size);
      active.catch(() => {
        if (this.#topics.get(key) === entry) this.#topics.delete(key);
        this.metrics.subscriptions.set(this.#topics.size);
      });
    }
    const joined = entry;
    joined.subscribers.add(conn);
    conn.onEnd(() => this.#detach(key, joined, conn));
    try {
      await joined.active;
    } catch (err) {
      joined.subscribers.delete(conn);
      throw new PlateError("broker_unavailable", "The broker is unreachable; retry shortly.", {
        retryAfterS: 1,
        cause: err,
      });
    }
  }

  /**
   * Notes where a topic's subscribers start in the history (the head read when one subscribed),
   * unless a message was already handed to them.
   */
  started(topic: Topic, position: string): void {
    const entry = this.#topics.get(topicKey(topic));
    if (entry !== undefined && entry.lastId === undefined) entry.lastId = position;
  }

  /** Distinct topics this node is subscribed to. */
  get topicCount(): number {
    return this.#topics.size;
  }

  #detach(key: string, entry: TopicEntry, conn: Connection): void {
    if (!entry.subscribers.delete(conn) || entry.subscribers.size > 0) return;
    if (this.#topics.get(key) !== entry) return;
    this.#topics.delete(key);
    this.metrics.subscriptions.set(this.#topics.size);
    entry.active.then(
      (unsubscribe) => unsubscribe(),
      () => undefined,
    ).catch((err: unknown) => this.log.warn("broker unsubscribe failed", { error: String(err) }));
  }

  #receive(entry: TopicEntry, message: Message): void {
    if (entry.held !== undefined) {
      entry.held.push(message);
      return;
    }
    if (entry.fenced) {
      if (!after(message.id, entry.lastId)) return;
      entry.fenced = false;
    }
    entry.lastId = message.id;
    this.#dispatch(entry.subscribers, message);
  }

  /**
   * After a gap in the broker's delivery: holds live messages, reads what was published after the
   * topic's last id, hands over what its subscribers missed, then what was held (none twice); or,
   * when the history cannot tell (a pattern, an epoch change, dropped messages), sends them `reset`.
   */
  async #fillGap(entry: TopicEntry): Promise<void> {
    if (entry.subscribers.size === 0) return;
    if (entry.held !== undefined) {
      // Another cut while this one is being filled: read again after what the last read gave.
      entry.refill = true;
      return;
    }
    entry.held = [];
    await this.beforeFill();
    const missed: Message[] = [];
    let reset: ResetReason | undefined;
    if (entry.topic.pattern || entry.lastId === undefined) {
      reset = "gap";
    } else {
      do {
        entry.refill = false;
        try {
          const since = missed.at(-1)?.id ?? entry.lastId;
          const replay = await this.broker.history(entry.topic.plateId, entry.topic.channel, since, this.retention);
          if (replay.complete) missed.push(...replay.messages);
          else reset = replay.reason === "expired" ? "gap" : replay.reason;
        } catch {
          reset = "gap";
        }
      } while (entry.refill && reset === undefined);
    }
    const held = entry.held;
    entry.held = undefined;
    entry.refill = false;
    if (reset !== undefined) {
      this.log.warn("subscribers may have missed messages", { plateId: entry.topic.plateId, reason: reset });
      for (const conn of entry.subscribers) conn.reset(reset);
      this.metrics.resets.inc({ reason: reset }, entry.subscribers.size);
    }
    for (const message of [...missed, ...held]) {
      if (!after(message.id, entry.lastId)) continue;
      entry.lastId = message.id;
      this.#dispatch(entry.subscribers, message);
    }
    // Only messages read from the history can come again live (held ones came live).
    entry.fenced = missed.length > 0;
  }

  #dispatch(subscribers: ReadonlySet<Connection>, message: Message): void {
    let out = this.#lastOutbound;
    if (this.#lastMessage !== message || out === undefined) {
      out = new Outbound(message);
      this.#lastMessage = message;
      this.#lastOutbound = out;
      this.metrics.deliverySeconds.observe(Math.max(0, Date.now() - Date.parse(message.timestamp)) / 1000);
    }
    let sse = 0;
    let ws = 0;
    for (const conn of subscribers) {
      if (!conn.deliver(out)) continue;
      if (conn.transport === "sse") sse += 1;
      else ws += 1;
    }
    if (sse > 0) this.metrics.delivered.inc({ transport: "sse" }, sse);
    if (ws > 0) this.metrics.delivered.inc({ transport: "ws" }, ws);
  }
}

/** Whether `id` comes after `last` in the history (ids that are not positions always count as new). */
function after(id: string, last: string | undefined): boolean {
  if (last === undefined) return true;
  const a = parsePosition(id);
  const b = parsePosition(last);
  if (a === undefined || b === undefined || a.epoch !== b.epoch) return true;
  return comparePositions(a, b) > 0;
}
