import type { PlateClientError } from "./errors.js";
import type { Envelope, Ready, Reset } from "./types.js";

/** What one connection attempt tells the subscription that opened it. */
export interface TransportEvents {
  ready(ready: Ready): void;
  message(envelope: Envelope): void;
  reset(reset: Reset): void;
  /**
   * The connection is over, once, unless the subscription closed it: `error` says why (a stream
   * the server ended without saying why is a retryable `network_error`).
   */
  end(error: PlateClientError): void;
}

/** Where and how one connection attempt connects. */
export interface Target {
  /** The subscribe URL (route 2 or 3 of the spec) or a client path (route 5), absolute, `http(s)`. */
  readonly url: string;
  /** The API key, for the subscribe routes; undefined for a client path. */
  readonly key: string | undefined;
  /** The last id seen, to resume after. */
  readonly since: string | undefined;
  /** Ends the connection when nothing at all (not even a heartbeat) arrives for this long. */
  readonly idleTimeoutMs: number;
}

/** One open connection attempt. `close` ends it without an `end` event. */
export interface Opened {
  close(): void;
}

/**
 * Calls `onIdle` when `touch` has not been called for `timeoutMs`. One timer per connection,
 * re-armed lazily: `touch` only notes the time, so a busy stream does not reset a timer per chunk.
 */
export class IdleWatch {
  #last = Date.now();
  #timer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    private readonly timeoutMs: number,
    private readonly onIdle: (idleMs: number) => void,
  ) {
    this.#arm(timeoutMs);
  }

  touch(): void {
    this.#last = Date.now();
  }

  /** How long since the last `touch` (or the start), in ms. */
  get idleMs(): number {
    return Date.now() - this.#last;
  }

  stop(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #arm(delayMs: number): void {
    this.#timer = setTimeout(() => {
      const idle = this.idleMs;
      if (idle >= this.timeoutMs) {
        this.#timer = undefined;
        this.onIdle(idle);
      } else {
        this.#arm(this.timeoutMs - idle);
      }
    }, delayMs);
  }
}

/** A WebSocket message's frame: its JSON text parsed, or undefined for anything else (binary, not JSON). */
export function readFrame<T>(data: unknown): T | undefined {
  if (typeof data !== "string") return undefined;
  try {
    return JSON.parse(data) as T;
  } catch {
    return undefined; // not a frame of the service's; nothing to act on
  }
}
