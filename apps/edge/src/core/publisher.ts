import { randomUUID } from "node:crypto";
import { PlateError } from "@plate/protocol";
import type { ChannelName, Message, PlateId, Sender } from "@plate/protocol";
import type { Broker, HistoryBudget, PublishRate, PublishResult, Retention } from "@plate/broker";
import type { Metrics } from "../metrics.js";
import type { Limits } from "./tenancy.js";
import type { Usage } from "./usage.js";

/** What a publish needs of its plate (`Tenancy.settingsOf`). */
export interface PublishSettings {
  readonly retention: Retention;
  readonly limits: Limits;
}

/** What a publish may add to its message. */
export interface PublishOptions {
  readonly idempotency?: { readonly key: string; readonly owner: string } | undefined;
  readonly event?: string | undefined;
  readonly from?: Sender | undefined;
  /** `volatile` metadata as JSON text (route 13): to live subscribers only, never kept. */
  readonly volatile?: string | undefined;
}

/**
 * Publishes messages through the broker, within each plate's publish rates: its buckets (messages
 * and bytes a second) are taken by the broker itself, in the same step as the publish (on Redis,
 * by the publish script), so they hold over every node at no extra round trip.
 */
export class Publisher {
  constructor(
    private readonly broker: Broker,
    /**
     * The plate's history retention and limits in force (its own, else the node's), in one read:
     * at once when cached (`Tenancy.settingsOf`: the publish goes on without an await).
     */
    private readonly settingsOf: (plateId: PlateId) => PublishSettings | Promise<PublishSettings>,
    private readonly metrics: Metrics,
    private readonly idempotencyWindowMs: number,
    /** `VOLATILE_MAX_BYTES`: the largest `volatile` a publish may carry, whatever route it came by. */
    private readonly volatileMaxBytes: number,
    /** Where what each plate publishes is metered. */
    private readonly usage?: Pick<Usage, "count">,
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
    const settings = this.settingsOf(plateId);
    const { retention, limits } = settings instanceof Promise ? await settings : settings;
    const size = Buffer.byteLength(body);
    if (size > limits.maxMessageBytes) throw overSize(limits);
    if (volatile !== undefined && Buffer.byteLength(volatile) > this.volatileMaxBytes) throw this.#volatileTooLarge();
    const rate = rateOf(limits, 1, size);
    let result: PublishResult;
    try {
      // One shape for every publish, absent options as undefined: conditional spreads made the
      // broker's reads of the request megamorphic (KeyedLoadIC_Megamorphic in a perf profile of W3).
      result = await this.broker.publish({
        plateId,
        channel,
        body,
        event,
        from,
        volatile,
        rate,
        budget: budgetOf(limits),
        batch: undefined,
        timestamp: isoNow(),
        retention,
        idempotency: idempotency === undefined ? undefined : { key: idempotency.key, owner: idempotency.owner, windowMs: this.idempotencyWindowMs },
      });
    } catch (err) {
      if (err instanceof PlateError) throw err;
      throw new PlateError("broker_unavailable", "The broker is unreachable; nothing was published, retry.", {
        retryAfterS: 1,
        cause: err,
      });
    }
    if (!result.repeated) this.#count(plateId, 1, size);
    return result;
  }

  /**
   * Publishes several messages of one plate, in order: each is its own atomic publish, and their
   * ids grow in the order given (all are sent on one broker connection before any answer comes
   * back, and Redis runs one connection's commands in order). Takes the plate's rate for all of
   * them at once, or for none (then throws `rate_limited` and publishes nothing). Answers one outcome per message: a message or the error that
   * kept it from being published.
   */
  async publishBatch(
    plateId: PlateId,
    items: readonly { readonly channel: ChannelName; readonly body: string; readonly event: string | undefined; readonly volatile?: string | undefined }[],
  ): Promise<(Message | PlateError)[]> {
    const { retention, limits } = await this.settingsOf(plateId);
    let bytes = 0;
    const sizes = items.map((item) => Buffer.byteLength(item.body));
    for (const [index, item] of items.entries()) {
      const size = sizes[index]!;
      if (size > limits.maxMessageBytes) throw new PlateError("payload_too_large", `messages[${index}]: ${overSize(limits).message}`, { index });
      if (item.volatile !== undefined && Buffer.byteLength(item.volatile) > this.volatileMaxBytes) {
        throw new PlateError("payload_too_large", `messages[${index}]: ${this.#volatileTooLarge().message}`, { index });
      }
      bytes += size;
    }
    const timestamp = isoNow();
    const budget = budgetOf(limits);
    // Past a refusal (over the budget) the later messages are refused too: published up to the first refusal.
    const batch = items.length > 1 ? randomUUID() : undefined;
    const send = (index: number, rate: PublishRate | undefined) => {
      const { channel, body, event, volatile } = items[index]!;
      return this.broker.publish({
        plateId,
        channel,
        body,
        ...(event === undefined ? {} : { event }),
        ...(volatile === undefined ? {} : { volatile }),
        ...(rate === undefined ? {} : { rate }),
        budget,
        ...(batch === undefined ? {} : { batch }),
        timestamp,
        retention,
      });
    };
    // Rated, the first message takes the whole batch's tokens and the others go once it is in:
    // all of the batch passes the rate, or none of it is published (its refusal is thrown).
    const rate = rateOf(limits, items.length, bytes);
    const head = rate === undefined ? undefined : await send(0, rate);
    // No await between the calls: each is on the connection before the next is made.
    const sent = items.map((_, i) => (i === 0 && head !== undefined ? Promise.resolve(head) : send(i, undefined)));
    const outcomes = await Promise.allSettled(sent);
    const results = outcomes.map((outcome) =>
      outcome.status === "fulfilled"
        ? outcome.value.message
        : outcome.reason instanceof PlateError
          ? outcome.reason
          : new PlateError("broker_unavailable", "The broker is unreachable; retry.", { retryAfterS: 1, cause: outcome.reason }),
    );
    let published = 0;
    let publishedBytes = 0;
    for (const [i, r] of results.entries()) {
      if (r instanceof PlateError) continue;
      published += 1;
      publishedBytes += sizes[i]!;
    }
    this.#count(plateId, published, publishedBytes);
    return results;
  }

  #volatileTooLarge(): PlateError {
    return new PlateError("payload_too_large", `"volatile" is at most ${this.volatileMaxBytes} bytes of JSON.`);
  }

  #count(plateId: PlateId, published: number, bytes: number): void {
    if (published === 0) return;
    this.usage?.count(plateId, "published", published);
    this.usage?.count(plateId, "publishedBytes", bytes);
    this.metrics.countPublished(published);
    const plateLabel = this.metrics.plateLabel(plateId);
    if (plateLabel !== undefined) this.metrics.platePublished.inc({ plate: plateLabel }, published);
  }
}

/**
 * The broker's rates for a publish of `count` messages and `bytes` bytes under `limits`; none when
 * both rates are off. The bytes bucket holds one second's worth, or one largest message if that is
 * more (a message the size limit lets through always fits an idle bucket).
 */
function rateOf(limits: Limits, count: number, bytes: number): PublishRate | undefined {
  if (limits.publishPerS === 0 && limits.publishBytesPerS === 0) return undefined;
  return {
    perS: limits.publishPerS,
    burst: limits.publishBurst,
    bytesPerS: limits.publishBytesPerS,
    bytesBurst: Math.max(limits.publishBytesPerS, limits.maxMessageBytes),
    count,
    bytes,
  };
}

/** The millisecond `isoNow` last formatted, and its text. */
let isoMs = Number.NaN;
let isoText = "";

/**
 * The time as an ISO 8601 timestamp (a message's `timestamp`), formatted once per millisecond:
 * `toISOString` formats through `snprintf`, and a busy node publishes several times a millisecond.
 */
function isoNow(): string {
  const ms = Date.now();
  if (ms !== isoMs) {
    isoMs = ms;
    isoText = new Date(ms).toISOString();
  }
  return isoText;
}

/** The plate's history budget under `limits`. */
function budgetOf(limits: Limits): HistoryBudget {
  return { channels: limits.historyChannels, bytes: limits.historyBytes };
}

/** The refusal of a message larger than its plate's `MAX_MESSAGE_BYTES` in force. */
function overSize(limits: Limits): PlateError {
  return new PlateError("payload_too_large", `A message of this plate is at most ${limits.maxMessageBytes} bytes of JSON.`);
}
