import { PlateError } from "@plate/protocol";

/**
 * A token bucket per key (a plate): `ratePerS` tokens refill each second up to `burst`. One bucket
 * costs one small object; idle buckets that are full again are swept by `sweep`.
 */
export class RateLimiter {
  readonly #buckets = new Map<string, { tokens: number; at: number }>();

  constructor(
    /** Tokens per second; 0 turns the limiter off. */
    private readonly ratePerS: number,
    private readonly burst: number,
  ) {}

  /**
   * Takes `count` tokens for `key` (a batch takes one per message), or none and throws
   * `rate_limited` with the seconds until they are back.
   */
  take(key: string, nowMs = Date.now(), count = 1): void {
    if (this.ratePerS === 0) return;
    let bucket = this.#buckets.get(key);
    if (bucket === undefined) {
      bucket = { tokens: this.burst, at: nowMs };
      this.#buckets.set(key, bucket);
    } else {
      bucket.tokens = Math.min(this.burst, bucket.tokens + ((nowMs - bucket.at) * this.ratePerS) / 1000);
      bucket.at = nowMs;
    }
    if (bucket.tokens < count) {
      const retryAfterS = Math.max(1, Math.ceil((count - bucket.tokens) / this.ratePerS));
      throw new PlateError("rate_limited", `Over ${this.ratePerS} publishes a second; slow down.`, { retryAfterS });
    }
    bucket.tokens -= count;
  }

  /** Forgets buckets that have refilled completely (they would start full anyway). */
  sweep(nowMs = Date.now()): void {
    for (const [key, bucket] of this.#buckets) {
      if (bucket.tokens + ((nowMs - bucket.at) * this.ratePerS) / 1000 >= this.burst) this.#buckets.delete(key);
    }
  }
}
