import { compilePattern } from "@plate/protocol";
import type { ChannelMatcher, Message, PlateId, Topic } from "@plate/protocol";
import type { Broker, MessageListener, Unsubscribe } from "./broker.js";

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
 */
export class MemoryBroker implements Broker {
  readonly #plates = new Map<PlateId, PlateTopics>();
  #closed = false;

  publish(message: Message): Promise<void> {
    const topics = this.#plates.get(message.plateId);
    if (topics === undefined) return Promise.resolve();
    const exact = topics.exact.get(message.channel);
    if (exact !== undefined) deliver(exact, message);
    for (const entry of topics.patterns.values()) {
      if (entry.matches(message.channel)) deliver(entry.listeners, message);
    }
    return Promise.resolve();
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

  onReadyChange(): () => void {
    // The embedded broker is ready from construction until close and never changes otherwise.
    return () => undefined;
  }

  close(): Promise<void> {
    this.#closed = true;
    this.#plates.clear();
    return Promise.resolve();
  }
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
