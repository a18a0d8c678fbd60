import type { ErrorCode, PlateId, ReadyFrame, Topic } from "@plate/protocol";
import type { Transport } from "../metrics.js";
import type { Outbound } from "./outbound.js";

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

  /** Writes the ready frame, then every message that arrived before it. */
  start(ready: ReadyFrame): void {
    if (this.#ended || this.#started) return;
    this.#started = true;
    this.writeReady(ready);
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
    return this.write(out);
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
  protected abstract write(out: Outbound): boolean;
  protected abstract close(reason: EndReason, message: string): void;
}

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
