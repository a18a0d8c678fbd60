import { comparePositions, parsePosition } from "@plate/protocol";
import type { ErrorCode, PlateId, Position, ReadyFrame, ResetFrame, ResetReason, Topic } from "@plate/protocol";
import type { Replay } from "@plate/broker";
import type { Transport } from "../metrics.js";
import { Outbound } from "./outbound.js";

/** Why a connection ends: an error code of the spec, or `normal` (the client went away). */
export type EndReason = ErrorCode | "normal";

/**
 * One subscriber connection, whatever its transport. The fan-out and the registries see only this;
 * SSE and WebSocket framing live in the subclasses.
 *
 * Lifecycle: created when authorized; `start(ready)` writes the ready frame and whatever arrived
 * meanwhile; `deliver` writes messages; `end(reason)` closes it once (later calls do nothing) and
 * runs the `onEnd` hooks, which unhook it from the fan-out and registries.
 */
export abstract class Connection {
  abstract readonly transport: Transport;
  #started = false;
  #ended = false;
  /** Messages that arrived between the broker subscription and the ready frame. */
  #pending: Outbound[] | undefined = [];
  /**
   * After a resume, the last position the client has (`since`, or the last message replayed) until
   * a live message past it arrives: live messages at or before it are not written again.
   */
  #seen: Position | undefined;
  readonly #onEnd: ((reason: EndReason) => void)[] = [];

  constructor(
    readonly plateId: PlateId,
    /** The API key that authorized it (directly, or by minting its client token). */
    readonly keyId: string,
    readonly topic: Topic,
    readonly clientId: string,
  ) {}

  get ended(): boolean {
    return this.#ended;
  }

  /**
   * Writes the ready frame; then, for a resume (`since`), what the client missed (`replay`) or a
   * reset; then every live message that arrived meanwhile, except those the client already has
   * (at or before `since` or the last message replayed: the seam of replay and live).
   */
  start(ready: ReadyFrame, replay?: Replay, since?: string): void {
    if (this.#ended || this.#started) return;
    this.#started = true;
    this.writeReady(ready);
    if (replay !== undefined && !replay.complete) {
      this.writeReset({ type: "reset", channel: this.topic.channel, reason: replay.reason, message: RESET_MESSAGES[replay.reason] });
    } else if (replay !== undefined && since !== undefined) {
      for (const message of replay.messages) this.write(new Outbound(message));
      this.#seen = parsePosition(replay.messages.at(-1)?.id ?? since);
    }
    const pending = this.#pending ?? [];
    this.#pending = undefined;
    for (const out of pending) this.deliver(out);
  }

  /**
   * Writes one message. Hot path: called once per message per subscriber, so it must not
   * allocate. Returns false when the subscriber could not take it (and was dropped).
   */
  deliver(out: Outbound): boolean {
    if (this.#ended) return false;
    if (this.#pending !== undefined) {
      this.#pending.push(out);
      return true;
    }
    if (this.#seen !== undefined) {
      // Just resumed: the live copy of a message the replay already held can arrive after it (on
      // Redis the history is read on another connection than the one live messages come by).
      // Live messages come in order, so the first one past the seam ends the check.
      const position = out.position;
      if (position !== null && position.epoch === this.#seen.epoch && comparePositions(position, this.#seen) <= 0) return true;
      this.#seen = undefined;
    }
    return this.write(out);
  }

  /** Tells a started connection it may have missed messages (a reset frame); live messages follow. */
  reset(reason: ResetReason): void {
    if (!this.#started || this.#ended) return;
    this.writeReset({ type: "reset", channel: this.topic.channel, reason, message: RESET_MESSAGES[reason] });
  }

  /** Ends the connection with `reason`, telling the client when its transport can. */
  end(reason: EndReason, message?: string): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#pending = undefined;
    this.close(reason, message ?? defaultMessage(reason));
    for (const hook of this.#onEnd) hook(reason);
  }

  /** Runs `hook` once when the connection ends, for any reason. */
  onEnd(hook: (reason: EndReason) => void): void {
    this.#onEnd.push(hook);
  }

  /** Keeps the connection alive (SSE comment, WebSocket ping); ends it if the peer is gone. */
  abstract heartbeat(): void;
  protected abstract writeReady(ready: ReadyFrame): void;
  protected abstract writeReset(reset: ResetFrame): void;
  protected abstract write(out: Outbound): boolean;
  protected abstract close(reason: EndReason, message: string): void;
}

const RESET_MESSAGES: Readonly<Record<ResetReason, string>> = {
  expired: "Messages after your last id are no longer kept; refetch your state. Live messages follow.",
  epoch: "The history your last id belongs to was lost (broker restarted); refetch your state. Live messages follow.",
  unknown_id: "That id was not given by this service; refetch your state. Live messages follow.",
  pattern: "Pattern subscriptions do not replay; refetch your state. Live messages follow.",
  gap: "This node lost its broker connection for a while; messages may be missing. Refetch your state; live messages follow.",
};

function defaultMessage(reason: EndReason): string {
  switch (reason) {
    case "slow_consumer":
      return "The client did not read fast enough and was dropped; reconnect.";
    case "revoked":
      return "The key (or plate) behind this connection was revoked.";
    case "max_duration_reached":
      return "The client token's max_dur ran out; mint a new one to reconnect.";
    case "shutting_down":
      return "This node is shutting down; reconnect to another.";
    default:
      return reason;
  }
}
