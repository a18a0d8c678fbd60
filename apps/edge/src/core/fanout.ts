import { PlateError, topicKey } from "@plate/protocol";
import type { Message, Topic } from "@plate/protocol";
import type { Broker, Unsubscribe } from "@plate/broker";
import type { Logger } from "../log.js";
import type { Metrics } from "../metrics.js";
import type { Connection } from "./connection.js";
import { Outbound } from "./outbound.js";

interface TopicEntry {
  readonly topic: Topic;
  readonly subscribers: Set<Connection>;
  /** The broker subscription; resolves once it is active. */
  readonly active: Promise<Unsubscribe>;
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
  ) {}

  /**
   * Subscribes a connection to its topic. Resolves once the broker delivers that topic to this
   * node; rejects with `broker_unavailable` (and leaves nothing behind) when it cannot.
   */
  async attach(conn: Connection): Promise<void> {
    const key = topicKey(conn.topic);
    let entry = this.#topics.get(key);
    if (entry === undefined) {
      const subscribers = new Set<Connection>();
      const active = this.broker.subscribe(conn.topic, (message) => this.#dispatch(subscribers, message));
      entry = { topic: conn.topic, subscribers, active };
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
