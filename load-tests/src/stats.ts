import { NO_USER } from "./payload.js";

/** Latency samples of one step, in ms; percentiles by sorting once at the end. */
export class Latencies {
  #samples = new Float64Array(1024);
  #count = 0;

  add(ms: number): void {
    if (this.#count === this.#samples.length) {
      const grown = new Float64Array(this.#samples.length * 2);
      grown.set(this.#samples);
      this.#samples = grown;
    }
    this.#samples[this.#count++] = ms;
  }

  get count(): number {
    return this.#count;
  }

  /** p50, p90, p99, p99.9 and max, in ms (all 0 without samples). */
  summary(): LatencySummary {
    const sorted = this.#samples.slice(0, this.#count).sort();
    const at = (q: number) => (sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!);
    return {
      samples: sorted.length,
      p50: round(at(0.5)),
      p90: round(at(0.9)),
      p99: round(at(0.99)),
      p999: round(at(0.999)),
      max: round(sorted.length === 0 ? 0 : sorted[sorted.length - 1]!),
    };
  }
}

export interface LatencySummary {
  readonly samples: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly p999: number;
  readonly max: number;
}

/** One step of a run: a publish rate held for a time (a fixed run is one step). */
export class Step {
  /** Publishes the server accepted (2xx). */
  accepted = 0;
  /** Publishes refused or failed. */
  failed = 0;
  /** Those publishes by why (`Publisher.publish`'s answer: an error code, `http_429`, ...). */
  readonly failures = new Map<string, number>();
  /** Deliveries of distinct messages to subscribers. */
  delivered = 0;
  duplicates = 0;
  /** Deliveries that came after a later message of the same publisher and channel. */
  reordered = 0;
  readonly latencies = new Latencies();
  /**
   * Per message sampled (by `messageKey`): the latency of its first and of its last sampled read,
   * in ms. A percentile of all deliveries mixes two things, the server's way to its fan-out (every
   * subscriber of a message late together) and the fan-out's spread (the later ones in its turn);
   * `readsSummary` gives them apart.
   */
  readonly #reads = new Map<number, MessageReads>();

  /** One sampled delivery of the message keyed `key`, `ms` after it was sent. */
  read(key: number, ms: number): void {
    const reads = this.#reads.get(key);
    if (reads === undefined) this.#reads.set(key, { first: ms, last: ms });
    else if (ms < reads.first) reads.first = ms;
    else if (ms > reads.last) reads.last = ms;
  }

  /**
   * Over the messages sampled: the latency of each one's first read ("first read": publish to
   * fan-out, and the harness's read) and the time from its first read to its last ("spread").
   */
  readsSummary(): { firstReadMs: LatencySummary; spreadMs: LatencySummary } {
    const first = new Latencies();
    const spread = new Latencies();
    for (const reads of this.#reads.values()) {
      first.add(reads.first);
      spread.add(reads.last - reads.first);
    }
    return { firstReadMs: first.summary(), spreadMs: spread.summary() };
  }

  /**
   * Every message sampled, in send order: its send time on `CLOCK_MONOTONIC` (ms, the clock of
   * `perf record -k mono` and `perf sched record -k mono`), and the latency of its first and last
   * sampled read (ms). A percentile says how late the late messages were; this says when, so each
   * one can be lined up with what the CPUs ran then (load-tests/README.md, "Tracing late messages").
   */
  readsTrace(): [sentMonoMs: number, firstMs: number, lastMs: number][] {
    const out: [number, number, number][] = [];
    for (const [key, reads] of this.#reads) out.push([monotonicMs(sentOfKey(key)), reads.first, reads.last]);
    return out.sort((a, b) => a[0] - b[0]);
  }

  /** Counts one publish that was not accepted, and why. */
  refused(why: string): void {
    this.failed += 1;
    this.failures.set(why, (this.failures.get(why) ?? 0) + 1);
  }

  constructor(
    readonly index: number,
    /** Target publish rate, messages/s (0: as fast as the publishers go). */
    readonly rate: number,
    /** When it started, `performance.now()` ms. */
    readonly startMs: number,
  ) {}
}

interface MessageReads {
  first: number;
  last: number;
}

/**
 * A message's key among a step's: its send time in µs and its publisher (publishers send one
 * message at a time each, and a publisher's sequence numbers are per channel).
 */
function messageKey(publisher: number, sentMs: number): number {
  return Math.round(sentMs * 1000) * 4096 + (publisher % 4096);
}

/** The send time (`performance.now()` ms, to the µs) a `messageKey` holds. */
function sentOfKey(key: number): number {
  return Math.floor(key / 4096) / 1000;
}

/**
 * `CLOCK_MONOTONIC` ms minus `performance.now()`: Node's `performance.now()` counts from the
 * process's start on that clock (libuv's hrtime), and `process.hrtime` reads it as is. Read
 * `performance.now()` first: the global loads perf_hooks on its first use, which takes 1-2 ms,
 * and an offset read across that load put every traced send time that much late.
 */
const MONOTONIC_OFFSET_MS = (() => {
  const before = performance.now();
  const monotonic = Number(process.hrtime.bigint()) / 1e6;
  return monotonic - (before + performance.now()) / 2;
})();

/** A `performance.now()` time (ms) on `CLOCK_MONOTONIC`, the clock of `perf record -k mono`. */
export function monotonicMs(performanceMs: number): number {
  return performanceMs + MONOTONIC_OFFSET_MS;
}

/** What one subscriber has seen of one publisher on its channel: a bitset of sequence numbers. */
class Seen {
  bits = new Uint8Array(128);
  last = -1;

  /** Marks `seq`; answers false when it was already there. */
  mark(seq: number): boolean {
    const byte = seq >> 3;
    if (byte >= this.bits.length) {
      const grown = new Uint8Array(Math.max(byte + 1, this.bits.length * 2));
      grown.set(this.bits);
      this.bits = grown;
    }
    const bit = 1 << (seq & 7);
    if ((this.bits[byte]! & bit) !== 0) return false;
    this.bits[byte]! |= bit;
    return true;
  }
}

/**
 * Everything a run counts. Steps begin in time order; a delivery belongs to the step its message
 * was sent in (by its send time), so a step's loss and latency are its own messages'.
 */
export class RunStats {
  readonly steps: Step[] = [];
  /**
   * Deliveries a filtered subscriber got of a message its filter does not match (warm-up messages
   * too): never counted as delivered, and the server's fault.
   */
  wrong = 0;

  begin(rate: number, nowMs: number): Step {
    const step = new Step(this.steps.length, rate, nowMs);
    this.steps.push(step);
    return step;
  }

  /** The step a message sent at `sentMs` belongs to. */
  stepAt(sentMs: number): Step | undefined {
    for (let i = this.steps.length - 1; i >= 0; i--) {
      const step = this.steps[i]!;
      if (step.startMs <= sentMs) return step;
    }
    return undefined;
  }

  /**
   * Per-subscriber bookkeeping of what it has seen. `user` is the one its filter names
   * (`userFilter`): then only payloads of that user count, any other is `wrong`.
   */
  tracker(sample: boolean, user: number = NO_USER): DeliveryTracker {
    return new DeliveryTracker(this, sample, user);
  }
}

/** The publisher id of warm-up messages, which no step counts. */
export const WARMUP_PUBLISHER = 999_999;

/** Counts one subscriber's deliveries into the run's steps. */
export class DeliveryTracker {
  readonly #seen = new Map<number, Seen>();
  /** Deliveries this subscriber received (distinct). */
  received = 0;
  /** Whether a warm-up message reached it: its subscription is live end to end. */
  warmed = false;

  constructor(
    private readonly run: RunStats,
    /** Whether this subscriber reads eagerly, so its latencies are recorded. */
    private readonly sample: boolean,
    /** The user its filter names, or `NO_USER` for a subscriber without a filter. */
    private readonly user: number = NO_USER,
  ) {}

  /** One payload (of `user`, `NO_USER` when it names none) received at `nowMs`. */
  record(seq: number, publisher: number, sentMs: number, nowMs: number, user: number = NO_USER): void {
    if (this.user !== NO_USER && user !== this.user) {
      this.run.wrong += 1;
      return;
    }
    if (publisher === WARMUP_PUBLISHER) {
      this.warmed = true;
      return;
    }
    const step = this.run.stepAt(sentMs);
    if (step === undefined) return;
    let seen = this.#seen.get(publisher);
    if (seen === undefined) {
      seen = new Seen();
      this.#seen.set(publisher, seen);
    }
    if (!seen.mark(seq)) {
      step.duplicates += 1;
      return;
    }
    if (seq < seen.last) step.reordered += 1;
    else seen.last = seq;
    step.delivered += 1;
    this.received += 1;
    if (this.sample) {
      step.latencies.add(nowMs - sentMs);
      step.read(messageKey(publisher, sentMs), nowMs - sentMs);
    }
  }
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}
