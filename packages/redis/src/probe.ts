/** What a `DeafnessProbe` needs from the connection pair it watches. */
export interface ProbeOptions {
  /** How often a probe is sent, in ms (`REDIS_PROBE_INTERVAL_MS`). */
  readonly intervalMs: number;
  /** How long a probe may take to come back before the subscriber counts as deaf, in ms (`REDIS_PROBE_TIMEOUT_MS`). */
  readonly timeoutMs: number;
  /** Whether a probe is worth sending now (connections up, something to lose). */
  readonly wanted: () => boolean;
  /** Publishes `payload` on the probe channel through the command connection. */
  readonly publish: (payload: string) => Promise<unknown>;
  /**
   * The probe sent with `payload` did not come back in time: the subscriber connection is up but
   * deaf (as after a failover behind a proxy). The owner reconnects it.
   */
  readonly lost: () => void;
}

/**
 * The silent-loss guard of a Redis subscriber connection: every `intervalMs` a payload is
 * published, through the command connection, to a channel only this subscriber listens to. The
 * owner hands every payload that arrives on that channel to `returned`; a probe not back within
 * `timeoutMs` calls `lost`. One probe is in flight at a time; a probe whose publish fails proves
 * nothing (the command connection is down, and readiness already says so) and is forgotten.
 */
export class DeafnessProbe {
  readonly #options: ProbeOptions;
  readonly #timer: NodeJS.Timeout;
  #deadline: NodeJS.Timeout | undefined;
  #seq = 0;

  constructor(options: ProbeOptions) {
    this.#options = options;
    this.#timer = setInterval(() => this.#send(), options.intervalMs);
    this.#timer.unref();
  }

  /** A payload arrived on the probe channel: the subscriber hears. */
  returned(payload: string): void {
    if (payload !== String(this.#seq)) return;
    clearTimeout(this.#deadline);
    this.#deadline = undefined;
  }

  /** Stops probing for good. */
  stop(): void {
    clearInterval(this.#timer);
    clearTimeout(this.#deadline);
    this.#deadline = undefined;
  }

  #send(): void {
    if (this.#deadline !== undefined || !this.#options.wanted()) return;
    const seq = String(++this.#seq);
    this.#deadline = setTimeout(() => {
      this.#deadline = undefined;
      if (seq === String(this.#seq)) this.#options.lost();
    }, this.#options.timeoutMs);
    this.#deadline.unref();
    this.#options.publish(seq).catch(() => {
      clearTimeout(this.#deadline);
      this.#deadline = undefined;
    });
  }
}
