import { PlateError } from "@plate/protocol";
import type { ChannelName, Message, PlateId } from "@plate/protocol";
import type { Broker } from "@plate/broker";
import type { Metrics } from "../metrics.js";
import { newMessageId } from "./ids.js";
import type { RateLimiter } from "./rate-limit.js";

/** Publishes messages through the broker, within each plate's publish rate. */
export class Publisher {
  constructor(
    private readonly broker: Broker,
    private readonly rate: RateLimiter,
    private readonly metrics: Metrics,
  ) {}

  /**
   * Publishes `body` (the JSON text of the value) to a channel. Resolves once the broker accepted
   * it; throws `rate_limited` or `broker_unavailable` (then nothing was published).
   */
  async publish(plateId: PlateId, channel: ChannelName, body: string): Promise<Message> {
    this.rate.take(plateId);
    const message: Message = { plateId, channel, id: newMessageId(), timestamp: new Date().toISOString(), body };
    try {
      await this.broker.publish(message);
    } catch (err) {
      if (err instanceof PlateError) throw err;
      throw new PlateError("broker_unavailable", "The broker is unreachable; nothing was published, retry.", {
        retryAfterS: 1,
        cause: err,
      });
    }
    this.metrics.published.inc();
    return message;
  }
}
