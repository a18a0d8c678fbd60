import type { Message, Topic } from "@plate/protocol";

/** Receives the messages of one subscription. Called synchronously; it must not throw or block. */
export type MessageListener = (message: Message) => void;

/** Stops one subscription. Calling it again does nothing. */
export type Unsubscribe = () => Promise<void>;

/**
 * How a published message reaches every subscriber, on this node or any other.
 *
 * Contract (every implementation passes `broker.contract.ts`):
 * - `publish` resolves once the broker accepted the message. Every subscription that was active
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
  publish(message: Message): Promise<void>;
  subscribe(topic: Topic, listener: MessageListener): Promise<Unsubscribe>;
  /** Whether the broker can publish and deliver right now (for `/readyz` and metrics). */
  isReady(): boolean;
  /** Called with the new state each time readiness changes. Returns a function that removes it. */
  onReadyChange(listener: (ready: boolean) => void): () => void;
  close(): Promise<void>;
}
