import { topicKey } from "@plate/protocol";
import type { Message, ResetReason, SubscriptionName, Topic } from "@plate/protocol";
import type { Connection } from "./connection.js";
import { Seam } from "./delivery.js";
import type { Filter, Filters } from "./filters.js";
import { filterDocument } from "./filters.js";
import type { Outbound } from "./outbound.js";

/**
 * What one connection listens to: one channel or one pattern of its plate, from the moment it is
 * asked for until it is unsubscribed or its connection ends. The fan-out hands it live messages;
 * its `Seam` decides which of them go on to the connection (see delivery.ts).
 *
 * Lifecycle: created and added to its connection (`Connection.adopt`), subscribed in the fan-out,
 * started once its history was read (`Connection.startSubscriptions`), ended once (`end`): its
 * connection forgets it, and its `onEnd` hook unhooks it from the fan-out.
 */
export class Subscription {
  readonly key: string;
  readonly seam = new Seam();
  #ended = false;
  /** Where it started in the plate's history (the head read when it subscribed), once known. */
  position: string | undefined;
  /**
   * Its end hook (the fan-out's detach); one slot, not an array: thousands are held per node. The
   * hook is told which subscription ended, so one function serves them all (see Fanout.attach).
   */
  #onEnd: ((sub: Subscription) => void) | undefined;

  constructor(
    readonly topic: Topic,
    readonly conn: Connection,
    /** Whether it receives what its own connection publishes (route 12's `self`, default true). */
    readonly self = true,
    /** The filter its messages must match (route 13), with the engine that holds it; none: every message. */
    readonly filter?: { readonly filter: Filter; readonly filters: Filters; /** The plate's `FILTERS_PER_PLATE` in force. */ readonly max: number },
  ) {
    this.key = topicKey(topic);
  }

  get ended(): boolean {
    return this.#ended;
  }

  /** How the wire names it: `{"channel":…}` or `{"pattern":…}`. */
  get name(): SubscriptionName {
    return nameOf(this.topic);
  }

  /**
   * A live message from the fan-out. Hot path: once per message per subscription, no allocation.
   * Returns whether it was handed on (or held for the start): false for a copy the client already
   * has, or when its connection could not take it (and was dropped). The fan-out counts the trues
   * as deliveries.
   */
  deliver(out: Outbound): boolean {
    if (this.#ended) return false;
    const verdict = this.seam.offer(out);
    if (verdict === "pass") return this.takes(out) && this.conn.emit(this, out);
    if (verdict === "held") return this.conn.holding(out);
    return false;
  }

  /** Whether `out` is for it: not when its own connection published it and it said `self:false`. */
  takes(out: Outbound): boolean {
    return this.self || out.sender !== this.conn.clientId;
  }

  /**
   * Whether a message read from the history is for it (its filter, tested for it alone). Live
   * messages are tested once per topic in the fan-out instead.
   */
  accepts(message: Message): boolean {
    const filter = this.filter;
    return filter === undefined || filter.filters.matches(filterDocument(message.body, message.event), filter.filter);
  }

  /** The fan-out's news that it may have missed messages; told once it has started. */
  reset(reason: ResetReason): void {
    if (this.#ended || !this.seam.started) return;
    this.conn.resetFor(this, reason);
  }

  /** Ends it once: it gets nothing more, its connection lets go of it, and its hooks run. */
  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.conn.forget(this);
    this.#onEnd?.(this);
  }

  /** Runs `hook` once when it ends, with it (after any hook given before). */
  onEnd(hook: (sub: Subscription) => void): void {
    const before = this.#onEnd;
    this.#onEnd = before === undefined ? hook : (sub) => (before(sub), hook(sub));
  }
}

/** How the wire names a topic. */
export function nameOf(topic: Topic): SubscriptionName {
  return topic.pattern ? { pattern: topic.channel } : { channel: topic.channel };
}
