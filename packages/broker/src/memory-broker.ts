import { compilePattern, formatPosition, newEpoch } from "@plate/protocol";
import type { ChannelMatcher, ChannelName, Message, PlateError, PlateId, Topic } from "@plate/protocol";
import { BATCH_REFUSAL_MS, HISTORY_COST, afterRefusal, overBudget, rateLimited, takeRate } from "./broker.js";
import type { Broker, HistoryBudget, HistoryRead, MessageListener, PublishRequest, PublishResult, RateState, Replay, Retention, Unsubscribe } from "./broker.js";
import { FrontQueue } from "./front-queue.js";
import { idempotencyName, nextOrder, resumeRule } from "./history.js";
import { MemoryPresence } from "./memory-presence.js";
import type { Order } from "./history.js";

/** How often retained messages past their age and forgotten channels are swept, in ms. */
const SWEEP_INTERVAL_MS = 5_000;

/**
 * A plate over its history budget is swept at once (what expired since the last sweep stops
 * counting), at most this often, in ms: a plate refused in a flood costs one sweep per interval.
 */
const BUDGET_SWEEP_MIN_MS = 100;

interface Entry {
  readonly order: Order;
  readonly message: Message;
  /** What it counts against its plate's history budget, in bytes (see HISTORY_COST). */
  readonly size: number;
}

/** One channel's retained messages (oldest first) and marks (see history.ts). */
interface ChannelLog {
  readonly entries: FrontQueue<Entry>;
  last: Order | undefined;
  dropped: Order | undefined;
  lastPublishMs: number;
  retention: Retention;
}

/** One plate's history: its head position, channel logs and idempotency keys (by idempotencyName). */
interface PlateHistory {
  head: Order | undefined;
  readonly channels: Map<ChannelName, ChannelLog>;
  readonly idempotency: Map<string, { readonly message: Message; readonly expiresAt: number }>;
  /** Its publish-rate buckets, from its first rated publish. */
  rate?: RateState;
  /** The sum of its channels' sizes, and how many channels hold entries (its history budget). */
  bytes: number;
  streams: number;
  /** When it was last swept because it was over its budget. */
  sweptAt: number;
}

interface PatternEntry {
  readonly matches: ChannelMatcher;
  readonly listeners: Set<MessageListener>;
}

/** One plate's subscriptions: concrete channels by name, patterns by their text. */
interface PlateTopics {
  readonly exact: Map<string, Set<MessageListener>>;
  readonly patterns: Map<string, PatternEntry>;
}

/**
 * The embedded broker for a single node: delivery is a synchronous loop over the subscriptions of
 * the message's plate, so `publish` resolves after every local listener has run. Pattern
 * subscriptions are compiled once, when the first listener of that pattern arrives.
 *
 * History lives in this process: an array per channel, trimmed by count on publish and by age
 * every `SWEEP_INTERVAL_MS`. Its epoch is new with every broker, so ids from before a restart
 * resume as `reset`.
 */
export class MemoryBroker implements Broker {
  readonly presence = new MemoryPresence();
  readonly #plates = new Map<PlateId, PlateTopics>();
  readonly #history = new Map<PlateId, PlateHistory>();
  readonly #epoch = newEpoch();
  /** Batches that had a message refused, until when (see `PublishRequest.batch`). */
  readonly #refusedBatches = new Map<string, number>();
  /** Listeners of node-to-node notes, by address (see `send`). */
  readonly #notes = new Map<string, Set<(payload: string) => void>>();
  readonly #sweep: NodeJS.Timeout;
  readonly #now: () => number;
  #closed = false;

  /** `now` is the clock in ms (tests move it). */
  constructor(options: { readonly now?: () => number } = {}) {
    this.#now = options.now ?? Date.now;
    this.#sweep = setInterval(() => this.#sweepHistory(), SWEEP_INTERVAL_MS);
    this.#sweep.unref();
  }

  publish(request: PublishRequest): Promise<PublishResult> {
    const now = this.#now();
    const { batch } = request;
    if (batch !== undefined && this.#refusedBatches.has(batch)) return Promise.reject(afterRefusal());
    try {
      return Promise.resolve(this.#publish(request, now));
    } catch (err) {
      if (batch !== undefined) this.#refusedBatches.set(batch, now + BATCH_REFUSAL_MS);
      // Every refusal thrown is a PlateError (an Error).
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
  }

  /** Publishes, or throws the refusal (nothing changed then). */
  #publish(request: PublishRequest, now: number): PublishResult {
    const plate = this.#plateHistory(request.plateId);
    const { idempotency, rate } = request;
    const name = idempotency === undefined ? "" : idempotencyName(idempotency);
    if (idempotency !== undefined) {
      const prior = plate.idempotency.get(name);
      if (prior !== undefined && prior.expiresAt > now) return { message: prior.message, repeated: true };
    }
    // Taken from a copy of the buckets, kept only if the message is published: a publish the
    // budget refuses takes nothing, as on Redis.
    let taken: RateState | undefined;
    if (rate !== undefined && (rate.perS > 0 || rate.bytesPerS > 0)) {
      taken = { ...(plate.rate ?? { n: rate.burst, b: rate.bytesBurst, at: now }) };
      const waitMs = takeRate(taken, rate, now);
      if (waitMs > 0) throw rateLimited(rate, waitMs);
    }
    const order = nextOrder(plate.head, now);
    const message: Message = {
      plateId: request.plateId,
      channel: request.channel,
      id: formatPosition({ epoch: this.#epoch, ...order }),
      timestamp: request.timestamp,
      body: request.body,
      ...(request.event === undefined ? {} : { event: request.event }),
      ...(request.from === undefined ? {} : { from: request.from }),
    };
    const refusal = this.#append(plate, message, order, request, now);
    if (refusal !== undefined) throw refusal;
    if (taken !== undefined) plate.rate = taken;
    plate.head = order;
    if (idempotency !== undefined) {
      plate.idempotency.set(name, { message: { ...message, body: "" }, expiresAt: now + idempotency.windowMs });
    }
    this.#deliver(request.volatile === undefined ? message : { ...message, volatile: request.volatile });
    return { message, repeated: false };
  }

  history(plateId: PlateId, channel: ChannelName, since: string | undefined, retention: Retention): Promise<Replay> {
    const plate = this.#history.get(plateId);
    const headOrder = plate?.head ?? { ms: 0, seq: 0 };
    const head = formatPosition({ epoch: this.#epoch, ...headOrder });
    if (since === undefined) return Promise.resolve({ complete: true, messages: [], head });
    const log = plate?.channels.get(channel);
    const rule = resumeRule(since, this.#epoch, headOrder, { last: log?.last, dropped: log?.dropped }, this.#now(), retention.markTtlMs);
    if (rule.kind === "reset") return Promise.resolve({ complete: false, reason: rule.reason, head });
    const messages: Message[] = [];
    for (const entry of log?.entries ?? []) {
      if (entry.order.ms > rule.after.ms || (entry.order.ms === rule.after.ms && entry.order.seq > rule.after.seq)) {
        messages.push(entry.message);
      }
    }
    return Promise.resolve({ complete: true, messages, head });
  }

  histories(plateId: PlateId, reads: readonly HistoryRead[], retention: Retention): Promise<Replay[]> {
    // Each read is done before `history` returns: all of them in one turn, so no publish between.
    return Promise.all(reads.map((read) => this.history(plateId, read.channel, read.since, retention)));
  }

  historyUsage(plateId: PlateId): Promise<HistoryBudget> {
    const plate = this.#history.get(plateId);
    if (plate === undefined) return Promise.resolve({ channels: 0, bytes: 0 });
    // What expired stops counting first, as it does before a publish is weighed.
    sweepPlate(plate, this.#now());
    return Promise.resolve({ channels: plate.streams, bytes: historyBytes(plate) });
  }

  #plateHistory(plateId: PlateId): PlateHistory {
    let plate = this.#history.get(plateId);
    if (plate === undefined) {
      plate = { head: undefined, channels: new Map(), idempotency: new Map(), bytes: 0, streams: 0, sweptAt: 0 };
      this.#history.set(plateId, plate);
    }
    return plate;
  }

  /**
   * Appends a message to its channel's log and trims it, or answers why the plate's history budget
   * refuses it (then nothing changes).
   */
  #append(plate: PlateHistory, message: Message, order: Order, request: PublishRequest, now: number): PlateError | undefined {
    const { retention, budget } = request;
    const log = plate.channels.get(message.channel);
    const entries = log?.entries;
    const length = entries?.length ?? 0;
    // The oldest `drop` entries go, by count or by age (both drop from the front).
    let drop = Math.max(0, length + 1 - retention.count);
    const minMs = now - retention.ageMs;
    while (drop < length && entries!.at(drop).order.ms < minMs) drop += 1;
    if (retention.count === 0) drop = 0;
    const size = retention.count === 0 ? 0 : entrySize(message);
    if (budget !== undefined && retention.count > 0) {
      // A publish with an idempotency key adds its record, remembered for the key's window.
      const extra = request.idempotency === undefined ? 0 : HISTORY_COST.idempotency;
      const refusal = overHistoryBudget(plate, budget, log, entries, drop, size + extra);
      if (refusal !== undefined && now - plate.sweptAt >= BUDGET_SWEEP_MIN_MS) {
        plate.sweptAt = now;
        sweepPlate(plate, now);
        // The sweep may have dropped this channel's log, or some of its entries.
        return this.#append(plate, message, order, request, now);
      }
      if (refusal !== undefined) return refusal;
    }
    let target = log;
    if (target === undefined) {
      target = { entries: new FrontQueue(), last: undefined, dropped: undefined, lastPublishMs: now, retention };
      plate.channels.set(message.channel, target);
    }
    target.last = order;
    target.lastPublishMs = now;
    target.retention = retention;
    if (retention.count === 0) {
      // Nothing kept: every earlier message counts as dropped.
      target.dropped = order;
      return undefined;
    }
    if (target.entries.length === 0) plate.streams += 1;
    target.entries.push({ order, message, size });
    plate.bytes += size;
    dropFront(plate, target, drop);
    return undefined;
  }

  #deliver(message: Message): void {
    const topics = this.#plates.get(message.plateId);
    if (topics === undefined) return;
    const exact = topics.exact.get(message.channel);
    if (exact !== undefined) deliver(exact, message);
    for (const entry of topics.patterns.values()) {
      if (entry.matches(message.channel)) deliver(entry.listeners, message);
    }
  }

  /** Drops messages past their age, channels past their marks' lifetime and used idempotency keys. */
  #sweepHistory(): void {
    const now = this.#now();
    // A plate's head stays (a few bytes a plate): ids must keep growing even if the clock steps back.
    for (const plate of this.#history.values()) sweepPlate(plate, now);
    for (const [batch, untilMs] of this.#refusedBatches) if (untilMs <= now) this.#refusedBatches.delete(batch);
  }

  subscribe(topic: Topic, listener: MessageListener): Promise<Unsubscribe> {
    if (this.#closed) return Promise.reject(new Error("MemoryBroker is closed"));
    // Wrap so that the same function subscribed twice counts as two deliveries.
    const delivery: MessageListener = (message) => listener(message);
    let topics = this.#plates.get(topic.plateId);
    if (topics === undefined) {
      topics = { exact: new Map(), patterns: new Map() };
      this.#plates.set(topic.plateId, topics);
    }
    let listeners: Set<MessageListener>;
    if (topic.pattern) {
      let entry = topics.patterns.get(topic.channel);
      if (entry === undefined) {
        entry = { matches: compilePattern(topic.channel), listeners: new Set() };
        topics.patterns.set(topic.channel, entry);
      }
      listeners = entry.listeners;
    } else {
      let set = topics.exact.get(topic.channel);
      if (set === undefined) {
        set = new Set();
        topics.exact.set(topic.channel, set);
      }
      listeners = set;
    }
    listeners.add(delivery);
    const plateTopics = topics;
    return Promise.resolve(() => {
      if (listeners.delete(delivery) && listeners.size === 0) {
        if (topic.pattern) plateTopics.patterns.delete(topic.channel);
        else plateTopics.exact.delete(topic.channel);
        if (plateTopics.exact.size === 0 && plateTopics.patterns.size === 0) {
          this.#plates.delete(topic.plateId);
        }
      }
      return Promise.resolve();
    });
  }

  isReady(): boolean {
    return !this.#closed;
  }

  send(address: string, payload: string): Promise<number> {
    const listeners = this.#notes.get(address);
    if (listeners === undefined) return Promise.resolve(0);
    for (const listener of [...listeners]) {
      try {
        listener(payload);
      } catch {
        // A listener must not throw; one that does cannot stop the others.
      }
    }
    return Promise.resolve(1);
  }

  listen(address: string, listener: (payload: string) => void): Promise<Unsubscribe> {
    let listeners = this.#notes.get(address);
    if (listeners === undefined) {
      listeners = new Set();
      this.#notes.set(address, listeners);
    }
    const delivery = (payload: string) => listener(payload);
    listeners.add(delivery);
    const joined = listeners;
    return Promise.resolve(() => {
      joined.delete(delivery);
      if (joined.size === 0 && this.#notes.get(address) === joined) this.#notes.delete(address);
      return Promise.resolve();
    });
  }

  onGap(): () => void {
    // Delivery in one process is never cut.
    return () => undefined;
  }

  onReadyChange(): () => void {
    // The embedded broker is ready from construction until close and never changes otherwise.
    return () => undefined;
  }

  close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#sweep);
    this.#plates.clear();
    this.#history.clear();
    return Promise.resolve();
  }
}

/** Drops a plate's messages past their age, channels past their marks' lifetime and used idempotency keys. */
function sweepPlate(plate: PlateHistory, now: number): void {
  for (const [channel, log] of plate.channels) {
    if (now - log.lastPublishMs > log.retention.markTtlMs) {
      dropFront(plate, log, log.entries.length);
      plate.channels.delete(channel);
      continue;
    }
    dropOlderThan(plate, log, now - log.retention.ageMs);
  }
  for (const [key, used] of plate.idempotency) if (used.expiresAt <= now) plate.idempotency.delete(key);
}

/** Drops a log's messages from before `minMs`, marking the last one dropped. */
function dropOlderThan(plate: PlateHistory, log: ChannelLog, minMs: number): void {
  let old = 0;
  while (old < log.entries.length && log.entries.at(old).order.ms < minMs) old += 1;
  dropFront(plate, log, old);
}

/** Drops a log's `count` oldest messages, marking the last one dropped and counting what it frees. */
function dropFront(plate: PlateHistory, log: ChannelLog, count: number): void {
  if (count === 0) return;
  const { entries } = log;
  let freed = 0;
  for (let i = 0; i < count; i++) freed += entries.at(i).size;
  log.dropped = entries.at(count - 1).order;
  // A full channel drops one entry per publish: O(1) (see FrontQueue; `splice(0, 1)` copied every
  // entry kept: 3.6 µs at HISTORY_COUNT=1000, 34 µs at 10,000, node 20).
  entries.dropFront(count);
  plate.bytes -= freed;
  if (entries.length === 0) plate.streams -= 1;
}

/**
 * What a message counts against its plate's history budget: about what it would take in Redis
 * (its body, event and sender, id and timestamp, and `HISTORY_COST.entry`), so that one budget
 * means the same on both brokers.
 */
function entrySize(message: Message): number {
  let size = HISTORY_COST.entry + message.id.length + message.timestamp.length + message.body.length + 4;
  if (message.event !== undefined) size += message.event.length;
  if (message.from !== undefined) size += message.from.clientId.length + (message.from.user?.length ?? 0) + 16;
  return size;
}

/** What a plate's history holds, in bytes as its budget counts them (see HISTORY_COST). */
function historyBytes(plate: PlateHistory): number {
  return plate.bytes + plate.streams * HISTORY_COST.stream + plate.channels.size * HISTORY_COST.remembered + plate.idempotency.size * HISTORY_COST.idempotency;
}

/**
 * Why appending an entry of `size` (after dropping `drop` of the channel's entries) would take the
 * plate past its budget, if it would: a new channel with entries past `channels`, or more bytes
 * than before past `bytes` (see HISTORY_COST).
 */
function overHistoryBudget(
  plate: PlateHistory,
  budget: HistoryBudget,
  log: ChannelLog | undefined,
  entries: FrontQueue<Entry> | undefined,
  drop: number,
  size: number,
): PlateError | undefined {
  const newStream = entries === undefined || entries.length === 0;
  if (newStream && budget.channels > 0 && plate.streams >= budget.channels) return overBudget("channels", budget.channels);
  if (budget.bytes === 0) return undefined;
  let freed = 0;
  for (let i = 0; i < drop; i += 1) freed += entries!.at(i).size;
  const before = historyBytes(plate);
  let after = before - freed + size;
  if (newStream) after += HISTORY_COST.stream;
  if (log === undefined) after += HISTORY_COST.remembered;
  return after > budget.bytes && after > before ? overBudget("bytes", budget.bytes) : undefined;
}

function deliver(listeners: Set<MessageListener>, message: Message): void {
  for (const listener of listeners) {
    try {
      listener(message);
    } catch {
      // A listener must not throw (see MessageListener); one that does cannot stop the others.
    }
  }
}
