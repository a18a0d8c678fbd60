import { PlateError } from "@plate/protocol";
import type { Presence } from "./presence.js";
import type { ChannelName, Message, MessageId, PlateId, ResetReason, Sender, Topic } from "@plate/protocol";

/** The two moments of a gap in delivery (see `Broker.onGap`). */
export type GapPhase = "cut" | "restored";

/** Receives the messages of one subscription. Called synchronously; it must not throw or block. */
export type MessageListener = (message: Message) => void;

/** Stops one subscription. Calling it again does nothing. */
export type Unsubscribe = () => Promise<void>;

/** How much of each channel's history is kept: the last `count` messages not older than `ageMs`. */
export interface Retention {
  /** Messages kept per channel; 0 keeps none (a resume is then complete only if nothing was published). */
  readonly count: number;
  /** How long a message is kept, in ms. */
  readonly ageMs: number;
  /**
   * How long the broker remembers a channel's last id and what it dropped, after its last publish,
   * in ms (longer than `ageMs`): within it, a quiet channel resumes as complete instead of reset.
   */
  readonly markTtlMs: number;
}

/** A message to publish; the broker gives it its id (its position in the plate's history). */
export interface PublishRequest {
  readonly plateId: PlateId;
  readonly channel: ChannelName;
  /** The published value as JSON text. */
  readonly body: string;
  /** The event name the publisher gave, carried to every subscriber and kept in the history. */
  readonly event?: string;
  /** The client that published it from its connection (route 9), carried and kept like the event. */
  readonly from?: Sender;
  /** `volatile` metadata as JSON text: carried to live subscribers only, never kept in the history. */
  readonly volatile?: string;
  /**
   * The plate's publish rates, taken where every node meets (the Redis publish script itself, or
   * the embedded broker) before anything is published; over them the publish throws
   * `rate_limited` with the seconds until it would pass, and publishes nothing.
   */
  readonly rate?: PublishRate;
  /**
   * The plate's history budget, checked where every node meets (the publish script, or the
   * embedded broker): a publish that would make the plate's history exceed it throws
   * `quota_exceeded` and publishes nothing. Without it (or with both 0) nothing is limited, but the
   * Redis broker keeps no counts for it (a budget set later counts from its first publish on:
   * older messages, at most `ageMs` old, are not counted).
   */
  readonly budget?: HistoryBudget;
  /**
   * The id of the batch the message belongs to (unique per batch): once one of a batch's messages
   * is refused (over a rate or the budget), its later ones are refused too (`quota_exceeded`,
   * naming the earlier refusal) without being weighed, so a batch sent in one go is published up
   * to its first refusal and not after it.
   */
  readonly batch?: string;
  /** ISO-8601 time the node accepted it. */
  readonly timestamp: string;
  readonly retention: Retention;
  /**
   * A client's `Idempotency-Key` and its `owner` (the API key that sent it): a publish with a key
   * its owner already used in this plate within `windowMs` publishes nothing and answers the first
   * publish's message. The keys of different owners never meet, whatever their characters.
   */
  readonly idempotency?: { readonly key: string; readonly owner: string; readonly windowMs: number };
}

/**
 * A plate's two token buckets, messages and bytes, and what one publish takes from them. A bucket
 * whose rate is 0 is off. A batch's first message takes for the whole batch and the others take
 * nothing, so a batch passes whole or not at all.
 */
export interface PublishRate {
  /** Messages a second, and the bucket's size. */
  readonly perS: number;
  readonly burst: number;
  /** Bytes a second, and the bucket's size. */
  readonly bytesPerS: number;
  readonly bytesBurst: number;
  /** What this publish takes: messages and bytes. */
  readonly count: number;
  readonly bytes: number;
}

/**
 * What a plate's history may hold at once, across every node: channels with retained messages,
 * and bytes (0 = no limit). Bytes are an estimate of the broker's memory (see `HISTORY_COST`).
 */
export interface HistoryBudget {
  readonly channels: number;
  readonly bytes: number;
}

/**
 * How a history's bytes are counted, measured on Redis 7 (`MEMORY USAGE`): a message's payload
 * (id, timestamp, event and body) plus `entry`; plus `stream` for each channel holding messages
 * (a stream's first node takes about 4.4 KB whatever it holds); plus `remembered` for each channel
 * whose marks are kept (`Retention.markTtlMs` after its last publish: a small hash and the budget's
 * own entries); plus `idempotency` for each idempotency key remembered (its record and the
 * budget's entry, for the key's window). The embedded broker counts the same way, so one budget means the same on both.
 */
export const HISTORY_COST = { entry: 32, stream: 4608, remembered: 256, idempotency: 384 } as const;

/**
 * The most messages, and bytes of bodies, the Redis broker publishes in one script (group commit;
 * a script always takes at least one message). Redis at `maxmemory` refuses a script only at its
 * first write, so one script may grow Redis past it by at most this many bytes.
 */
export const PUBLISH_BATCH_MESSAGES = 64;
export const PUBLISH_BATCH_BYTES = 1024 * 1024;

/**
 * How many turns of the event loop past its own a publish may wait for others to share its script,
 * while the node is busy publishing (the Redis broker's group commit: `RedisBroker.publish`). A
 * turn without a new publish ends the wait; a lone publish does not wait.
 */
export const PUBLISH_GATHER_TURNS = 2;

/**
 * The most bytes of payloads the Redis broker keeps as one history entry when a script publishes a
 * run of messages to one channel (redis-history.ts); a larger run is kept as an entry a message.
 * The channel's oldest entry is read again by each publish until its last message is dropped, so
 * this bounds what a publish reads back (W3's runs of 25 are about 5 KB).
 */
export const HISTORY_RUN_MAX_BYTES = 16 * 1024;

/** How long a broker remembers that a batch had a message refused, in ms (far longer than a batch takes to send). */
export const BATCH_REFUSAL_MS = 60_000;

/** The refusal of a batch's message after an earlier one of the batch was refused. */
export function afterRefusal(): PlateError {
  return new PlateError("quota_exceeded", "An earlier message of this batch was refused; this one and the rest were not published.");
}

/**
 * How often a broker sweeps a plate's history counts at most (channels whose history or marks
 * expired stop counting), in ms; a publish the budget would refuse sweeps at once first.
 */
export const HISTORY_SWEEP_MS = 1000;

/** The refusal of a publish over its plate's history budget. */
export function overBudget(what: "channels" | "bytes", limit: number): PlateError {
  return new PlateError(
    "quota_exceeded",
    what === "channels"
      ? `This plate keeps history for ${limit} channels, its limit; publish to a channel that has history, or wait until a quiet channel's history expires.`
      : `This plate's history holds ${limit} bytes, its limit; wait until older messages expire, or publish smaller messages.`,
  );
}

/** The state of a plate's two buckets: tokens left as of `at` (epoch ms). */
export interface RateState {
  n: number;
  b: number;
  at: number;
}

/**
 * Takes `rate`'s tokens from `state` at `nowMs` (refilled first, up to each burst); answers 0, or
 * the ms to wait, taking nothing. The embedded broker's rule, and the publish script's (in Lua).
 */
export function takeRate(state: RateState, rate: PublishRate, nowMs: number): number {
  const elapsed = Math.max(0, nowMs - state.at);
  const n = Math.min(rate.burst, state.n + (elapsed * rate.perS) / 1000);
  const b = Math.min(rate.bytesBurst, state.b + (elapsed * rate.bytesPerS) / 1000);
  let waitMs = 0;
  if (rate.perS > 0 && n < rate.count) waitMs = Math.ceil(((rate.count - n) * 1000) / rate.perS);
  if (rate.bytesPerS > 0 && b < rate.bytes) waitMs = Math.max(waitMs, Math.ceil(((rate.bytes - b) * 1000) / rate.bytesPerS));
  if (waitMs > 0) return waitMs;
  state.n = rate.perS > 0 ? n - rate.count : n;
  state.b = rate.bytesPerS > 0 ? b - rate.bytes : b;
  state.at = nowMs;
  return 0;
}

/** The refusal of a publish over its plate's rates, after `waitMs`. */
export function rateLimited(rate: PublishRate, waitMs: number): PlateError {
  return new PlateError("rate_limited", `This plate is over its publish rate (${describeRate(rate)}); slow down.`, {
    retryAfterS: Math.max(1, Math.ceil(waitMs / 1000)),
  });
}

function describeRate(rate: PublishRate): string {
  const parts = [];
  if (rate.perS > 0) parts.push(`${rate.perS} messages`);
  if (rate.bytesPerS > 0) parts.push(`${rate.bytesPerS} bytes`);
  return parts.join(" and ") + " a second";
}

export interface PublishResult {
  /** The message published; for a repeated idempotency key, the first publish's (its body empty). */
  readonly message: Message;
  /** True when the idempotency key had been used: nothing was published this time. */
  readonly repeated: boolean;
}

/** One channel's read of `Broker.histories`: the channel, and the id to replay after (none: the head only). */
export interface HistoryRead {
  readonly channel: ChannelName;
  readonly since: string | undefined;
}

/** What a subscription that resumes from an id gets: everything it missed, or a reset. */
export type Replay =
  | {
      readonly complete: true;
      /** The channel's messages after the id, oldest first (none when nothing was missed). */
      readonly messages: readonly Message[];
      /** The plate's latest position when the history was read. */
      readonly head: MessageId;
    }
  | { readonly complete: false; readonly reason: ResetReason; readonly head: MessageId };

/**
 * How a published message reaches every subscriber, on this node or any other.
 *
 * Contract (every implementation passes `broker.contract.ts`):
 * - `publish` gives the message its id: a position (protocol's `Position`) greater than every
 *   earlier id of its plate, in the broker's current epoch. It resolves once the broker accepted
 *   the message and appended it to the channel's history (atomically: a message is in the history
 *   if and only if it was delivered). Every subscription that was active
 *   (its `subscribe` had resolved) when `publish` was called, on any node, then receives it exactly
 *   once. Messages from one publisher arrive in the order they were published.
 * - `publish` rejects with `PlateError("broker_unavailable")` when it cannot accept the message;
 *   nothing was published then, so the caller may retry.
 * - A subscription to a concrete channel receives the messages published to that channel of that
 *   plate; a pattern subscription receives those whose channel matches the pattern, with the
 *   concrete channel in `message.channel`. Nothing published to one plate reaches another plate's
 *   subscription, whatever the channel or pattern text.
 * - Each `subscribe` call is one delivery: two subscriptions of one topic each get every message.
 * - `close()` stops every subscription and frees every connection; the broker is unusable after.
 */
export interface Broker {
  publish(request: PublishRequest): Promise<PublishResult>;
  subscribe(topic: Topic, listener: MessageListener): Promise<Unsubscribe>;
  /**
   * The messages of a concrete channel after `since` (an id this broker gave), or why they cannot
   * all be given (`reset`): never a partial list passed off as complete. Without `since`, no
   * messages, only the head. Read after the subscription is active, so that together with the live
   * messages nothing falls between (the caller drops live messages at or before the last replayed).
   */
  history(plateId: PlateId, channel: ChannelName, since: string | undefined, retention: Retention): Promise<Replay>;
  /**
   * `history` of several channels of one plate, read at one instant: no publish of the plate falls
   * between the reads, so every answer has the same head. A connection that resumes several
   * subscriptions at once merges their replays, and the live messages that follow all come after
   * that one head (no message of one channel can fall between two reads).
   */
  histories(plateId: PlateId, reads: readonly HistoryRead[], retention: Retention): Promise<Replay[]>;
  /**
   * Node-to-node notes, apart from every plate (route 9's POST reaching the node that holds a
   * stream): delivers `payload` to the listeners of `address` on every node, once each, and
   * resolves with how many nodes listen to it (0: nobody; nothing is kept for later). Rejects
   * with `broker_unavailable` as `publish` does.
   */
  send(address: string, payload: string): Promise<number>;
  /** Listens to the notes sent to `address` (see `send`) until the returned function is called. */
  listen(address: string, listener: (payload: string) => void): Promise<Unsubscribe>;
  /**
   * What the plate's history holds now, as its budget counts it (`HistoryBudget`): channels with
   * retained messages, and bytes (see `HISTORY_COST`).
   */
  historyUsage(plateId: PlateId, retention: Retention): Promise<HistoryBudget>;
  /** Whether the broker can publish and deliver right now (for `/readyz` and metrics). */
  isReady(): boolean;
  /**
   * Told when the broker's delivery to this node is cut (`"cut"`: Redis' subscriber connection
   * dropped, or went deaf) and when it is back (`"restored"`: subscribed again): subscriptions may
   * have missed messages published in between, and the caller may read them from `history` after
   * the last message it got. `"cut"` comes before any message of the restored delivery, so a
   * caller that holds live messages from `"cut"` until it has read the history keeps them after
   * everything missed (the rule lives in the edge's delivery module). A broker whose delivery is
   * never cut (the embedded one) never calls it. `plates` names the plates whose delivery was cut
   * (on Redis Cluster, those of one master); undefined means every plate. Returns a function that
   * removes the listener.
   */
  onGap(listener: (phase: GapPhase, plates?: ReadonlySet<PlateId>) => void): () => void;
  /** Called with the new state each time readiness changes. Returns a function that removes it. */
  onReadyChange(listener: (ready: boolean) => void): () => void;
  /** Who is on each channel (presence.ts). */
  readonly presence: Presence;
  close(): Promise<void>;
}
