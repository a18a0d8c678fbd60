import type { MessageId } from "./names.js";

/**
 * A message id is a position in its plate's history: `{epoch}_{ms}-{seq}`, e.g.
 * `k3j9x0ab_1764093000123-0`.
 *
 * - `ms` and `seq` order every message of one plate (all its channels): a later publish always
 *   has a greater `(ms, seq)`. `ms` is the broker's clock in milliseconds (Redis `TIME` on Redis),
 *   never going back within a plate; `seq` counts publishes within one `ms`.
 * - `epoch` names one life of the history: it changes when the history is lost (Redis flushed or
 *   restarted empty, an embedded node restarted), so a position from before the loss can never be
 *   read as one after it. 8 characters of `[0-9a-z]`.
 *
 * The id is still opaque to clients (the spec's "opaque, unique within the plate"); they hand it
 * back as `Last-Event-ID`, `?lastEventId=` or `since` to resume.
 */
export interface Position {
  readonly epoch: string;
  readonly ms: number;
  readonly seq: number;
}

const POSITION = /^([0-9a-z]{8})_(\d{1,16})-(\d{1,16})$/;

/** `epoch`, then the plate-wide order (`ms`, `seq`). */
export function formatPosition(position: Position): MessageId {
  return (position.epoch + "_" + position.ms + "-" + position.seq) as MessageId;
}

/** The position an id names, or `undefined` for text that is not one (a forged or foreign id). */
export function parsePosition(id: string): Position | undefined {
  const match = POSITION.exec(id);
  if (match === null) return undefined;
  const ms = Number(match[2]);
  const seq = Number(match[3]);
  if (!Number.isSafeInteger(ms) || !Number.isSafeInteger(seq)) return undefined;
  return { epoch: match[1]!, ms, seq };
}

/** Orders two positions of one epoch (or their `ms`, `seq` alone): negative when `a` came first. */
export function comparePositions(a: Pick<Position, "ms" | "seq">, b: Pick<Position, "ms" | "seq">): number {
  return a.ms !== b.ms ? a.ms - b.ms : a.seq - b.seq;
}

/** A new random epoch. */
export function newEpoch(): string {
  let epoch = "";
  for (let i = 0; i < 8; i++) epoch += EPOCH_CHARS[Math.floor(Math.random() * EPOCH_CHARS.length)];
  return epoch;
}

const EPOCH_CHARS = "0123456789abcdefghijklmnopqrstuvwxyz";

/** Why a subscription that asked to resume gets `reset` instead of a replay. */
export type ResetReason =
  /** The id is older than the channel's retention: messages after it are gone. */
  | "expired"
  /** The id is from another life of the history (it was lost since). */
  | "epoch"
  /** The text is not an id this service gave out. */
  | "unknown_id"
  /** Pattern subscriptions do not replay (see the API reference). */
  | "pattern"
  /**
   * The node lost its way to the broker for a while (Redis restarted, a network cut) and could
   * not replay what was published meanwhile (a pattern subscription, or nothing to resume from).
   */
  | "gap";
