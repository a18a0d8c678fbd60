import { comparePositions, parsePosition } from "@plate/protocol";
import type { Position, ResetReason } from "@plate/protocol";

/** A position without its epoch: the plate-wide order of one message. */
export interface Order {
  readonly ms: number;
  readonly seq: number;
}

/**
 * What a broker remembers of one channel besides its retained messages, for `markTtlMs` after the
 * channel's last publish: its last id and the greatest id it dropped (by count, age, or expiry).
 */
export interface ChannelMarks {
  readonly last: Order | undefined;
  readonly dropped: Order | undefined;
}

/**
 * The resume rules, shared by every broker (the Redis broker runs the same steps in Lua, see
 * redis-scripts.ts). Answers `read` when the retained messages after `since` are exactly what the
 * subscriber missed (possibly none), or why they are not:
 *
 * 1. not an id this service gives → `unknown_id`; from another epoch → `epoch`;
 *    after the plate's head (from the future) → `unknown_id`.
 * 2. no marks: nothing was published in the channel for `markTtlMs` (a publish leaves marks for
 *    that long). Complete if `since` is younger than that, else `expired` (cannot know).
 * 3. `since` before the greatest dropped id → `expired` (something after it is gone).
 * 4. otherwise everything after `since` is retained → `read`.
 */
export function resumeRule(
  since: string,
  epoch: string,
  head: Order,
  marks: ChannelMarks,
  nowMs: number,
  markTtlMs: number,
): { readonly kind: "read"; readonly after: Position } | { readonly kind: "reset"; readonly reason: ResetReason } {
  const position = parsePosition(since);
  if (position === undefined) return { kind: "reset", reason: "unknown_id" };
  if (position.epoch !== epoch) return { kind: "reset", reason: "epoch" };
  if (comparePositions(position, head) > 0) return { kind: "reset", reason: "unknown_id" };
  if (marks.last === undefined) {
    return nowMs - position.ms > markTtlMs ? { kind: "reset", reason: "expired" } : { kind: "read", after: position };
  }
  if (marks.dropped !== undefined && comparePositions(position, marks.dropped) < 0) return { kind: "reset", reason: "expired" };
  return { kind: "read", after: position };
}

/**
 * The name under which a broker remembers an idempotency key within its plate: the owner
 * (URI-encoded, so it holds no `:`), `:`, then the key. Two owners' keys can never share a name.
 */
export function idempotencyName(idempotency: { readonly key: string; readonly owner: string }): string {
  return encodeURIComponent(idempotency.owner) + ":" + idempotency.key;
}

/** Plate-wide order: the next position after `last` at `nowMs` (never going back). */
export function nextOrder(last: Order | undefined, nowMs: number): Order {
  if (last === undefined || nowMs > last.ms) return { ms: nowMs, seq: 0 };
  return { ms: last.ms, seq: last.seq + 1 };
}
