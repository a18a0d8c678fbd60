import { PlateError } from "@plate/protocol";

/** The state of one token bucket: tokens left, as of `at` (epoch ms). */
export interface Bucket {
  tokens: number;
  at: number;
}

/**
 * A token bucket's rule: `ratePerS` tokens refill each second up to `burst`; `what` names what
 * a token pays for, in the refusal ("publishes", "publishes from this connection").
 */
export class Rate {
  constructor(
    /** Tokens per second; 0 turns the rule off. */
    readonly ratePerS: number,
    readonly burst: number,
    private readonly what = "publishes",
  ) {}

  /** A full bucket. */
  bucket(nowMs = Date.now()): Bucket {
    return { tokens: this.burst, at: nowMs };
  }

  /** Takes `count` tokens from `bucket`, or none and throws `rate_limited` with the seconds until they are back. */
  take(bucket: Bucket, nowMs = Date.now(), count = 1): void {
    if (this.ratePerS === 0) return;
    bucket.tokens = Math.min(this.burst, bucket.tokens + ((nowMs - bucket.at) * this.ratePerS) / 1000);
    bucket.at = nowMs;
    if (bucket.tokens < count) {
      const retryAfterS = Math.max(1, Math.ceil((count - bucket.tokens) / this.ratePerS));
      throw new PlateError("rate_limited", `Over ${this.ratePerS} ${this.what} a second; slow down.`, { retryAfterS });
    }
    bucket.tokens -= count;
  }

  /** Whether `bucket` has refilled completely by `nowMs` (a new one would start the same). */
  full(bucket: Bucket, nowMs: number): boolean {
    return bucket.tokens + ((nowMs - bucket.at) * this.ratePerS) / 1000 >= this.burst;
  }
}

/**
 * A token bucket per key (a plate), by one `Rate`. One bucket costs one small object; idle buckets
 * that are full again are swept by `sweep`.
 */
export class RateLimiter {
  readonly #buckets = new Map<string, Bucket>();
  readonly #rate: Rate;

  constructor(ratePerS: number, burst: number, what?: string) {
    this.#rate = new Rate(ratePerS, burst, what);
  }

  /**
   * Takes `count` tokens for `key` (a batch takes one per message), or none and throws
   * `rate_limited` with the seconds until they are back.
   */
  take(key: string, nowMs = Date.now(), count = 1): void {
    if (this.#rate.ratePerS === 0) return;
    let bucket = this.#buckets.get(key);
    if (bucket === undefined) {
      bucket = this.#rate.bucket(nowMs);
      this.#buckets.set(key, bucket);
    }
    this.#rate.take(bucket, nowMs, count);
  }

  /** Forgets buckets that have refilled completely (they would start full anyway). */
  sweep(nowMs = Date.now()): void {
    for (const [key, bucket] of this.#buckets) {
      if (this.#rate.full(bucket, nowMs)) this.#buckets.delete(key);
    }
  }
}
