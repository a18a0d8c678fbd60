import type { Writable } from "node:stream";
import { comparePositions, parsePosition } from "@plate/protocol";
import type { ErrorCode, Message, PlateId, Position, ReadyFrame, ResetFrame, ResetReason, Topic } from "@plate/protocol";
import type { Replay } from "@plate/broker";
import type { Transport } from "../metrics.js";
import { Outbound } from "./outbound.js";

/**
 * What is left to write of a resume, at the pace the client reads: the replayed messages not yet
 * written, then what arrived meanwhile (live messages, resets), in order.
 */
interface Backlog {
  readonly replay: readonly Message[];
  /** Index of the next replayed message to write. */
  next: number;
  /** That message made ready for the wire, while it waits for the socket. */
  current: Outbound | undefined;
  /** Live messages and resets that arrived during the replay, in order; written ones are cleared. */
  readonly waiting: (Outbound | ResetReason | undefined)[];
  /** Index of the next waiting item to write. */
  waitingNext: number;
  /** Bytes of the waiting messages: they count against the slow-consumer limit. */
  waitingBytes: number;
  /** Writes on; the callback of the empty write that tells when the socket's bytes have left. */
  readonly resume: () => void;
}

/** Written with a callback behind a socket's bytes: the callback runs once they have all left. */
const FLUSH_MARK = Buffer.alloc(0);

/** Why a connection ends: an error code of the spec, or `normal` (the client went away). */
export type EndReason = ErrorCode | "normal";

/**
 * One subscriber connection, whatever its transport. The fan-out and the registries see only this;
 * SSE and WebSocket framing live in the subclasses.
 *
 * Lifecycle: created when authorized; `start(ready)` writes the ready frame and whatever arrived
 * meanwhile; `deliver` writes messages; `end(reason)` closes it once (later calls do nothing) and
 * runs the `onEnd` hooks, which unhook it from the fan-out and registries.
 *
 * Slow consumers: a connection whose unsent bytes (what its socket holds, plus live messages
 * waiting behind a replay) would pass `maxBufferedBytes` is ended with `slow_consumer`.
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
  /** After a resume, until everything replayed and what came meanwhile is written. */
  #backlog: Backlog | undefined;
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
   *
   * The ready frame's stream id (SSE `id:`) is `since` on a complete resume, not the head: the
   * client has nothing past it until the replayed messages (each with its id) reach it, so a drop
   * during the replay resumes from there again. Otherwise it is the starting position.
   *
   * The replay is written at the pace the socket takes it (see `#pump`), so a resume larger than
   * `maxBufferedBytes` does not drop a client that reads; live messages wait behind it, in order.
   */
  start(ready: ReadyFrame, replay?: Replay, since?: string): void {
    if (this.#ended || this.#started) return;
    this.#started = true;
    // Parsed, so only a well-formed id is ever written back (a complete replay implies one).
    const resumedFrom = replay?.complete === true && since !== undefined ? parsePosition(since) : undefined;
    this.writeReady(ready, resumedFrom !== undefined ? since : ready.position);
    if (replay !== undefined && !replay.complete) {
      this.writeReset({ type: "reset", channel: this.topic.channel, reason: replay.reason, message: RESET_MESSAGES[replay.reason] });
    } else if (replay !== undefined && since !== undefined) {
      const last = replay.messages.at(-1);
      this.#seen = last === undefined ? resumedFrom : parsePosition(last.id);
      if (replay.messages.length > 0) {
        const backlog: Backlog = {
          replay: replay.messages,
          next: 0,
          current: undefined,
          waiting: [],
          waitingNext: 0,
          waitingBytes: 0,
          resume: () => this.#pump(backlog),
        };
        this.#backlog = backlog;
        this.#pump(backlog);
      }
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
    const backlog = this.#backlog;
    if (backlog !== undefined) return this.#wait(backlog, out);
    return this.write(out);
  }

  /** Tells a started connection it may have missed messages (a reset frame); live messages follow. */
  reset(reason: ResetReason): void {
    if (!this.#started || this.#ended) return;
    // During a paced replay it takes its place in line, after what arrived before it.
    if (this.#backlog !== undefined) this.#backlog.waiting.push(reason);
    else this.writeReset({ type: "reset", channel: this.topic.channel, reason, message: RESET_MESSAGES[reason] });
  }

  /**
   * Writes the backlog of a resume while the socket takes it: one message at a time, until the
   * socket holds more than it wants (its own high-water mark: `write` answered false) or the next
   * message would pass `maxBufferedBytes`; then it goes on once those bytes have left (an empty
   * write's callback, which runs after everything before it was handed to the kernel; unlike
   * 'drain', it comes whether or not the high-water mark was reached). A client that does not
   * read leaves the rest waiting in memory it already holds (the replay), and is dropped when
   * live messages pile up (`#wait`).
   */
  #pump(backlog: Backlog): void {
    const output = this.output;
    while (!this.#ended && this.#backlog === backlog) {
      // A socket already closing: its 'close' ends the connection.
      if (output === undefined || output.writableEnded || output.destroyed) return;
      let item: Outbound | ResetReason | undefined;
      const replaying = backlog.next < backlog.replay.length;
      if (replaying) item = backlog.current ??= new Outbound(backlog.replay[backlog.next]!);
      else if (backlog.waitingNext < backlog.waiting.length) item = backlog.waiting[backlog.waitingNext];
      else {
        this.#backlog = undefined;
        return;
      }
      if (item instanceof Outbound && output.writableLength > 0) {
        const bytes = this.bytesOf(item);
        if (output.writableNeedDrain || output.writableLength + bytes > this.maxBufferedBytes) {
          output.write(FLUSH_MARK, backlog.resume);
          return;
        }
      }
      if (replaying) {
        backlog.next += 1;
        backlog.current = undefined;
      } else {
        backlog.waiting[backlog.waitingNext++] = undefined;
        if (item instanceof Outbound) backlog.waitingBytes -= this.bytesOf(item);
      }
      if (item === undefined) continue;
      if (!(item instanceof Outbound)) {
        this.writeReset({ type: "reset", channel: this.topic.channel, reason: item, message: RESET_MESSAGES[item] });
      } else if (!this.write(item)) {
        return;
      }
    }
  }

  /**
   * Puts a live message that arrived during a paced replay in line behind it. What waits counts
   * against `maxBufferedBytes` with what the socket holds: a client that does not read is dropped
   * (`slow_consumer`) rather than held in memory without bound.
   */
  #wait(backlog: Backlog, out: Outbound): boolean {
    const bytes = this.bytesOf(out);
    if ((this.output?.writableLength ?? 0) + backlog.waitingBytes + bytes > this.maxBufferedBytes) {
      this.end("slow_consumer");
      return false;
    }
    backlog.waiting.push(out);
    backlog.waitingBytes += bytes;
    return true;
  }

  /** Ends the connection with `reason`, telling the client when its transport can. */
  end(reason: EndReason, message?: string): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#pending = undefined;
    this.#backlog = undefined;
    this.close(reason, message ?? defaultMessage(reason));
    for (const hook of this.#onEnd) hook(reason);
  }

  /** Runs `hook` once when the connection ends, for any reason. */
  onEnd(hook: (reason: EndReason) => void): void {
    this.#onEnd.push(hook);
  }

  /** Keeps the connection alive (SSE comment, WebSocket ping); ends it if the peer is gone. */
  abstract heartbeat(): void;
  /** The socket the connection writes to, once started: a paced replay follows its buffer. */
  protected abstract get output(): Writable | undefined;
  /** Unsent bytes the connection may hold before it is dropped (`SLOW_CONSUMER_MAX_BYTES`). */
  protected abstract get maxBufferedBytes(): number;
  /** The bytes `out` takes on this transport's wire. */
  protected abstract bytesOf(out: Outbound): number;
  /**
   * Writes the ready frame. `streamId`: the id the client may resume from after it, for a
   * transport whose stream carries ids (SSE `id:`); see `start`.
   */
  protected abstract writeReady(ready: ReadyFrame, streamId: string | undefined): void;
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
