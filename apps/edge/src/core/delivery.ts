import { comparePositions, parsePosition } from "@plate/protocol";
import type { Message, Position, ResetReason, Topic } from "@plate/protocol";
import type { Replay } from "@plate/broker";
import type { Outbound } from "./outbound.js";

/**
 * The delivery rules: no gap, no duplicate, order per channel. Every rule about which message a
 * client gets, and when, lives in this module, in three places a message passes in turn:
 *
 * 1. `TopicFeed` (one per topic a node listens to): the node's stream of a topic from the broker.
 *    After a cut in the broker's delivery it holds live messages, reads what was missed from the
 *    history, and hands over what was missed, then what it held, none twice.
 * 2. `Seam` (one per subscription): a subscription's start. Live messages that arrive before it
 *    starts wait; after a resume, live messages the replay already gave are dropped.
 * 3. `Overlap` (one per connection): a message goes to a connection once, even when several of its
 *    subscriptions match it, and in order per channel.
 *
 * The unit tests (delivery.test.ts) drive them with a fake broker, one table row per race found.
 */

/** Whether `id` comes after `last` in the history (ids that are not positions always count as new). */
export function after(id: string, last: string | undefined): boolean {
  if (last === undefined) return true;
  const a = parsePosition(id);
  const b = parsePosition(last);
  if (a === undefined || b === undefined || a.epoch !== b.epoch) return true;
  return comparePositions(a, b) > 0;
}

/**
 * The waits, in ms, before a fill's history read that failed (threw) is tried again, one per retry;
 * after the last, the fill gives `reset` ("gap"). A read that fails in passing (a command slow
 * under load, a slot being moved between Redis Cluster masters) then costs the subscribers a
 * second of delay, not a refetch of their state. Live messages are held meanwhile, as during any
 * fill, and no retry is made once `FILL_RETRY_MAX_HELD` are held.
 */
export const FILL_RETRY_DELAYS_MS: readonly number[] = [50, 200, 800];

/**
 * Live messages a feed may hold before it stops retrying a failed history read (and gives `reset`
 * at once, handing them over): a retry must not hold a busy topic's messages without bound.
 */
export const FILL_RETRY_MAX_HELD = 10_000;

/** What a `TopicFeed` works with: its topic's history, and where its messages go. */
export interface FeedPorts {
  readonly topic: Topic;
  /** The topic's messages after `since` (a channel's; never called for a pattern). */
  readonly history: (since: string) => Promise<Replay>;
  /**
   * Awaited after a cut, before what was missed is handed over (live messages are held
   * meanwhile): the node closes connections whose key was revoked during the cut first, so they
   * get nothing published after their revocation. Never rejects.
   */
  readonly beforeFill: () => Promise<void>;
  /** Hands one message to the topic's subscriptions. */
  readonly dispatch: (message: Message) => void;
  /**
   * Tells the topic's subscriptions they may have missed messages; `cause` is the error of the
   * last history read when the history could not be read at all.
   */
  readonly reset: (reason: ResetReason, cause?: unknown) => void;
  /** `FILL_RETRY_DELAYS_MS` unless given (tests give shorter ones). */
  readonly fillRetryDelaysMs?: readonly number[];
}

/**
 * One topic's stream on one node, across cuts in the broker's delivery.
 *
 * - `cut()`: from now, live messages are held (the broker tells of the cut before anything the
 *   restored delivery brings, see `Broker.onGap`).
 * - `restored()`: reads the history after the last id handed over, hands over what was missed,
 *   then what was held, skipping any id at or before the last one handed over. Another cut and
 *   restore during the read make it read again after what the last read gave (`refill`), before
 *   anything held goes out. A read that fails is tried again after each of `FILL_RETRY_DELAYS_MS`.
 *   A pattern, a lost epoch, dropped messages or a history that cannot be read: a `reset` instead.
 * - After a fill from the history, until a live message past the last id arrives, live copies of
 *   what the history gave are dropped (`fenced`): on Redis the history is read on another
 *   connection than the one live messages come by, so its answer can overtake them.
 */
export class TopicFeed {
  /**
   * The last id handed over (or the position the subscriptions started from): after a cut, the
   * history after it is what they missed.
   */
  #lastId: string | undefined;
  /** Live messages held from a cut until its fill is done; undefined otherwise. */
  #held: Message[] | undefined;
  /** Whether a fill is reading the history. */
  #filling = false;
  /** Another restore came while a fill was reading: it reads again before `held` goes out. */
  #refill = false;
  #fenced = false;
  /**
   * When `#lastId` came from a head read (`Date.now()`), or 0 when it is a message's id (its
   * position's `ms` says when it was published).
   */
  #lastIdReadAt = 0;
  /**
   * Whether every message of the topic up to `#lastId` was handed over: false from a cut until a
   * fill gave everything missed, or a live message came after one that could not.
   */
  #whole = true;

  constructor(private readonly ports: FeedPorts) {}

  /** Notes where the subscriptions start in the history (a head read), unless a message was already handed over. */
  started(position: string, nowMs = Date.now()): void {
    if (this.#lastId !== undefined) return;
    this.#lastId = position;
    this.#lastIdReadAt = nowMs;
  }

  /**
   * Where a new subscription of the topic may start without reading the history, or `undefined`
   * when this node cannot say: the last id handed over (or the first head read), while the
   * broker's delivery is whole. Every message of the topic after it is then either still to come
   * (and is handed over to the new subscription) or was never published, so it is what a head read
   * would answer for this topic, minus publishes on other channels. Only while recent: a head read
   * within `maxAgeMs`, or a message published within it, so that the position is at most that much
   * older than a read's (a resume from an old position of a quiet channel may be `expired`, see
   * `resumeRule`).
   */
  head(maxAgeMs: number, nowMs = Date.now()): string | undefined {
    const last = this.#lastId;
    if (maxAgeMs <= 0 || last === undefined || !this.#whole || this.#held !== undefined || this.#filling) return undefined;
    const at = this.#lastIdReadAt > 0 ? this.#lastIdReadAt : parsePosition(last)?.ms;
    return at !== undefined && nowMs - at <= maxAgeMs ? last : undefined;
  }

  /** A live message from the broker. */
  receive(message: Message): void {
    if (this.#held !== undefined) {
      this.#held.push(message);
      return;
    }
    if (this.#fenced) {
      if (!after(message.id, this.#lastId)) return;
      this.#fenced = false;
    }
    this.#lastId = message.id;
    this.#lastIdReadAt = 0;
    // Published after what a fill could not give (that was published before the delivery came back).
    this.#whole = true;
    this.ports.dispatch(message);
  }

  /** The broker's delivery was cut: hold live messages until the fill after `restored`. */
  cut(): void {
    this.#held ??= [];
    this.#whole = false;
  }

  /** The broker's delivery is back: fill what was missed (see the class). Never rejects. */
  async restored(): Promise<void> {
    if (this.#filling) {
      this.#refill = true;
      return;
    }
    this.#held ??= [];
    this.#filling = true;
    await this.ports.beforeFill();
    const { topic } = this.ports;
    const missed: Message[] = [];
    let reset: ResetReason | undefined;
    let cause: unknown;
    if (topic.pattern || this.#lastId === undefined) {
      reset = "gap";
    } else {
      const delays = this.ports.fillRetryDelaysMs ?? FILL_RETRY_DELAYS_MS;
      let failures = 0;
      do {
        this.#refill = false;
        try {
          const replay = await this.ports.history(missed.at(-1)?.id ?? this.#lastId);
          if (replay.complete) missed.push(...replay.messages);
          else reset = replay.reason === "expired" ? "gap" : replay.reason;
        } catch (err) {
          const delay = delays[failures++];
          if (delay === undefined || (this.#held?.length ?? 0) >= FILL_RETRY_MAX_HELD) {
            reset = "gap";
            cause = err;
          } else {
            await new Promise((resolve) => setTimeout(resolve, delay).unref());
            this.#refill = true;
          }
        }
      } while (this.#refill && reset === undefined);
    }
    const held = this.#held;
    this.#held = undefined;
    this.#filling = false;
    this.#refill = false;
    if (reset !== undefined) this.ports.reset(reset, cause);
    else this.#whole = true;
    for (const message of missed) this.#handOver(message);
    for (const message of held) this.#handOver(message);
    // Only messages read from the history can come again live (held ones came live).
    this.#fenced = missed.length > 0;
  }

  #handOver(message: Message): void {
    if (!after(message.id, this.#lastId)) return;
    this.#lastId = message.id;
    this.#lastIdReadAt = 0;
    this.ports.dispatch(message);
  }
}

/** What `Seam.offer` says of a live message. */
export type Verdict = "held" | "dropped" | "pass";

/**
 * One subscription's start: from its broker subscription (live messages may arrive) to its first
 * frame (`ready` or `subscribed`) and, on a resume, its replay.
 *
 * The history is read after the broker subscription is active, so a message published meanwhile is
 * both in the history and live: live messages that arrive before the start are held (`held`), and
 * after a resume, a live message at or before the last one replayed (or `since`) is dropped, until
 * the first one past it (live messages come in order). On Redis the history's answer can overtake
 * live messages, so that check holds for as long as it takes.
 */
export class Seam {
  #pending: Outbound[] | undefined = [];
  #seen: Position | undefined;

  /** Whether the subscription has started. */
  get started(): boolean {
    return this.#pending === undefined;
  }

  /** A live message for the subscription: held until the start, dropped when the replay gave it, or passed on. */
  offer(out: Outbound): Verdict {
    if (this.#pending !== undefined) {
      this.#pending.push(out);
      return "held";
    }
    if (this.#seen !== undefined) {
      const position = out.position;
      if (position !== null && position.epoch === this.#seen.epoch && comparePositions(position, this.#seen) <= 0) return "dropped";
      this.#seen = undefined;
    }
    return "pass";
  }

  /**
   * Starts the subscription after its history was read (`replay`, for a resume from `since`).
   * Answers the messages held meanwhile, to offer again (in order) once the replay is out.
   */
  start(replay: Replay | undefined, since: string | undefined): Outbound[] {
    const held = this.#pending ?? [];
    this.#pending = undefined;
    if (replay?.complete === true && since !== undefined) {
      const last = replay.messages.at(-1);
      this.#seen = last === undefined ? parsePosition(since) : parsePosition(last.id);
    }
    return held;
  }

  /** Lets go of the live messages held for a subscription that ends before it starts, answering them. */
  discard(): Outbound[] {
    const held = this.#pending ?? [];
    if (this.#pending !== undefined) this.#pending = [];
    return held;
  }
}

/**
 * A connection's rule of "once, in order per channel" across its subscriptions. When a message
 * matches one subscription of the connection (every v1 connection, most v2 ones) it passes with no
 * check. When it matches several (a channel and a pattern that covers it, two patterns), the
 * connection keeps the last id it wrote of that channel and writes a message of it only when it
 * comes after (ids are positions, ordered across a plate): the copy that comes by the second
 * subscription, whether back to back or after a gap's fill, is dropped.
 *
 * The ids kept are bounded (`maxChannels`, the oldest forgotten first): a connection whose
 * overlapping patterns cover more channels than that may, after a gap, get a copy of a message of
 * a channel it forgot. Messages whose ids are not positions (published straight into Redis) are
 * checked against the last message written only.
 */
export class Overlap {
  readonly #last = new Map<string, Position>();
  #lastOut: Outbound | undefined;

  constructor(private readonly maxChannels: number) {}

  /** Whether to write `out` (of `channel`), which `matches` subscriptions of the connection match. */
  admit(out: Outbound, channel: string, matches: number): boolean {
    if (matches <= 1) return true;
    if (this.#lastOut === out) return false;
    this.#lastOut = out;
    const position = out.position;
    if (position === null) return true;
    const last = this.#last.get(channel);
    if (last !== undefined && last.epoch === position.epoch && comparePositions(position, last) <= 0) return false;
    this.#last.delete(channel);
    this.#last.set(channel, position);
    if (this.#last.size > this.maxChannels) this.#last.delete(this.#last.keys().next().value!);
    return true;
  }

  /**
   * A channel subscription joins a connection where a pattern already delivers that channel: it
   * goes on from `position` (the last message a pattern wrote), so neither its replay nor its live
   * messages write again what the pattern wrote.
   */
  seed(channel: string, position: Position): void {
    this.#last.delete(channel);
    this.#last.set(channel, position);
    if (this.#last.size > this.maxChannels) this.#last.delete(this.#last.keys().next().value!);
  }
}
