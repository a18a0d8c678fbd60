import { performance } from "node:perf_hooks";

/** `SUBSCRIBER_NO_DELAY`: always `TCP_NODELAY`, never (Nagle's algorithm), or by the node's load. */
export type NoDelayMode = boolean | "auto";

/** How often `auto` reads the event loop's load, in ms. */
export const NO_DELAY_SAMPLE_MS = 1000;
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
 * `nagleLoad` of a sample (fan-out heavy: each message a packet, each packet the kernel's largest
 * cost of a delivery), small writes wait for the client's acknowledgement of the one before
 * (Nagle), so fewer packets leave and the node gets through its queue sooner; below
 * `NO_DELAY_RESUME_SHARE` of it they leave at once again. docs/API.md, "When a message leaves for
 * a subscriber", and docs/performance.md give the figures.
 */
export class SubscriberNoDelay {
  #noDelay: boolean;
  readonly #auto: boolean;
  readonly #timer: NodeJS.Timeout | undefined;

  constructor(
    mode: NoDelayMode,
    /** `SUBSCRIBER_NAGLE_LOAD`: the event loop's busy share at which `auto` turns Nagle on. */
    private readonly nagleLoad: number,
    /** Called when `auto` switches, with the load that made it. */
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
    const load = this.readLoad();
    const next = this.#noDelay ? load < this.nagleLoad : load <= this.nagleLoad * NO_DELAY_RESUME_SHARE;
    if (next === this.#noDelay) return;
    this.#noDelay = next;
    this.onSwitch(next, load);
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
