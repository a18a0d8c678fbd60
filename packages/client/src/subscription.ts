import { PlateClientError } from "./errors.js";
import { filterText } from "./filter.js";
import type { SubscriptionFilter } from "./filter.js";
import { openSse } from "./sse.js";
import type { Opened, Target, TransportEvents } from "./transport.js";
import type { Envelope, Ready, Reset, SubscriptionState } from "./types.js";
import { openWs, webSocketImpl } from "./ws.js";
import type { WebSocketConstructor } from "./ws.js";

/** Reconnect delays: full jitter, `random(0, min(maxDelayMs, initialDelayMs × 2^attempt))`. */
export interface ReconnectOptions {
  /** The ceiling of the first delay, in ms. Default `DEFAULT_RECONNECT.initialDelayMs`. */
  readonly initialDelayMs?: number;
  /** The greatest delay, in ms. Default `DEFAULT_RECONNECT.maxDelayMs`. */
  readonly maxDelayMs?: number;
}

/** Defaults of `ReconnectOptions`: a first retry within half a second, never more than 30 s apart. */
export const DEFAULT_RECONNECT = { initialDelayMs: 500, maxDelayMs: 30_000 } as const;

/** The policy `reconnect` options stand for: `undefined` for `false` (never reconnect). */
export function reconnectPolicy(options: ReconnectOptions | false | undefined): Required<ReconnectOptions> | undefined {
  return options === false ? undefined : { ...DEFAULT_RECONNECT, ...options };
}

/**
 * The delay before try `attempt + 1` (0 for the first retry after a drop): full jitter under a
 * ceiling that doubles per attempt, and never sooner than the service's `Retry-After`.
 */
export function reconnectDelay(policy: Required<ReconnectOptions>, attempt: number, retryAfterMs = 0): number {
  const ceiling = Math.min(policy.maxDelayMs, policy.initialDelayMs * 2 ** attempt);
  return Math.max(Math.random() * ceiling, retryAfterMs);
}

/**
 * Ends a connection that received nothing, not even a heartbeat, for this long. The server sends
 * one at least every 25 s of silence (the spec), so 60 s is two missed heartbeats and some slack.
 */
export const DEFAULT_IDLE_TIMEOUT_MS = 60_000;

/** How to subscribe. Every callback is optional. */
export interface SubscribeOptions {
  /** `sse` (default: works through every proxy) or `ws`. */
  readonly transport?: "sse" | "ws";
  /** Resume after this id on the first connect (later connects resume after the last id seen). */
  readonly since?: string;
  /**
   * Only messages that match this filter (spec section 13) are delivered, live or replayed; sent as
   * `?filter=` on every connect. On a client path minted with a filter, both must match.
   */
  readonly filter?: SubscriptionFilter;
  /** `false`: do not reconnect after a drop. */
  readonly reconnect?: ReconnectOptions | false;
  /** See `DEFAULT_IDLE_TIMEOUT_MS`. */
  readonly idleTimeoutMs?: number;
  /** Each time the subscription is live (after every connect). */
  readonly onReady?: (ready: Ready) => void;
  /** The service could not replay what was missed: refetch your state. Live messages follow. */
  readonly onReset?: (reset: Reset) => void;
  /**
   * Every error: `error.retryable` says whether a reconnect follows. A final one (a bad key, a
   * used-up client path, a revoked key) leaves the subscription closed.
   */
  readonly onError?: (error: PlateClientError) => void;
  readonly onStateChange?: (state: SubscriptionState) => void;
}

/** Stops the subscription: closes its connection and cancels any reconnect. */
export type Unsubscribe = () => void;

/** What a subscription needs from its owner: where to connect (asked again before every attempt). */
export interface SubscriptionPlan {
  readonly target: () => Promise<Pick<Target, "url" | "key">>;
  readonly fetch: typeof fetch;
  readonly WebSocket: WebSocketConstructor | undefined;
}

/**
 * One subscription that lives across connections: it reconnects with backoff and jitter after any
 * retryable end, resumes after the last id it delivered (or the position of its last `ready`), and
 * stops on a final error or `unsubscribe`.
 */
export function subscription<T>(plan: SubscriptionPlan, handler: (envelope: Envelope<T>) => void, options: SubscribeOptions): Unsubscribe {
  const transport = options.transport ?? "sse";
  const WebSocketImpl = webSocketImpl(plan.WebSocket);
  if (transport === "ws" && WebSocketImpl === undefined) {
    throw new TypeError("No WebSocket here: pass one in the client's options (Node 20: `WebSocket` from the ws package).");
  }
  const reconnect = reconnectPolicy(options.reconnect);
  const idleTimeoutMs = options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
  // Checked before anything connects: a filter that is not a JSON object throws `invalid_filter` here.
  const filter = options.filter === undefined ? undefined : filterText(options.filter);
  let lastId = options.since;
  let attempt = 0;
  let closed = false;
  let current: Opened | undefined;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let state: SubscriptionState | undefined;

  const setState = (next: SubscriptionState): void => {
    if (next === state) return;
    state = next;
    options.onStateChange?.(next);
  };

  const stop = (): void => {
    if (closed) return;
    closed = true;
    clearTimeout(timer);
    current?.close();
    current = undefined;
    setState("closed");
  };

  /** The position of the current connection's `ready`, until a message arrives after it. */
  let readyPosition: string | undefined;

  const events: TransportEvents = {
    ready(ready) {
      if (closed) return;
      attempt = 0;
      lastId ??= ready.position;
      readyPosition = ready.position;
      setState("open");
      options.onReady?.(ready);
    },
    message(envelope) {
      if (closed) return;
      lastId = envelope.id;
      readyPosition = undefined;
      try {
        handler(envelope as Envelope<T>);
      } catch (err) {
        // A handler's bug must not end the stream (nor skip messages by a reconnect): it is
        // thrown again outside it, where the platform reports uncaught errors.
        setTimeout(() => {
          throw err;
        });
      }
    },
    reset(reset) {
      if (closed) return;
      // A resume that could not replay: the next one starts from where this connection started
      // (its ready's position), not from the id the service could not honour.
      if (readyPosition !== undefined) lastId = readyPosition;
      options.onReset?.(reset);
    },
    end(error) {
      current = undefined;
      readyPosition = undefined;
      if (closed) return;
      options.onError?.(error);
      if (!error.retryable || reconnect === undefined) return stop();
      setState("reconnecting");
      const delay = reconnectDelay(reconnect, attempt, error.details.retryAfterMs);
      attempt += 1;
      timer = setTimeout(connect, delay);
    },
  };

  const connect = (): void => {
    if (closed) return;
    plan
      .target()
      .then(({ url, key }) => {
        if (closed) return;
        const filtered = filter === undefined ? url : withQuery(url, "filter", filter);
        const target: Target = { url: filtered, key, since: lastId, idleTimeoutMs };
        current = transport === "ws" ? openWs(target, events, WebSocketImpl!) : openSse(target, events, plan.fetch);
      })
      .catch((err: unknown) =>
        events.end(err instanceof PlateClientError ? err : new PlateClientError("network_error", `Could not connect: ${String(err)}`, { cause: err })),
      );
  };

  setState("connecting");
  connect();
  return stop;
}

/** `url` with one more query parameter (a client path's URL may already carry some). */
function withQuery(url: string, name: string, value: string): string {
  const out = new URL(url);
  out.searchParams.set(name, value);
  return out.href;
}
