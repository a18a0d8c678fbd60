import { compilePattern, formatPosition, newEpoch } from "@plate/protocol";
import type { ChannelMatcher, ChannelName, Message, PlateId, Topic } from "@plate/protocol";
import { rateLimited, takeRate } from "./broker.js";
import type { Broker, HistoryRead, MessageListener, PublishRequest, PublishResult, RateState, Replay, Retention, Unsubscribe } from "./broker.js";
import { idempotencyName, nextOrder, resumeRule } from "./history.js";
import { MemoryPresence } from "./memory-presence.js";
import type { Order } from "./history.js";

/** How often retained messages past their age and forgotten channels are swept, in ms. */
const SWEEP_INTERVAL_MS = 5_000;

interface Entry {
  readonly order: Order;
  readonly message: Message;
}

/** One channel's retained messages (oldest first) and marks (see history.ts). */
interface ChannelLog {
  readonly entries: Entry[];
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
    const plate = this.#plateHistory(request.plateId);
    const { idempotency, rate } = request;
    const name = idempotency === undefined ? "" : idempotencyName(idempotency);
    if (idempotency !== undefined) {
      const prior = plate.idempotency.get(name);
      if (prior !== undefined && prior.expiresAt > now) return Promise.resolve({ message: prior.message, repeated: true });
    }
    if (rate !== undefined && (rate.perS > 0 || rate.bytesPerS > 0)) {
      plate.rate ??= { n: rate.burst, b: rate.bytesBurst, at: now };
      const waitMs = takeRate(plate.rate, rate, now);
      if (waitMs > 0) return Promise.reject(rateLimited(rate, waitMs));
    }
    const order = nextOrder(plate.head, now);
    plate.head = order;
    const message: Message = {
      plateId: request.plateId,
      channel: request.channel,
      id: formatPosition({ epoch: this.#epoch, ...order }),
      timestamp: request.timestamp,
      body: request.body,
      ...(request.event === undefined ? {} : { event: request.event }),
      ...(request.from === undefined ? {} : { from: request.from }),
    };
    this.#append(plate, message, order, request.retention, now);
    if (idempotency !== undefined) {
      plate.idempotency.set(name, { message: { ...message, body: "" }, expiresAt: now + idempotency.windowMs });
    }
    this.#deliver(request.volatile === undefined ? message : { ...message, volatile: request.volatile });
    return Promise.resolve({ message, repeated: false });
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

  #plateHistory(plateId: PlateId): PlateHistory {
    let plate = this.#history.get(plateId);
    if (plate === undefined) {
      plate = { head: undefined, channels: new Map(), idempotency: new Map() };
      this.#history.set(plateId, plate);
    }
    return plate;
  }

  #append(plate: PlateHistory, message: Message, order: Order, retention: Retention, now: number): void {
    let log = plate.channels.get(message.channel);
    if (log === undefined) {
      log = { entries: [], last: undefined, dropped: undefined, lastPublishMs: now, retention };
      plate.channels.set(message.channel, log);
    }
    log.last = order;
    log.lastPublishMs = now;
    log.retention = retention;
    if (retention.count === 0) {
      // Nothing kept: every earlier message counts as dropped.
      log.dropped = order;
      return;
    }
    log.entries.push({ order, message });
    const excess = log.entries.length - retention.count;
    if (excess > 0) log.dropped = log.entries.splice(0, excess)[excess - 1]!.order;
    dropOlderThan(log, now - retention.ageMs);
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
    for (const plate of this.#history.values()) {
      for (const [channel, log] of plate.channels) {
        if (now - log.lastPublishMs > log.retention.markTtlMs) {
          plate.channels.delete(channel);
          continue;
        }
        dropOlderThan(log, now - log.retention.ageMs);
      }
      for (const [key, used] of plate.idempotency) if (used.expiresAt <= now) plate.idempotency.delete(key);
    }
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

/** Drops a log's messages from before `minMs`, marking the last one dropped. */
function dropOlderThan(log: ChannelLog, minMs: number): void {
  let old = 0;
  while (old < log.entries.length && log.entries[old]!.order.ms < minMs) old += 1;
  if (old > 0) log.dropped = log.entries.splice(0, old)[old - 1]!.order;
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
