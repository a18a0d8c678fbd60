import { PlateError } from "@plate/protocol";
import type { ChannelName, Message, PlateId, Sender } from "@plate/protocol";
import type { Broker, PublishResult, Retention } from "@plate/broker";
import type { Metrics } from "../metrics.js";
import type { RateLimiter } from "./rate-limit.js";

/** What a publish may add to its message. */
export interface PublishOptions {
  readonly idempotency?: { readonly key: string; readonly owner: string } | undefined;
  readonly event?: string | undefined;
  readonly from?: Sender | undefined;
  /** `volatile` metadata as JSON text (route 13): to live subscribers only, never kept. */
  readonly volatile?: string | undefined;
}

/** Publishes messages through the broker, within each plate's publish rate. */
export class Publisher {
  constructor(
    private readonly broker: Broker,
    private readonly rate: RateLimiter,
    private readonly metrics: Metrics,
    /** The plate's history retention (its own, or the node's defaults). */
    private readonly retentionOf: (plateId: PlateId) => Promise<Retention>,
    private readonly idempotencyWindowMs: number,
  ) {}

  /**
   * Publishes `body` (the JSON text of the value) to a channel, named `event` when given and
   * carrying `from` when a client published it from its connection; the broker gives it its id and
   * keeps it in the channel's history. With an idempotency `key` its `owner` (the id of the API key
   * that publishes) already used in this plate within `IDEMPOTENCY_WINDOW_MS`, publishes nothing
   * and answers the first publish's message (`repeated`); another owner's use of the same key does
   * not count. Throws `rate_limited` or `broker_unavailable` (then nothing was published).
   */
  async publish(plateId: PlateId, channel: ChannelName, body: string, options: PublishOptions = {}): Promise<PublishResult> {
    const { idempotency, event, from, volatile } = options;
    this.rate.take(plateId);
    const retention = await this.retentionOf(plateId);
    let result: PublishResult;
    try {
      result = await this.broker.publish({
        plateId,
        channel,
        body,
        ...(event === undefined ? {} : { event }),
        ...(from === undefined ? {} : { from }),
        ...(volatile === undefined ? {} : { volatile }),
        timestamp: new Date().toISOString(),
        retention,
        ...(idempotency === undefined ? {} : { idempotency: { ...idempotency, windowMs: this.idempotencyWindowMs } }),
      });
    } catch (err) {
      if (err instanceof PlateError) throw err;
      throw new PlateError("broker_unavailable", "The broker is unreachable; nothing was published, retry.", {
        retryAfterS: 1,
        cause: err,
      });
    }
    if (!result.repeated) this.#count(plateId, 1);
    return result;
  }

  /**
   * Publishes several messages of one plate, in order: each is its own atomic publish, and their
   * ids grow in the order given (all are sent on one broker connection before any answer comes
   * back, and Redis runs one connection's commands in order). Takes the plate's rate for all of
   * them at once, or for none. Answers one outcome per message: a message or the error that
   * kept it from being published.
   */
  async publishBatch(
    plateId: PlateId,
    items: readonly { readonly channel: ChannelName; readonly body: string; readonly event: string | undefined; readonly volatile?: string | undefined }[],
  ): Promise<(Message | PlateError)[]> {
    this.rate.take(plateId, Date.now(), items.length);
    const retention = await this.retentionOf(plateId);
    const timestamp = new Date().toISOString();
    // No await between the calls: each is on the connection before the next is made.
    const sent = items.map(({ channel, body, event, volatile }) =>
      this.broker.publish({
        plateId,
        channel,
        body,
        ...(event === undefined ? {} : { event }),
        ...(volatile === undefined ? {} : { volatile }),
        timestamp,
        retention,
      }),
    );
    const outcomes = await Promise.allSettled(sent);
    const results = outcomes.map((outcome) =>
      outcome.status === "fulfilled"
        ? outcome.value.message
        : outcome.reason instanceof PlateError
          ? outcome.reason
          : new PlateError("broker_unavailable", "The broker is unreachable; retry.", { retryAfterS: 1, cause: outcome.reason }),
    );
    this.#count(plateId, results.filter((r) => !(r instanceof PlateError)).length);
    return results;
  }

  #count(plateId: PlateId, published: number): void {
    if (published === 0) return;
    this.metrics.published.inc(published);
    const plateLabel = this.metrics.plateLabel(plateId);
    if (plateLabel !== undefined) this.metrics.platePublished.inc({ plate: plateLabel }, published);
  }
}
