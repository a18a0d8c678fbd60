import { Socket } from "node:net";
import type { Writable } from "node:stream";
import { comparePositions, compilePattern, parsePosition } from "@plate/protocol";
import type {
  ChannelMatcher,
  ChannelName,
  ErrorCode,
  FilterSpec,
  Message,
  PlateId,
  Position,
  ReadyFrame,
  RealtimeReadyFrame,
  RealtimeServerFrame,
  ResetFrame,
  ResetReason,
  Topic,
} from "@plate/protocol";
import type { Replay } from "@plate/broker";
import { flushDirectFor, sendDirect } from "@plate/direct-send";
import type { DirectSend, FdMemo } from "@plate/direct-send";
import type { Transport } from "../metrics.js";
import { Overlap } from "./delivery.js";
import { Outbound } from "./outbound.js";
import type { SharedFrame } from "./outbound.js";
import { Subscription } from "./subscription.js";
import { corkForTurn } from "./turn-cork.js";

/** Why a connection ends: an error code of the spec, or `normal` (the client went away). */
export type EndReason = ErrorCode | "normal";

/**
 * Which contract a connection speaks: `v1` (routes 2, 3, 5, 7, 8: one topic fixed at open, the
 * v1 ready and reset frames) or `v2` (route 9, and route 5 with a several-topic token: many
 * subscriptions, changed live).
 */
export type Wire = "v1" | "v2";

/** A frame besides messages: ready aside, what either wire says (v1's reset included). */
export type ControlFrame = RealtimeServerFrame | ResetFrame;

/** One subscription to start, with its history (`replay`, for a resume from `since`). */
export interface Start {
  readonly sub: Subscription;
  readonly replay: Replay;
  readonly since: string | undefined;
}

/** A queued control frame: its JSON text once, and the bytes it takes on the wire. */
interface QueuedFrame {
  readonly type: string;
  readonly json: string;
  readonly bytes: number;
}

/** A queued live message, and the subscription it came by. */
interface QueuedMessage {
  readonly sub: Subscription;
  readonly out: Outbound;
}

/** Replayed messages of one or several subscriptions, in position order, written one at a time. */
interface ReplaySegment {
  readonly items: readonly { readonly sub: Subscription; readonly message: Message }[];
  next: number;
  /** The next item made ready for the wire, while it waits for the socket. */
  current: Outbound | undefined;
}

type Queued = QueuedFrame | QueuedMessage | ReplaySegment;

/**
 * What is left to write while a replay is paced: replays, then what arrived meanwhile (live
 * messages, frames), in order.
 */
interface Backlog {
  readonly items: (Queued | undefined)[];
  /** Index of the next item to write. */
  next: number;
  /** Bytes of the queued live messages and frames: they count against the slow-consumer limit. */
  waitingBytes: number;
  /** Writes on; the callback of the empty write that tells when the socket's bytes have left. */
  readonly resume: () => void;
}

/** Written with a callback behind a socket's bytes: the callback runs once they have all left. */
const FLUSH_MARK = Buffer.alloc(0);

/** What every connection is told at its start (settings, see config.ts). */
export interface ConnectionOptions {
  readonly plateId: PlateId;
  /** The API key that authorized it (directly, or by minting its client token). */
  readonly keyId: string;
  readonly clientId: string;
  readonly wire: Wire;
  /** `MAX_OVERLAP_CHANNELS`: see `Overlap`. */
  readonly maxOverlapChannels: number;
}

/**
 * One client connection, whatever its transport: auth, output budget and lifetime. What it
 * listens to are its `Subscription`s (one on v1, any number on v2); the fan-out hands messages to
 * them, and they hand on what their seam lets through (`emit`). SSE and WebSocket framing live in
 * the subclasses.
 *
 * Output order: one stream, written in the order things are handed to it. While a resume's replay
 * is paced to the socket (see `#pump`), everything after it waits in line behind it.
 *
 * Slow consumers: a connection whose unsent bytes (what its socket holds, plus live messages and
 * frames waiting behind a replay, plus live messages held for subscriptions not started yet) would
 * pass `maxBufferedBytes` is ended with `slow_consumer`.
 */
export abstract class Connection {
  abstract readonly transport: Transport;
  readonly plateId: PlateId;
  /**
   * The key it is revoked with: the API key that opened it (or minted its client path), or the
   * signing key of its signed token (`signingKeyOwner`), which a refresh may change.
   */
  keyId: string;
  readonly clientId: string;
  readonly wire: Wire;
  /** Its subscriptions by `topicKey`. */
  readonly subscriptions = new Map<string, Subscription>();
  /** The filter its credential enforces on each of its subscriptions (see `OpenOptions.filter`). */
  enforcedFilter: FilterSpec | undefined;
  /**
   * Its channel subscriptions by channel, and its patterns: which subscriptions a message matches.
   * Made with a connection's second subscription: a v1 connection (one subscription, thousands per
   * node) holds none of it (idle-memory.test.ts).
   */
  #channels: Map<string, Subscription> | undefined;
  #patterns: Map<Subscription, ChannelMatcher> | undefined;
  /** The last position a pattern subscription wrote (see `Overlap.seed`). */
  #patternMark: Position | undefined;
  #overlap: Overlap | undefined;
  readonly #maxOverlapChannels: number;
  #started = false;
  #ended = false;
  #backlog: Backlog | undefined;
  /** Bytes of live messages held for subscriptions that have not started (see `Seam`). */
  #heldBytes = 0;
  /** The turn of its socket's last write, negative after a burst (see `corkForTurn`). */
  #turn = 0;
  /** What the socket's TCP_NODELAY was last set to (see `followNoDelay`). */
  #noDelay = true;
  /** Its socket's file descriptor for `sendDirect`, made at its first direct write (an idle connection has none). */
  #fdMemo: FdMemo | undefined;
  /**
   * Its end hooks, chained in one slot: an idle v1 connection has one (the registry's, shared by
   * every connection), and an array of one took 184 bytes of each (heap snapshot, 2026-12-03).
   */
  #onEnd: ((reason: EndReason, conn: Connection) => void) | undefined;

  constructor(options: ConnectionOptions) {
    this.plateId = options.plateId;
    this.keyId = options.keyId;
    this.clientId = options.clientId;
    this.wire = options.wire;
    this.#maxOverlapChannels = options.maxOverlapChannels;
  }

  get ended(): boolean {
    return this.#ended;
  }

  /** Whether its first frame (`ready`) was written. */
  get started(): boolean {
    return this.#started;
  }

  /** A new subscription of this connection to `topic`, not started; it leaves the connection when it ends (`forget`). */
  adopt(topic: Topic, self?: boolean, filter?: Subscription["filter"]): Subscription {
    const sub = new Subscription(topic, this, self, filter);
    this.subscriptions.set(sub.key, sub);
    if (this.subscriptions.size === 2) {
      // The second one: from now on a message may match several.
      this.#channels = new Map();
      this.#patterns = new Map();
      this.#overlap = new Overlap(this.#maxOverlapChannels);
      for (const each of this.subscriptions.values()) this.#index(each);
    } else if (this.subscriptions.size > 2) {
      this.#index(sub);
    }
    return sub;
  }

  /** Lets go of a subscription that ended (called by `Subscription.end`). */
  forget(sub: Subscription): void {
    if (this.subscriptions.get(sub.key) === sub) this.subscriptions.delete(sub.key);
    if (sub.topic.pattern) this.#patterns?.delete(sub);
    else if (this.#channels?.get(sub.topic.channel) === sub) this.#channels.delete(sub.topic.channel);
    for (const out of sub.seam.discard()) this.#heldBytes -= this.bytesOf(out);
  }

  #index(sub: Subscription): void {
    const { topic } = sub;
    if (topic.pattern) {
      this.#patterns!.set(sub, compilePattern(topic.channel));
    } else {
      this.#channels!.set(topic.channel, sub);
      // A pattern of this connection already writes this channel: the subscription goes on from there.
      if (this.#patternMark !== undefined && this.#matches(topic.channel) > 1) this.#overlap!.seed(topic.channel, this.#patternMark);
    }
  }

  /** Writes the first frame. `streamId`: the id a client resumes from after it, on a transport whose stream carries ids (SSE `id:`). */
  begin(ready: ReadyFrame | RealtimeReadyFrame, streamId: string | undefined): void {
    if (this.#ended || this.#started) return;
    this.#started = true;
    this.writeReady(ready, streamId);
  }

  /**
   * Starts subscriptions whose history was read, after `first` (a `subscribed` frame, for one
   * asked for on an open connection): a `reset` for each whose resume cannot be complete, then the
   * replays, merged in position order (so a stream's ids only grow: a client resuming from the
   * last id it saw misses nothing), then the live messages each held meanwhile, minus those its
   * replay gave. The replay is written at the pace the socket takes it (see `#pump`), so a resume
   * larger than `maxBufferedBytes` does not drop a client that reads.
   */
  startSubscriptions(starts: readonly Start[], first?: ControlFrame): void {
    if (this.#ended) return;
    if (first !== undefined) this.frame(first);
    const items: { sub: Subscription; message: Message }[] = [];
    const held: [Subscription, Outbound[]][] = [];
    for (const { sub, replay, since } of starts) {
      if (sub.ended) continue;
      if (!replay.complete) this.resetFor(sub, replay.reason);
      else if (since !== undefined) for (const message of replay.messages) if (sub.accepts(message)) items.push({ sub, message });
      const waiting = sub.seam.start(replay, since);
      for (const out of waiting) this.#heldBytes -= this.bytesOf(out);
      held.push([sub, waiting]);
    }
    if (items.length > 0) this.#enqueue({ items: starts.length > 1 ? byPosition(items) : items, next: 0, current: undefined }, 0);
    for (const [sub, waiting] of held) for (const out of waiting) sub.deliver(out);
  }

  /**
   * A message a subscription's seam let through. Hot path: once per message per subscription;
   * with one subscription (every v1 connection) it goes straight to the socket, allocating
   * nothing. Returns false for a copy another subscription already wrote, and when the client
   * could not take it (and was dropped).
   */
  emit(sub: Subscription, out: Outbound): boolean {
    if (this.#ended) return false;
    if (this.#overlap !== undefined) {
      if (!this.#admits(out)) return false;
      if (sub.topic.pattern) this.#markPattern(out);
    }
    if (this.#backlog !== undefined) return this.#enqueue({ sub, out }, this.bytesOf(out));
    return this.write(out);
  }

  /** Counts a live message a subscription holds until it starts; drops the client past its limit. */
  holding(out: Outbound): boolean {
    this.#heldBytes += this.bytesOf(out);
    if (this.#unsentBytes() + this.#heldBytes > this.maxBufferedBytes) {
      this.end("slow_consumer");
      return false;
    }
    return true;
  }

  /** Tells the client a subscription may have missed messages (a reset frame); live messages follow. */
  resetFor(sub: Subscription, reason: ResetReason): void {
    const message = RESET_MESSAGES[reason];
    this.frame(
      this.wire === "v1"
        ? { type: "reset", channel: sub.topic.channel, reason, message }
        : { type: "reset", ...sub.name, reason, message },
    );
  }

  /** Writes a frame in line (behind a paced replay, if one is under way). */
  frame(frame: ControlFrame): void {
    if (this.#ended || !this.#started) return;
    const json = JSON.stringify(frame);
    const backlog = this.#backlog;
    if (backlog === undefined) {
      this.writeFrame(frame.type, json);
      return;
    }
    const bytes = this.frameBytes(frame.type, json);
    this.#enqueue({ type: frame.type, json, bytes }, bytes);
  }

  /**
   * `frame` for a frame many connections get (a presence change): its bytes built once for all of
   * them; the same order and limits.
   */
  frameShared(frame: SharedFrame): void {
    if (this.#ended || !this.#started) return;
    if (this.#backlog === undefined) {
      this.writeShared(frame);
      return;
    }
    const bytes = this.frameBytes(frame.type, frame.json);
    this.#enqueue({ type: frame.type, json: frame.json, bytes }, bytes);
  }

  /** Ends the connection with `reason`, telling the client when its transport can; ends its subscriptions. */
  end(reason: EndReason, message?: string): void {
    if (this.#ended) return;
    this.#ended = true;
    // What a fan-out holds for its socket (`openDirectBatch`) goes before the close.
    this.flushHeld();
    this.#backlog = undefined;
    this.close(reason, message ?? defaultMessage(reason));
    for (const sub of [...this.subscriptions.values()]) sub.end();
    this.#onEnd?.(reason, this);
  }

  /** Runs `hook` once when the connection ends, for any reason, after any hook given before. */
  onEnd(hook: (reason: EndReason, conn: Connection) => void): void {
    const before = this.#onEnd;
    this.#onEnd = before === undefined ? hook : (reason, conn) => (before(reason, conn), hook(reason, conn));
  }

  /** `Overlap`'s word on writing `out`, once the connection has had several subscriptions (none kept before). */
  #admits(out: Outbound): boolean {
    const overlap = this.#overlap;
    return overlap === undefined || this.subscriptions.size <= 1 || overlap.admit(out, out.channel, this.#matches(out.channel));
  }

  /** How many of its subscriptions a message of `channel` matches. */
  #matches(channel: ChannelName): number {
    let count = this.#channels?.has(channel) === true ? 1 : 0;
    for (const matches of this.#patterns?.values() ?? []) if (matches(channel)) count += 1;
    return count;
  }

  #markPattern(out: Outbound): void {
    const position = out.position;
    if (position === null) return;
    const mark = this.#patternMark;
    if (mark === undefined || mark.epoch !== position.epoch || comparePositions(position, mark) > 0) this.#patternMark = position;
  }

  /** Bytes the socket holds unsent, plus what waits behind a paced replay. */
  #unsentBytes(): number {
    return (this.output?.writableLength ?? 0) + (this.#backlog?.waitingBytes ?? 0);
  }

  /**
   * Puts an item in line. A replay starts the line when there is none; anything else joins it
   * when there is one (and counts against `maxBufferedBytes` with what the socket holds: a client
   * that does not read is dropped rather than held in memory without bound).
   */
  #enqueue(item: Queued, bytes: number): boolean {
    const backlog = this.#backlog;
    if (backlog === undefined) {
      const created: Backlog = { items: [], next: 0, waitingBytes: 0, resume: () => this.#pump(created) };
      this.#backlog = created;
      created.items.push(item);
      this.#pump(created);
      return !this.#ended;
    }
    if (this.#unsentBytes() + this.#heldBytes + bytes > this.maxBufferedBytes) {
      this.end("slow_consumer");
      return false;
    }
    backlog.items.push(item);
    backlog.waitingBytes += bytes;
    return true;
  }

  /**
   * Writes the line while the socket takes it: one item at a time, until the socket holds more
   * than it wants (its own high-water mark: `write` answered false) or the next message would pass
   * `maxBufferedBytes`; then it goes on once those bytes have left (an empty write's callback,
   * which runs after everything before it was handed to the kernel; unlike 'drain', it comes
   * whether or not the high-water mark was reached). A client that does not read leaves the rest
   * waiting in memory it already holds (the replay), and is dropped when live messages pile up.
   */
  #pump(backlog: Backlog): void {
    const output = this.output;
    while (!this.#ended && this.#backlog === backlog) {
      // A socket already closing: its 'close' ends the connection.
      if (output === undefined || output.writableEnded || output.destroyed) return;
      const item = backlog.items[backlog.next];
      if (item === undefined) {
        if (backlog.next < backlog.items.length) {
          backlog.next += 1;
          continue;
        }
        this.#backlog = undefined;
        return;
      }
      if ("items" in item) {
        // A replay: its next message, unless its subscription ended or another wrote it.
        const entry = item.items[item.next];
        if (entry === undefined) {
          backlog.items[backlog.next++] = undefined;
          continue;
        }
        if (entry.sub.ended) {
          item.next += 1;
          item.current = undefined;
          continue;
        }
        const out = (item.current ??= new Outbound(entry.message));
        if (this.#blocked(output, this.bytesOf(out), backlog)) return;
        item.next += 1;
        item.current = undefined;
        if (!entry.sub.takes(out) || !this.#admits(out)) continue;
        if (!this.write(out)) return;
        continue;
      }
      const bytes = "out" in item ? this.bytesOf(item.out) : item.bytes;
      if ("out" in item && this.#blocked(output, bytes, backlog)) return;
      backlog.items[backlog.next++] = undefined;
      backlog.waitingBytes -= bytes;
      if ("out" in item) {
        // Unsubscribed while it waited: "nothing after unsubscribed".
        if (item.sub.ended) continue;
        if (!this.write(item.out)) return;
      } else {
        this.writeFrame(item.type, item.json);
      }
    }
  }

  /** Whether a message of `bytes` must wait for the socket; if so, asks to be called back when it has drained. */
  #blocked(output: Writable, bytes: number, backlog: Backlog): boolean {
    if (output.writableLength === 0) return false;
    if (!output.writableNeedDrain && output.writableLength + bytes <= this.maxBufferedBytes) return false;
    output.write(FLUSH_MARK, backlog.resume);
    return true;
  }

  /**
   * Sets the socket's TCP_NODELAY to what `SUBSCRIBER_NO_DELAY` asks now (`auto` changes it with
   * the node's load) when it was last set otherwise: one comparison a write, one `setsockopt` a
   * switch. Node's HTTP server and `ws` start every socket with it on, and nothing is held before
   * a first write, so a socket follows from its first write on. Turning it on sends what Nagle held.
   */
  protected followNoDelay(socket: Writable): void {
    const noDelay = this.noDelayNow;
    if (this.#noDelay === noDelay) return;
    this.#noDelay = noDelay;
    if (socket instanceof Socket) socket.setNoDelay(noDelay);
  }

  /**
   * Writes `chunk` to `socket` (its own) for this event-loop turn: through when it is the turn's
   * only write, in one syscall with the turn's others when they are a burst (see `corkForTurn`),
   * with the socket's TCP_NODELAY as `SUBSCRIBER_NO_DELAY` asks now (`followNoDelay`), by one
   * send(2) of its own when nothing waits before it (`SUBSCRIBER_DIRECT_SEND`, see `sendDirect`;
   * in a fan-out, with the fan-out's others in one call, see `openDirectBatch`).
   */
  protected writeInTurn(socket: Writable, chunk: Buffer | string): void {
    this.followNoDelay(socket);
    this.#turn = corkForTurn(socket, this.#turn);
    const send = this.directSend;
    if (send !== undefined && typeof chunk !== "string" && sendDirect(send, socket, chunk, (this.#fdMemo ??= { fd: undefined, batch: 0 }))) return;
    // A write a fan-out holds for this socket (`openDirectBatch`) goes before this one.
    this.flushHeld();
    socket.write(chunk);
  }

  /**
   * Sends what an open fan-out batch holds for this connection's socket (`openDirectBatch`), before
   * a write to it some other way. The batch's writes to other sockets go on waiting: a subscriber
   * with a backlog no longer cuts the fan-out's batch in two.
   */
  protected flushHeld(): void {
    if (this.#fdMemo !== undefined) flushDirectFor(this.#fdMemo);
  }

  /** Keeps the connection alive (SSE comment, WebSocket ping); ends it if the peer is gone. */
  abstract heartbeat(): void;
  /** The socket the connection writes to, once started: a paced replay follows its buffer. */
  protected abstract get output(): Writable | undefined;
  /** Unsent bytes the connection may hold before it is dropped (`SLOW_CONSUMER_MAX_BYTES`). */
  protected abstract get maxBufferedBytes(): number;
  /** Whether its socket should send each write at once now (`SUBSCRIBER_NO_DELAY`, see `followNoDelay`). */
  protected abstract get noDelayNow(): boolean;
  /** The addon that writes a Buffer in one send(2), or undefined to write through Node (`SUBSCRIBER_DIRECT_SEND`). */
  protected abstract get directSend(): DirectSend | undefined;
  /** The bytes `out` takes on this transport's wire. */
  protected abstract bytesOf(out: Outbound): number;
  /** The bytes a frame of `type` with `json` takes on this transport's wire. */
  protected abstract frameBytes(type: string, json: string): number;
  /** Writes the first frame (see `begin`). */
  protected abstract writeReady(ready: ReadyFrame | RealtimeReadyFrame, streamId: string | undefined): void;
  /** Writes a frame of `type` (its JSON text given), within the output limit. */
  protected abstract writeFrame(type: string, json: string): void;
  /** Writes a shared frame's bytes for this transport, within the output limit. */
  protected abstract writeShared(frame: SharedFrame): void;
  protected abstract write(out: Outbound): boolean;
  protected abstract close(reason: EndReason, message: string): void;
}

/**
 * Replayed messages in position order (ids of one epoch; anything else keeps its place), each id
 * parsed once rather than at every comparison.
 */
function byPosition<T extends { readonly message: Message }>(items: readonly T[]): T[] {
  const keyed = items.map((item) => ({ item, at: parsePosition(item.message.id) }));
  keyed.sort(({ at: x }, { at: y }) => (x === undefined || y === undefined || x.epoch !== y.epoch ? 0 : comparePositions(x, y)));
  return keyed.map(({ item }) => item);
}

export const RESET_MESSAGES: Readonly<Record<ResetReason, string>> = {
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
