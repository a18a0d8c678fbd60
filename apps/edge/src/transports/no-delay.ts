import { performance } from "node:perf_hooks";

/** `SUBSCRIBER_NO_DELAY`: always `TCP_NODELAY`, never (Nagle's algorithm), or by the node's load. */
export type NoDelayMode = boolean | "auto";

/**
 * How often `auto` reads the event loop's load, in ms. Each reading covers the time since the one
 * before. It was 1000: a burst of fan-out then ran on TCP_NODELAY for up to a second before Nagle
 * came on, and at W1 (load-tests) that second, at twice the CPU a delivery, was where the run's p99
 * came from (11-14 ms against 7.6-7.9 with Nagle throughout; docs/performance.md, 2026-12-05).
 */
export const NO_DELAY_SAMPLE_MS = 100;
/**
 * Nagle comes on when the mean load of the last this many readings (200 ms at 100 ms a reading)
 * reaches `SUBSCRIBER_NAGLE_LOAD`: one busy reading alone may be a pause (a garbage collection, a
 * start-up), not traffic.
 */
export const NO_DELAY_BUSY_SAMPLES = 2;
/**
 * `TCP_NODELAY` comes back when the mean load of the last this many readings (1 s) falls to
 * `NO_DELAY_RESUME_SHARE` of the bound: traffic that pauses for a moment finds Nagle still on when
 * it comes back rather than paying for a switch each way, and one busier reading (a scrape of
 * /metrics, say) does not hold Nagle on by itself.
 */
export const NO_DELAY_QUIET_SAMPLES = 10;

/**
 * `auto` turns `TCP_NODELAY` back on once the load falls to this share of `SUBSCRIBER_NAGLE_LOAD`
 * (12.5% at its default of 50%). Nagle itself lowers the load it was turned on for, so the bound must lie
 * below what the same traffic costs with Nagle, or the switch flips back at the next reading: at
 * W1 (load-tests, 100,000 deliveries/s on one core) a node at 85% with `TCP_NODELAY` ran at 33%
 * with Nagle, and with the bound at half (40%) it went back the next second, every time
 * (docs/performance.md, 2026-12-05). A quarter holds for traffic that Nagle makes up to 4× cheaper.
 */
export const NO_DELAY_RESUME_SHARE = 0.25;

/**
 * Whether subscriber sockets should run with `TCP_NODELAY` now. Each connection asks before it
 * writes (`Connection.followNoDelay`) and changes its socket's option only when the answer
 * changed, so a switch costs one `setsockopt` per socket that is still written to.
 *
 * With `auto`, a message leaves at once while the node has room; once its event loop is busy for
 * `nagleLoad` over `NO_DELAY_BUSY_SAMPLES` readings (fan-out heavy: each message a packet, each
 * packet the kernel's largest cost of a delivery), small writes wait for the client's
 * acknowledgement of the one before (Nagle), so fewer packets leave and the node gets through its
 * queue sooner; once the load over `NO_DELAY_QUIET_SAMPLES` readings is at or below
 * `NO_DELAY_RESUME_SHARE` of it they leave at once again. Only readings since the last switch count. docs/API.md, "When a message leaves for
 * a subscriber", and docs/performance.md give the figures.
 */
export class SubscriberNoDelay {
  #noDelay: boolean;
  readonly #auto: boolean;
  /** The last readings since the last switch, in a ring: `#count` of them, the next at `#next`. */
  readonly #loads = new Float64Array(NO_DELAY_QUIET_SAMPLES);
  #count = 0;
  #next = 0;
  readonly #timer: NodeJS.Timeout | undefined;

  constructor(
    mode: NoDelayMode,
    /** `SUBSCRIBER_NAGLE_LOAD`: the event loop's busy share at which `auto` turns Nagle on. */
    private readonly nagleLoad: number,
    /** Called when `auto` switches, with the load that made it (the mean of the readings it went by). */
    private readonly onSwitch: (noDelay: boolean, load: number) => void = () => undefined,
    /** The event loop's busy share (0 to 1) since the previous call. */
    private readonly readLoad: () => number = eventLoopLoad(),
  ) {
    this.#noDelay = mode !== false;
    this.#auto = mode === "auto";
    if (!this.#auto) return;
    this.#timer = setInterval(() => this.sample(), NO_DELAY_SAMPLE_MS);
    this.#timer.unref();
  }

  get noDelay(): boolean {
    return this.#noDelay;
  }

  /** Reads the load since the last reading and switches when it crossed a bound (`auto` only). */
  sample(): void {
    if (!this.#auto) return;
    const loads = this.#loads;
    loads[this.#next] = this.readLoad();
    this.#next = (this.#next + 1) % loads.length;
    if (this.#count < loads.length) this.#count += 1;
    const over = this.#noDelay ? NO_DELAY_BUSY_SAMPLES : NO_DELAY_QUIET_SAMPLES;
    if (this.#count < over) return;
    let sum = 0;
    for (let i = 1; i <= over; i++) sum += loads[(this.#next - i + loads.length) % loads.length]!;
    const load = sum / over;
    if (this.#noDelay ? load < this.nagleLoad : load > this.nagleLoad * NO_DELAY_RESUME_SHARE) return;
    this.#count = 0;
    this.#noDelay = !this.#noDelay;
    this.onSwitch(this.#noDelay, load);
  }

  close(): void {
    clearInterval(this.#timer);
  }
}

/** The node's event-loop utilisation since the previous call (Node's `eventLoopUtilization`). */
function eventLoopLoad(): () => number {
  let last = performance.eventLoopUtilization();
  return () => {
    const now = performance.eventLoopUtilization();
    const load = performance.eventLoopUtilization(now, last).utilization;
    last = now;
    return load;
  };
}
