import { PlateClientError } from "./errors.js";
import { filterText } from "./filter.js";
import type { SubscriptionFilter } from "./filter.js";
import { matchesPattern } from "./pattern.js";
import { Presence } from "./realtime-presence.js";
import type { PresenceFrame, PresenceSend, Tracks } from "./realtime-presence.js";
import { openRealtimeSse } from "./realtime-sse.js";
import { nameKey, nameOf } from "./realtime-transport.js";
import type {
  AnyReady,
  PublishRequest,
  RealtimeEvents,
  RealtimeLink,
  RealtimeTarget,
  SubscriptionRequest,
  Unsubscribed,
} from "./realtime-transport.js";
import { openRealtimeWs } from "./realtime-ws.js";
import { DEFAULT_IDLE_TIMEOUT_MS, reconnectDelay, reconnectPolicy } from "./subscription.js";
import type { ReconnectOptions } from "./subscription.js";
import { provideToken, refreshDelayMs } from "./token.js";
import type { ClientToken, TokenProvider } from "./token.js";
import type {
  ConnectionState,
  Envelope,
  PresenceMembers,
  RealtimePublished,
  RealtimeReady,
  RealtimeReset,
  RealtimeSubscriptionState,
  SubscriptionInfo,
  SubscriptionName,
} from "./types.js";
import { webSocketImpl } from "./ws.js";
import type { WebSocketConstructor } from "./ws.js";

/**
 * How many recently delivered message ids a realtime connection remembers, with the subscriptions
 * each went to, so that no subscription gets one message twice. A copy can come again only while
 * a subscription resumes (its replay, or another subscription's, covers messages already handed
 * over), and a replay is at most the service's history of a channel (`HISTORY_COUNT`, at most
 * 10,000); an id is a few dozen bytes, so the set stays under a megabyte.
 */
export const RECENT_IDS_KEPT = 10_000;

/**
 * How many publishes a connection holds while it is not open (connecting, reconnecting); they go
 * out, in order, once it is. One more is refused at once with `rate_limited`. Under the service's
 * default burst of client publishes per connection (`CLIENT_PUBLISH_BURST`, 40), so that a full
 * queue sent at once is not refused for its rate.
 */
export const MAX_QUEUED_PUBLISHES = 32;

/**
 * The service's default largest WebSocket frame from a client (`WS_MAX_CLIENT_FRAME_BYTES`): it
 * closes a connection that sends a larger one (1009), so the client refuses such a publish itself
 * with `payload_too_large` and keeps the connection. Set `maxPublishFrameBytes` to the service's value.
 */
export const DEFAULT_MAX_PUBLISH_FRAME_BYTES = 16_384;

/**
 * The codes of a stream refused over its query's subscriptions (route 9: the name, the key's
 * channels, how many; a filter that is not valid, too large, or one too many for the plate).
 */
const QUERY_REFUSALS: ReadonlySet<string> = new Set([
  "forbidden",
  "invalid_channel",
  "bad_request",
  "invalid_filter",
  "payload_too_large",
  "quota_exceeded",
]);

/** How to open a realtime connection. Every callback is optional. */
export interface RealtimeOptions {
  /**
   * `sse` (the default, as for `subscribe`: works through every proxy; subscriptions made while
   * it is open cost one POST each, or with a signed token a reopen of the stream) or `ws` (needed
   * to `publish`).
   */
  readonly transport?: "sse" | "ws";
  /** `false`: do not reconnect after a drop (every subscription then closes). */
  readonly reconnect?: ReconnectOptions | false;
  /** See `DEFAULT_IDLE_TIMEOUT_MS`. */
  readonly idleTimeoutMs?: number;
  /** See `DEFAULT_MAX_PUBLISH_FRAME_BYTES`. */
  readonly maxPublishFrameBytes?: number;
  /** Each time the connection is open (after every connect), before the subscriptions' `onSubscribed`. */
  readonly onReady?: (ready: RealtimeReady) => void;
  readonly onStateChange?: (state: ConnectionState) => void;
  /**
   * Every error of the connection: `error.retryable` says whether a reconnect follows (or, for a
   * token refresh that failed, another try). After a final one (a bad key, a used-up client path,
   * a revoked key) the connection and all its subscriptions are closed.
   */
  readonly onError?: (error: PlateClientError) => void;
  /**
   * Every message the connection receives, once, after the handlers it went to, with those
   * subscriptions (none: a copy every matching subscription already had, or a message of a client
   * path's subscription that no `subscribe` claimed).
   */
  readonly onMessage?: (envelope: Envelope, delivered: readonly RealtimeSubscription[]) => void;
}

/** How to subscribe on a realtime connection. Every callback is optional. */
export interface RealtimeSubscribeOptions {
  /** Resume after this id on the first connect (later connects resume after the last id delivered). */
  readonly since?: string;
  /**
   * `false`: the connection's own publications (`publish`) do not reach this subscription, live or
   * replayed. Default `true`. (An SSE stream publishes nothing, so it has none to leave out.)
   */
  readonly self?: boolean;
  /**
   * Only messages published with this event name (or one of these) reach the handler; the others
   * still count as delivered (a resume starts after them) and still reach the connection's `onMessage`.
   */
  readonly event?: string | readonly string[];
  /**
   * Only messages that match this filter (spec section 13) are sent for this subscription, live or
   * replayed; it goes with every (re)subscribe. Anything but a JSON object makes `subscribe` throw
   * `invalid_filter`; a filter the service refuses ends the subscription with `invalid_filter` (or
   * `payload_too_large`, `quota_exceeded`) on its `onError`. The service sends each message once
   * per connection, and the client hands it to every subscription whose name covers its channel:
   * a pattern of the same connection that covers a filtered channel brings that channel's other
   * messages to its handler too. On a client path minted for one channel, `subscribe` with a filter
   * ends with `bad_request`: mint the path with the filter, or use `subscribePath`.
   */
  readonly filter?: SubscriptionFilter;
  /**
   * `true`: the channel's presence (route 10): `members`, and `onPresence`, `onJoin`, `onLeave`.
   * WebSocket only, channels only: on SSE, or for a pattern, `subscribe` throws `bad_request`.
   * (To be seen, `track` needs no `presence: true`; this is for watching.)
   */
  readonly presence?: boolean;
  /**
   * With `presence: true`: the whole set of members, each time it is replaced: once the
   * subscription is live, again after every reconnect, and after a gap in the service's own
   * delivery. Rebuild what you derived from `onJoin` / `onLeave` here.
   */
  readonly onPresence?: (members: PresenceMembers) => void;
  /**
   * With `presence: true`: members that joined, or changed their state with `track` (those are
   * also in `previous`, with their old record), after `onLeave` of the same change.
   */
  readonly onJoin?: (joined: PresenceMembers, previous: PresenceMembers) => void;
  /** With `presence: true`: members that left (untracked, unsubscribed, or their connection ended). */
  readonly onLeave?: (left: PresenceMembers) => void;
  /**
   * Each time the service confirms the subscription (on every connect), with the position it
   * starts from. Messages another subscription of the connection also matches may come before it.
   */
  readonly onSubscribed?: (info: SubscriptionInfo) => void;
  /** The service could not replay what this subscription missed: refetch its state. Live messages follow. */
  readonly onReset?: (reset: RealtimeReset) => void;
  /**
   * The service refused the subscription or ended it (`forbidden`, `invalid_channel`, the key's
   * channels changed...): it is closed, unless `error.retryable`, in which case it is asked for
   * again after a backoff. The connection's own errors go to the connection's `onError`.
   */
  readonly onError?: (error: PlateClientError) => void;
}

/** One subscription of a realtime connection. */
export interface RealtimeSubscription {
  readonly name: SubscriptionName;
  readonly state: RealtimeSubscriptionState;
  /** The last id it delivered (or the position it started from): where its next resume starts. */
  readonly lastId: string | undefined;
  /**
   * With `presence: true`: the channel's members as last told (`onPresence`, `onJoin`,
   * `onLeave` hand the same maps). Empty until the first state, and always without `presence`;
   * kept while the connection reconnects, until the service's state replaces it.
   */
  readonly members: PresenceMembers;
  /**
   * Makes this connection a member of the channel with `state` (any JSON value), or replaces its
   * state; resolves once the service holds it. The client keeps the last state the service took
   * and tracks it again after every reconnect (the service forgets a member whose connection
   * ended), until `untrack`. A channel subscription only, WebSocket only; see the README for the
   * codes it rejects with.
   */
  track(state: unknown): Promise<void>;
  /** Ends this connection's membership of the channel (resolves also when it was none). */
  untrack(): Promise<void>;
  /** Stops it: nothing more is delivered to its handler. The connection stays open. */
  unsubscribe(): void;
}

/** What a realtime connection needs from its owner: where to connect (asked again before every attempt). */
export interface RealtimePlan {
  /**
   * Route 9 (`/{plate}/realtime`) with the key (or none, with `tokenProvider`), or a client path
   * (route 5) with none.
   */
  readonly target: () => Promise<{ url: string; key: string | undefined }>;
  /** Signed client tokens (route 11): one before every attempt, and a fresh one before it expires. */
  readonly tokenProvider?: TokenProvider;
  readonly fetch: typeof fetch;
  readonly WebSocket: WebSocketConstructor | undefined;
}

/**
 * One connection (one WebSocket, or one SSE stream) that carries many subscriptions (route 9 of
 * the spec). Make one with `PlateClient.realtime()` or `realtimePath()`.
 *
 * - `subscribe` adds a subscription while the connection is open or not; those made in the same
 *   turn as the connection go in its first request.
 * - Each message arrives once per connection; the client hands it to every subscription it
 *   matches (a channel and a pattern that covers it: both handlers, once each), in order per
 *   channel.
 * - After a drop it reconnects once, with backoff and full jitter, and resumes every subscription
 *   after the last id that subscription delivered; one the service cannot replay gets `onReset`
 *   (a pattern always does: the service keeps no history for patterns).
 * - `publish` (WebSocket only) sends a message from the connection; see its doc for a connection
 *   that is not open.
 * - Presence (WebSocket only): a channel subscription made with `presence: true` holds the
 *   channel's `members` and tells their changes; `track` / `untrack` make the connection a member,
 *   and after a reconnect it subscribes with presence and tracks its last state again.
 * - With a `tokenProvider` (`realtimeWithToken`), it refreshes its signed token before it expires:
 *   on a WebSocket with a frame on the live connection, on SSE by opening the stream again with
 *   the fresh token, each subscription resuming after its last id. A token that expired anyway
 *   (`token_expired`) makes it reconnect with a fresh one.
 * - `close` ends the connection and every subscription; a final error does the same.
 */
export class RealtimeConnection {
  readonly #plan: RealtimePlan;
  readonly #options: RealtimeOptions;
  readonly #transport: "sse" | "ws";
  readonly #WebSocket: WebSocketConstructor | undefined;
  readonly #reconnect: Required<ReconnectOptions> | undefined;
  readonly #idleTimeoutMs: number;
  readonly #maxPublishFrameBytes: number;
  readonly #tokenProvider: TokenProvider | undefined;
  /**
   * Whether subscriptions change by opening the stream again: SSE with a signed token, which the
   * service's POST for changes does not take. Every subscription then goes in the stream's query.
   */
  readonly #reopensToChange: boolean;
  #state: ConnectionState | undefined;
  #closed = false;
  /** Failed attempts since the last `ready`: the backoff's exponent. */
  #failures = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** The current attempt's identity: events of any other are ignored. */
  #attempt: object | undefined;
  #link: RealtimeLink | undefined;
  /** Set by the current attempt's `ready`: subscriptions may be asked for from then on. */
  #clientId: string | undefined;
  /** Whether the current attempt connected with a client path (no key). */
  #viaPath = false;
  /** Whether the last `ready` was v1's (a client path minted for one channel). */
  #v1 = false;
  /**
   * Whether an SSE query carries only subscriptions the service confirmed before: set once a
   * stream was refused over one it had never seen (see `#onEnd`).
   */
  #queryConfirmedOnly = false;
  /** Whether the current attempt's query carries a subscription the service never confirmed. */
  #queriedUnconfirmed = false;
  /** The subscriptions the current attempt's SSE query carries. */
  readonly #queried = new Set<Sub>();
  /** A reopen is due at the end of this turn (see `#reopenSoon`). */
  #reopenDue = false;
  /** The signed token of the current attempt (the last one the service took on it), and when the client got it. */
  #token: { readonly token: ClientToken; readonly at: number } | undefined;
  #refreshTimer: ReturnType<typeof setTimeout> | undefined;
  /** The refresh sent on the current attempt, awaiting its answer. */
  #refreshing: { readonly ref: number; readonly token: ClientToken; readonly at: number } | undefined;
  /** Refreshes failed in a row: their backoff's exponent. */
  #refreshFailures = 0;
  /** Publishes made while the connection was not open, oldest first: sent at the next `ready`. */
  readonly #queued: Publish[] = [];
  /** Publishes sent on the current attempt, awaiting their answer, by ref. */
  readonly #inflight = new Map<number, Publish>();
  readonly #subs = new Map<string, Sub>();
  readonly #patterns = new Set<Sub>();
  /** A client path's subscriptions that no `subscribe` claims yet, on the current attempt. */
  readonly #unclaimed = new Map<string, SubscriptionInfo>();
  /** The current attempt's `subscribe` requests awaiting an answer, by ref. */
  readonly #asked = new Map<number, Sub>();
  /** The current attempt's presence `track` / `untrack` requests awaiting an answer, by ref. */
  readonly #presenceAsked = new Map<number, Sub>();
  #nextRef = 1;
  readonly #recent = new RecentIds(RECENT_IDS_KEPT);

  /** Use `PlateClient.realtime()` or `realtimePath()`. */
  constructor(plan: RealtimePlan, options: RealtimeOptions = {}) {
    this.#plan = plan;
    this.#options = options;
    this.#transport = options.transport ?? "sse";
    this.#WebSocket = webSocketImpl(plan.WebSocket);
    if (this.#transport === "ws" && this.#WebSocket === undefined) {
      throw new TypeError(
        "No WebSocket here: pass one in the client's options (Node 20: `WebSocket` from the ws package).",
      );
    }
    this.#reconnect = reconnectPolicy(options.reconnect);
    this.#idleTimeoutMs = options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
    this.#maxPublishFrameBytes = options.maxPublishFrameBytes ?? DEFAULT_MAX_PUBLISH_FRAME_BYTES;
    this.#tokenProvider = plan.tokenProvider;
    this.#reopensToChange = this.#transport === "sse" && plan.tokenProvider !== undefined;
    this.#setState("connecting");
    this.#connect();
  }

  get state(): ConnectionState {
    return this.#state ?? "connecting";
  }

  /** The service's id of the current connection; undefined until `ready` and between attempts. */
  get clientId(): string | undefined {
    return this.#clientId;
  }

  /** The subscriptions that are not closed, in the order they were made. */
  get subscriptions(): readonly RealtimeSubscription[] {
    return [...this.#subs.values()];
  }

  /**
   * Subscribes to a channel (`"room:1"` or `{ channel: "room:1" }`) or a pattern
   * (`{ pattern: "user:*" }`). `handler` gets every message of it once, in order per channel,
   * across reconnects within the service's history. A name this connection already subscribes to
   * throws `conflict` (unsubscribe first, or share the handler), and a `filter` that is not a JSON
   * object `invalid_filter`. On a client path's connection, subscribing to one of the path's own
   * channels or patterns claims it without a request (with `presence` or `filter`, it is asked for
   * again with them).
   */
  subscribe<T = unknown>(
    name: string | SubscriptionName,
    handler: (envelope: Envelope<T>) => void,
    options: RealtimeSubscribeOptions = {},
  ): RealtimeSubscription {
    const wire = typeof name === "string" ? { channel: name } : nameOf(name);
    const key = nameKey(wire);
    if (this.#closed) throw new PlateClientError("bad_request", "This realtime connection is closed: open another.");
    if (this.#subs.has(key)) {
      throw new PlateClientError(
        "conflict",
        `This connection already subscribes to ${describe(wire)}: unsubscribe first, or share the handler.`,
      );
    }
    if (options.presence === true && (wire.pattern !== undefined || this.#transport !== "ws")) {
      throw new PlateClientError(
        "bad_request",
        wire.pattern !== undefined
          ? "A pattern has no presence: subscribe to a channel with { presence: true }."
          : 'Presence needs the WebSocket transport ({ transport: "ws" }); an SSE stream cannot ask for it.',
      );
    }
    const sub = new Sub(wire, key, handler as (envelope: Envelope) => void, options, {
      release: (s) => this.#release(s),
      presence: (s, tracks) => this.#presence(s, tracks),
      retryDelayMs: (failures, retryAfterMs) =>
        reconnectDelay(this.#reconnect ?? reconnectPolicy(undefined)!, failures, retryAfterMs),
    });
    this.#subs.set(key, sub);
    if (wire.pattern !== undefined) this.#patterns.add(sub);
    const held = this.#unclaimed.get(key);
    if (held !== undefined && this.#v1 && sub.filter !== undefined) {
      // Told after `subscribe` returns, as every other refusal is; the path's channel stays unclaimed.
      this.#forget(sub, v1TakesNoFilter());
      queueMicrotask(() => tell(sub.options.onError, v1TakesNoFilter()));
      return sub;
    }
    this.#unclaimed.delete(key);
    // Presence and a filter are asked for in a `subscribe` frame: a path's own name is asked for again with them.
    if (held !== undefined && options.since === undefined && !(sub.asksAgain && !this.#v1)) {
      sub.onLink = true;
      this.#start(sub, held);
      // Told after `subscribe` returns, as every other `onSubscribed` is.
      queueMicrotask(() => {
        if (sub.state === "live") tell(sub.options.onSubscribed, held);
        if (sub.state === "live" && sub.watches) tell(sub.options.onError, v1HasNoPresence());
      });
    } else if (this.#clientId !== undefined) {
      // A path's subscription claimed with `since`, `presence` or `filter`: asked again, from there.
      if (held !== undefined) {
        sub.lastId ??= held.position;
        this.#link?.unsubscribe(this.#nextRef++, wire);
      }
      this.#ask(sub);
    }
    return sub;
  }

  /**
   * Publishes `message` (any JSON value) to `channel` from this connection (route 12 of the spec),
   * with an event name if given, and `volatile` metadata (small JSON that live subscribers get in
   * the envelope and that is never stored, spec section 13); resolves with the message's id once
   * the service published it.
   * Subscribers get it with `from` naming this connection (`clientId`) and its token's user. The
   * credential must allow it (a token's `publish` claim, a key's scope `publish`).
   *
   * - WebSocket only: on SSE it rejects at once with `bad_request` (a stream only receives; publish
   *   from a backend over HTTP instead). So does a client path minted for one channel (a v1 connection).
   * - Refused by the service: rejects with its code (`forbidden`, `rate_limited`, `invalid_channel`,
   *   `invalid_parameter`, `bad_request`); the connection stays open.
   * - While the connection is not open (connecting, reconnecting) it is held, and sent once it is,
   *   in order; past `MAX_QUEUED_PUBLISHES` held, rejects at once with `rate_limited`.
   * - Sent, then the connection dropped before the answer: rejects with `network_error` (it may or
   *   may not have been published; the client does not send it again, which could publish it twice).
   * - Larger than `maxPublishFrameBytes` once framed: rejects with `payload_too_large`, unsent.
   * - `close()` rejects what is held or unanswered with `connection_closed`, a final error with that error.
   */
  publish(
    channel: string,
    message: unknown,
    options: { readonly event?: string; readonly volatile?: unknown } = {},
  ): Promise<RealtimePublished> {
    if (this.#closed) {
      return Promise.reject(
        new PlateClientError("connection_closed", "This realtime connection is closed: open another."),
      );
    }
    if (this.#transport !== "ws") {
      return Promise.reject(
        new PlateClientError(
          "bad_request",
          "Publishing from a realtime connection needs the WebSocket transport " +
            '({ transport: "ws" }); an SSE stream only receives.',
        ),
      );
    }
    if (this.#v1 && this.#clientId !== undefined) return Promise.reject(v1CannotPublish());
    const request: PublishRequest = {
      channel,
      message,
      ...(options.event === undefined ? {} : { event: options.event }),
      ...(options.volatile === undefined ? {} : { volatile: options.volatile }),
    };
    let bytes: number;
    try {
      // The largest ref the frame may carry, so that the bound holds whatever ref it gets.
      const frame = JSON.stringify({ type: "publish", ref: Number.MAX_SAFE_INTEGER, ...request });
      bytes = new TextEncoder().encode(frame).length;
    } catch (err) {
      return Promise.reject(
        new PlateClientError("bad_request", `The message is not JSON: ${String(err)}`, { cause: err }),
      );
    }
    if (bytes > this.#maxPublishFrameBytes) {
      return Promise.reject(
        new PlateClientError(
          "payload_too_large",
          `The publish frame is ${bytes} bytes; the service takes at most ${this.#maxPublishFrameBytes} ` +
            "from a client (and would close the connection).",
        ),
      );
    }
    return new Promise<RealtimePublished>((resolve, reject) => {
      const publish: Publish = { request, resolve, reject };
      if (this.#clientId !== undefined && this.#link?.publish !== undefined) {
        this.#send(publish);
      } else if (this.#queued.length >= MAX_QUEUED_PUBLISHES) {
        reject(
          new PlateClientError(
            "rate_limited",
            `${MAX_QUEUED_PUBLISHES} publishes already wait for the connection to open; try again once it is.`,
          ),
        );
      } else {
        this.#queued.push(publish);
      }
    });
  }

  /** Closes the connection and every subscription; cancels any reconnect. */
  close(): void {
    if (this.#closed) return;
    this.#attempt = undefined;
    this.#shut(undefined);
  }

  #setState(next: ConnectionState): void {
    if (next === this.#state) return;
    this.#state = next;
    tell(this.#options.onStateChange, next);
  }

  /**
   * Starts an attempt. With a `tokenProvider`, it connects with `token` when given (a fresh one an
   * SSE refresh got, or the current one to reopen with), else with one it asks the provider for.
   */
  #connect(token?: { readonly token: ClientToken; readonly at: number }): void {
    if (this.#closed) return;
    const attempt = {};
    this.#attempt = attempt;
    const events = this.#eventsOf(attempt);
    const provider = this.#tokenProvider;
    const signed =
      token !== undefined || provider === undefined
        ? Promise.resolve(token)
        : provideToken(provider).then((fresh) => ({ token: fresh, at: Date.now() }));
    Promise.all([this.#plan.target(), signed])
      .then(([{ url, key }, signedWith]) => {
        if (this.#attempt !== attempt) return;
        this.#viaPath = key === undefined && signedWith === undefined;
        this.#token = signedWith;
        const target = this.#targetOf(url, key, signedWith?.token);
        this.#link =
          this.#transport === "ws"
            ? openRealtimeWs(target, events, this.#WebSocket!)
            : openRealtimeSse(target, events, this.#plan.fetch);
      })
      .catch((err: unknown) =>
        events.end(
          err instanceof PlateClientError
            ? err
            : new PlateClientError("network_error", `Could not connect: ${String(err)}`, { cause: err }),
        ),
      );
  }

  /**
   * Where an attempt connects.
   * - SSE with a key: the subscriptions in the query, `channel` with `since.<channel>`, and
   *   `pattern`, each with its `filter.<name>`. The query has no `since` for a pattern, so a
   *   pattern that resumes is asked for after `ready` instead, with its `since`: the service then
   *   says with a `reset` that it may have missed messages, where a fresh subscription in the
   *   query would have missed them silently.
   * - A WebSocket with a key: no query; every subscription is asked for with a frame after `ready`,
   *   with its `since`, so that one refused name does not refuse the rest.
   * - A client path: its own channels and patterns come from its token, so the query carries only
   *   `since.<name>` (and v1's `since` / `lastEventId` for a one-channel path).
   * - SSE with a signed token: `?token=`, and every subscription in the query, a pattern that
   *   resumes with its `since.<pattern>` (the service answers it with a `reset`), since nothing
   *   can be asked for after `ready` (see `#reopensToChange`). A WebSocket sends the token in its
   *   first frame, and asks for every subscription after `ready`, as with a key.
   */
  #targetOf(url: string, key: string | undefined, token: ClientToken | undefined): RealtimeTarget {
    const target = new URL(url);
    const query = target.searchParams;
    const viaPath = key === undefined && token === undefined;
    this.#queriedUnconfirmed = false;
    this.#queried.clear();
    if (this.#transport === "sse" && token !== undefined) query.set("token", token);
    for (const sub of this.#subs.values()) {
      const text = describe(sub.name);
      if (viaPath) {
        // A filtered one is asked for again after `ready`, with its `since`: the path's own
        // subscription of the name, which has no filter of the client's, need not replay.
        if (sub.lastId !== undefined && sub.filter === undefined) query.set(`since.${text}`, sub.lastId);
        continue;
      }
      if (this.#transport !== "sse") continue;
      if (!this.#reopensToChange && this.#queryConfirmedOnly && !sub.confirmed) continue;
      if (sub.name.channel !== undefined) {
        query.append("channel", text);
        if (sub.lastId !== undefined) query.set(`since.${text}`, sub.lastId);
      } else if (sub.lastId === undefined) {
        query.append("pattern", text);
      } else if (this.#reopensToChange) {
        query.append("pattern", text);
        query.set(`since.${text}`, sub.lastId);
      } else {
        continue;
      }
      if (sub.filter !== undefined) query.set(`filter.${text}`, sub.filter.text);
      this.#queried.add(sub);
      if (!sub.confirmed) this.#queriedUnconfirmed = true;
    }
    const only = this.#subs.size === 1 ? this.#subs.values().next().value : undefined;
    if (viaPath && this.#v1 && only?.lastId !== undefined)
      query.set(this.#transport === "ws" ? "since" : "lastEventId", only.lastId);
    return { url: target.href, key, token, changes: changesOf(target, key), idleTimeoutMs: this.#idleTimeoutMs };
  }

  /** The events of one attempt: ignored once it is not the current one. */
  #eventsOf(attempt: object): RealtimeEvents {
    const ifCurrent =
      <A extends unknown[]>(handle: (...args: A) => void) =>
      (...args: A): void => {
        if (this.#attempt === attempt && !this.#closed) handle(...args);
      };
    return {
      ready: ifCurrent((ready) => this.#onReady(ready)),
      message: ifCurrent((envelope) => this.#onMessage(envelope)),
      subscribed: ifCurrent((info) => this.#onSubscribed(info)),
      unsubscribed: ifCurrent((frame) => this.#onUnsubscribed(frame)),
      reset: ifCurrent((reset) => this.#onReset(reset)),
      presence: ifCurrent((frame) => this.#onPresence(frame)),
      refused: ifCurrent((ref, error) => this.#onRefused(ref, error)),
      published: ifCurrent((ref, id) => this.#onPublished(ref, id)),
      ok: ifCurrent((ref) => this.#onOk(ref)),
      end: ifCurrent((error) => this.#onEnd(error)),
    };
  }

  #onReady(ready: AnyReady): void {
    this.#failures = 0;
    this.#queriedUnconfirmed = false;
    this.#clientId = ready.clientId;
    this.#v1 = !("subscriptions" in ready);
    const listed: readonly SubscriptionInfo[] =
      "subscriptions" in ready
        ? ready.subscriptions
        : [
            {
              ...(ready.pattern ? { pattern: ready.channel } : { channel: ready.channel }),
              ...(ready.position === undefined ? {} : { position: ready.position }),
            },
          ];
    this.#unclaimed.clear();
    const started: [Sub, SubscriptionInfo][] = [];
    for (const info of listed) {
      const key = nameKey(info);
      const sub = this.#subs.get(key);
      if (sub?.asksAgain === true && this.#viaPath && !this.#v1) {
        // A path's own name, watched or filtered: asked for again below with them, from its position.
        // (An SSE query's subscriptions, listed here too, carried their filters already.)
        sub.lastId ??= info.position;
        this.#stopOnLink(nameOf(info));
      } else if (sub?.filter !== undefined && this.#v1) {
        const error = v1TakesNoFilter();
        this.#forget(sub, error);
        this.#unclaimed.set(key, info);
        tell(sub.options.onError, error);
      } else if (sub !== undefined) {
        sub.onLink = true;
        this.#start(sub, info);
        started.push([sub, info]);
        if (sub.watches) tell(sub.options.onError, v1HasNoPresence());
      } else if (this.#viaPath) {
        this.#unclaimed.set(key, info);
      } else {
        // Asked for in the query, unsubscribed before the connection was ready.
        this.#stopOnLink(nameOf(info));
      }
    }
    // Those the query did not carry, or the service did not take from it (it then says why).
    for (const sub of this.#subs.values()) if (!sub.onLink) this.#ask(sub);
    // Then what was published while it was not open: a connection's requests are carried out in
    // order, so its own subscriptions are in place before its first publication.
    for (const publish of this.#queued.splice(0)) {
      if (this.#v1 || this.#link?.publish === undefined) publish.reject(v1CannotPublish());
      else this.#send(publish);
    }
    this.#armRefresh();
    this.#setState("open");
    tell(this.#options.onReady, { type: "ready", clientId: ready.clientId, subscriptions: listed });
    for (const [sub, info] of started) if (sub.state === "live") tell(sub.options.onSubscribed, info);
  }

  /** Asks the service for a subscription on the open connection (SSE with a token: reopens it, see `#reopenSoon`). */
  #ask(sub: Sub): void {
    if (this.#reopensToChange) {
      // One the query carried and `ready` did not list waits for the next reopen: no loop of reopens.
      if (!this.#queried.has(sub)) this.#reopenSoon();
      return;
    }
    const ref = this.#nextRef++;
    sub.ref = ref;
    sub.onLink = true;
    this.#asked.set(ref, sub);
    this.#link?.subscribe(ref, sub.request());
  }

  #start(sub: Sub, info: SubscriptionInfo): void {
    if (sub.ref !== undefined) this.#asked.delete(sub.ref);
    // Until its first presence frame, a refusal of this ref is about reading the members.
    sub.watchRef = sub.watches ? sub.ref : undefined;
    sub.ref = undefined;
    sub.state = "live";
    sub.refusals = 0;
    sub.confirmed = true;
    sub.startPosition = info.position;
    sub.lastId ??= info.position;
    const link = this.#link;
    if (this.#v1 || link?.track === undefined || link.untrack === undefined || sub.name.channel === undefined) return;
    const channel = sub.name.channel;
    const send: PresenceSend = (tracks) => {
      const ref = this.#nextRef++;
      this.#presenceAsked.set(ref, sub);
      if (tracks === undefined) link.untrack!(ref, channel);
      else link.track!(ref, channel, tracks.state);
      return ref;
    };
    sub.presence.resume(send);
  }

  #onSubscribed(frame: SubscriptionInfo & { readonly ref?: unknown }): void {
    const sub = this.#subs.get(nameKey(frame));
    if (sub === undefined || sub.state !== "pending" || sub.ref === undefined) return;
    // On a WebSocket the answer names its request: an answer to an earlier one (subscribed,
    // unsubscribed, subscribed again) is not this one's.
    if (typeof frame.ref === "number" && frame.ref !== sub.ref) return;
    const info: SubscriptionInfo = {
      ...nameOf(frame),
      ...(frame.position === undefined ? {} : { position: frame.position }),
    };
    this.#start(sub, info);
    tell(sub.options.onSubscribed, info);
  }

  #onUnsubscribed(frame: Unsubscribed): void {
    // No reason: the answer to an unsubscribe of ours, whose subscription is already gone here.
    if (frame.reason === undefined) return;
    const key = nameKey(frame);
    this.#unclaimed.delete(key);
    const sub = this.#subs.get(key);
    if (sub === undefined) return;
    const error = new PlateClientError(
      frame.reason,
      `The service ended the subscription to ${describe(frame)} (${frame.reason}).`,
    );
    this.#forget(sub, error);
    tell(sub.options.onError, error);
  }

  #onRefused(ref: number, error: PlateClientError): void {
    const publish = this.#inflight.get(ref);
    if (publish !== undefined) {
      this.#inflight.delete(ref);
      return publish.reject(error);
    }
    if (this.#refreshing?.ref === ref) return this.#refreshFailed(error);
    const tracking = this.#presenceAsked.get(ref);
    if (tracking !== undefined) {
      this.#presenceAsked.delete(ref);
      const told = tracking.presence.answer(ref, error);
      if (told !== undefined) tell(tracking.options.onError, told);
      return;
    }
    let sub = this.#asked.get(ref);
    this.#asked.delete(ref);
    if (sub === undefined) {
      // After `subscribed`, the service could not read the members (`broker_unavailable`): the
      // subscription is asked for again, as a refused one is.
      sub = [...this.#subs.values()].find((s) => s.watchRef === ref && s.state === "live");
      if (sub === undefined) return;
      this.#stopOnLink(sub.name);
      sub.presence.dropped();
      sub.watchRef = undefined;
      sub.state = "pending";
      sub.ref = ref;
    }
    if (sub.ref !== ref || sub.state === "closed") return;
    sub.ref = undefined;
    sub.onLink = false;
    if (!error.retryable || this.#reconnect === undefined) {
      this.#forget(sub, error);
      tell(sub.options.onError, error);
      return;
    }
    const attempt = this.#attempt;
    sub.retry = setTimeout(
      () => {
        sub.retry = undefined;
        // A new attempt asks for it at its `ready`.
        if (this.#attempt === attempt && this.#clientId !== undefined && sub.state === "pending" && !sub.onLink)
          this.#ask(sub);
      },
      reconnectDelay(this.#reconnect, sub.refusals++, error.details.retryAfterMs),
    );
    tell(sub.options.onError, error);
  }

  #onReset(reset: RealtimeReset): void {
    const sub = this.#subs.get(nameKey(reset));
    if (sub === undefined) return;
    // A resume that could not replay: the next one starts from where this connection started
    // (the position it confirmed), not from the id the service could not honour.
    if (sub.startPosition !== undefined) sub.lastId = sub.startPosition;
    tell(sub.options.onReset, reset);
  }

  #onOk(ref: number): void {
    if (this.#refreshing?.ref === ref) return this.#onRefreshed(ref);
    const tracking = this.#presenceAsked.get(ref);
    this.#presenceAsked.delete(ref);
    tracking?.presence.answer(ref);
  }

  #onPresence(frame: PresenceFrame): void {
    const sub = this.#subs.get(`c:${frame.channel}`);
    // Frames of an earlier server-side subscription (one asked for again) come before it is live.
    if (sub === undefined || sub.state !== "live" || !sub.watches) return;
    sub.watchRef = undefined;
    const change = sub.presence.apply(frame);
    if (change === undefined) return;
    if (change.kind === "state") return tell(sub.options.onPresence, change.members);
    if (change.left.size > 0) tell(sub.options.onLeave, change.left);
    if (change.joined.size > 0) tell(sub.options.onJoin, change.joined, change.previous);
  }

  /** `track` / `untrack` of one subscription (see `RealtimeSubscription.track`). */
  #presence(sub: Sub, tracks: Tracks): Promise<void> {
    const refuse = (code: "bad_request" | "payload_too_large" | "connection_closed", message: string) =>
      Promise.reject(new PlateClientError(code, message));
    if (sub.state === "closed") return refuse("connection_closed", "This subscription is closed: subscribe again.");
    if (this.#transport !== "ws") {
      return refuse(
        "bad_request",
        'Presence needs the WebSocket transport ({ transport: "ws" }); an SSE stream cannot track.',
      );
    }
    if (sub.name.channel === undefined) return refuse("bad_request", "A pattern has no presence: track on a channel.");
    if (this.#v1 && this.#clientId !== undefined) {
      return Promise.reject(v1HasNoPresence());
    }
    if (tracks !== undefined) {
      let bytes: number;
      try {
        // As `publish`: the largest ref the frame may carry.
        const json = JSON.stringify(tracks.state) as string | undefined;
        if (json === undefined) return refuse("bad_request", "A presence state is a JSON value.");
        const frame = JSON.stringify({ type: "presence.track", ref: Number.MAX_SAFE_INTEGER, channel: sub.name.channel, state: tracks.state });
        bytes = new TextEncoder().encode(frame).length;
      } catch (err) {
        return refuse("bad_request", `The state is not JSON: ${String(err)}`);
      }
      if (bytes > this.#maxPublishFrameBytes) {
        return refuse(
          "payload_too_large",
          `The track frame is ${bytes} bytes; the service takes at most ${this.#maxPublishFrameBytes} from a client ` +
            "(and would close the connection).",
        );
      }
    }
    return sub.presence.request(tracks);
  }

  #onMessage(envelope: Envelope): void {
    const matched: Sub[] = [];
    const exact = this.#subs.get(`c:${envelope.channel}`);
    if (exact !== undefined) matched.push(exact);
    for (const sub of this.#patterns) if (matchesPattern(sub.name.pattern!, envelope.channel)) matched.push(sub);
    const delivered: Sub[] = [];
    for (const sub of matched) {
      // A handler may have unsubscribed another one; a copy it already had is not handed again.
      if (sub.state === "closed") continue;
      // A filtered one takes messages only once the service confirmed it with its filter: before,
      // what comes for its name is another subscription's (or a client path's own, unfiltered).
      if (sub.filter !== undefined && sub.state !== "live") continue;
      if (!this.#recent.first(envelope.id, sub)) continue;
      sub.lastId = envelope.id;
      sub.startPosition = undefined;
      delivered.push(sub);
      if (sub.wants(envelope)) tell(sub.handler, envelope);
    }
    tell(this.#options.onMessage, envelope, delivered);
  }

  #onEnd(ended: PlateClientError): void {
    // A stream refused over its query (one name the key may not use, or not a name at all)
    // refuses every subscription with it: the next try carries only those the service took
    // before, and asks for the others one by one after `ready`, so that only the culprit is refused.
    const refusedOverQuery = QUERY_REFUSALS.has(ended.code) && this.#queried.size > 0;
    const overQuery = this.#queriedUnconfirmed && refusedOverQuery;
    const queried = [...this.#queried];
    this.#queriedUnconfirmed = false;
    if (overQuery && !this.#reopensToChange) this.#queryConfirmedOnly = true;
    this.#dropAttempt();
    if (refusedOverQuery && this.#reopensToChange) {
      // With a signed token on SSE nothing can be asked for one by one: those the service never
      // confirmed end with the refusal (every one, when it had confirmed each before: a refreshed
      // token allows fewer), and the stream opens again with the others.
      for (const sub of overQuery ? queried.filter((s) => !s.confirmed) : queried) {
        if (sub.state === "closed") continue;
        this.#forget(sub, ended);
        tell(sub.options.onError, ended);
      }
      this.#timer = setTimeout(() => this.#connect());
      return;
    }
    if (overQuery) {
      this.#timer = setTimeout(() => this.#connect());
      return;
    }
    // With a token provider, an expired token is one more reason to reconnect (with a fresh one).
    const error =
      ended.code === "token_expired" && this.#tokenProvider !== undefined
        ? new PlateClientError(ended.code, ended.message, { ...ended.details, retryable: true })
        : ended;
    tell(this.#options.onError, error);
    if (this.#closed) return; // closed by the callback
    if (!error.retryable || this.#reconnect === undefined) return this.#shut(error);
    this.#setState("reconnecting");
    this.#timer = setTimeout(
      () => this.#connect(),
      reconnectDelay(this.#reconnect, this.#failures++, error.details.retryAfterMs),
    );
  }

  /**
   * Forgets the current attempt: its link, its requests, its token's refresh, and where each
   * subscription stood on it (each is pending again). Publishes it sent and the service did not
   * answer reject with `network_error`: the service may or may not have published them, and
   * sending them again could publish them twice.
   */
  #dropAttempt(): void {
    this.#attempt = undefined;
    this.#link = undefined;
    this.#clientId = undefined;
    this.#asked.clear();
    this.#presenceAsked.clear();
    this.#unclaimed.clear();
    this.#queried.clear();
    clearTimeout(this.#refreshTimer);
    this.#refreshTimer = undefined;
    this.#refreshing = undefined;
    for (const sub of this.#subs.values()) {
      clearTimeout(sub.retry);
      sub.retry = undefined;
      sub.ref = undefined;
      sub.onLink = false;
      sub.startPosition = undefined;
      sub.watchRef = undefined;
      sub.state = "pending";
      sub.presence.dropped();
    }
    for (const publish of this.#inflight.values()) {
      publish.reject(
        new PlateClientError(
          "network_error",
          "The connection dropped before the service answered: the message may or may not have been published.",
        ),
      );
    }
    this.#inflight.clear();
  }

  /**
   * Ends the current attempt on purpose and starts the next one at once (SSE with a signed token:
   * a fresh token, or a subscription asked for), each subscription resuming after its last id.
   */
  #reopen(token: { readonly token: ClientToken; readonly at: number } | undefined): void {
    this.#link?.close();
    this.#dropAttempt();
    this.#setState("reconnecting");
    this.#connect(token);
  }

  /**
   * On SSE with a signed token, a subscription asked for while the stream is open opens it again
   * with the current token, its query carrying every subscription; those asked for in one turn
   * share one reopen. (Not open: the next attempt's query carries it.)
   */
  #reopenSoon(): void {
    if (this.#reopenDue) return;
    this.#reopenDue = true;
    queueMicrotask(() => {
      this.#reopenDue = false;
      if (!this.#closed && this.#clientId !== undefined) this.#reopen(this.#token);
    });
  }

  /**
   * Tells the service to stop a subscription of the open connection. An SSE stream opened with a
   * signed token takes no change: what it still delivers of it is handed to no one, until the
   * next reopen leaves it out.
   */
  #stopOnLink(name: SubscriptionName): void {
    if (this.#clientId !== undefined && !this.#reopensToChange) this.#link?.unsubscribe(this.#nextRef++, name);
  }

  #send(publish: Publish): void {
    const ref = this.#nextRef++;
    this.#inflight.set(ref, publish);
    this.#link!.publish!(ref, publish.request);
  }

  #onPublished(ref: number, id: string): void {
    const publish = this.#inflight.get(ref);
    this.#inflight.delete(ref);
    publish?.resolve({ id });
  }

  /** With a signed token: a refresh timed before it expires (see `refreshDelayMs`), once the connection is open. */
  #armRefresh(): void {
    clearTimeout(this.#refreshTimer);
    this.#refreshTimer = undefined;
    if (this.#tokenProvider === undefined || this.#token === undefined) return;
    const delay = refreshDelayMs(this.#token.token, this.#token.at, Date.now());
    // No readable expiry: the service's token_expired will say when to reconnect with a fresh one.
    if (delay !== undefined) this.#refreshTimer = setTimeout(() => this.#refresh(), delay);
  }

  /**
   * Asks the provider for a fresh token and hands it to the open connection: a WebSocket takes it
   * in a frame and keeps every subscription; an SSE stream is opened again with it.
   */
  #refresh(): void {
    this.#refreshTimer = undefined;
    const attempt = this.#attempt;
    const current = () => this.#attempt === attempt && this.#clientId !== undefined && !this.#closed;
    provideToken(this.#tokenProvider!).then(
      (token) => {
        // Dropped meanwhile: the next attempt asks for a token of its own.
        if (!current()) return;
        const at = Date.now();
        const refresh = this.#link?.refresh;
        if (refresh === undefined) return this.#reopen({ token, at });
        const ref = this.#nextRef++;
        this.#refreshing = { ref, token, at };
        refresh(ref, token);
      },
      (error: PlateClientError) => {
        if (current()) this.#refreshFailed(error);
      },
    );
  }

  #onRefreshed(ref: number): void {
    const refreshing = this.#refreshing;
    if (refreshing?.ref !== ref) return;
    this.#refreshing = undefined;
    this.#refreshFailures = 0;
    this.#token = { token: refreshing.token, at: refreshing.at };
    this.#armRefresh();
  }

  /**
   * A refresh the provider or the service refused: told, and tried again after a backoff. The
   * current token holds until it expires; should none succeed by then, the service's
   * `token_expired` makes the connection reconnect with a fresh one.
   */
  #refreshFailed(failed: PlateClientError): void {
    this.#refreshing = undefined;
    const error = new PlateClientError(failed.code, failed.message, { ...failed.details, retryable: true });
    tell(this.#options.onError, error);
    const policy = this.#reconnect ?? reconnectPolicy(undefined)!;
    this.#refreshTimer = setTimeout(
      () => this.#refresh(),
      reconnectDelay(policy, this.#refreshFailures++, failed.details.retryAfterMs),
    );
  }

  /** `unsubscribe()` of one subscription. */
  #release(sub: Sub): void {
    if (sub.state === "closed") return;
    const onLink = sub.onLink;
    this.#forget(sub);
    if (onLink) this.#stopOnLink(sub.name);
  }

  /**
   * Takes a subscription out: closed, nothing more delivered or asked; its presence requests
   * reject with `error` (default `connection_closed`).
   */
  #forget(sub: Sub, error?: PlateClientError): void {
    if (this.#subs.get(sub.key) === sub) this.#subs.delete(sub.key);
    this.#patterns.delete(sub);
    if (sub.ref !== undefined) this.#asked.delete(sub.ref);
    clearTimeout(sub.retry);
    sub.retry = undefined;
    sub.ref = undefined;
    sub.onLink = false;
    sub.state = "closed";
    sub.presence.close(error);
  }

  /** Closes everything: `error` is the final error that ends it, undefined for `close()`. */
  #shut(error: PlateClientError | undefined): void {
    this.#closed = true;
    clearTimeout(this.#timer);
    clearTimeout(this.#refreshTimer);
    this.#refreshTimer = undefined;
    this.#link?.close();
    this.#link = undefined;
    this.#clientId = undefined;
    for (const sub of [...this.#subs.values()]) this.#forget(sub, error);
    this.#unclaimed.clear();
    for (const publish of this.#queued.splice(0)) {
      publish.reject(
        error ?? new PlateClientError("connection_closed", "The connection was closed: the message was not published."),
      );
    }
    for (const publish of this.#inflight.values()) {
      publish.reject(
        error ??
          new PlateClientError(
            "connection_closed",
            "The connection was closed before the service answered: the message may or may not have been published.",
          ),
      );
    }
    this.#inflight.clear();
    this.#setState("closed");
  }
}

/** One subscription, as its connection keeps it. */
class Sub implements RealtimeSubscription {
  state: RealtimeSubscriptionState = "pending";
  lastId: string | undefined;
  /** The position the service confirmed on the current connection, until a message comes after it. */
  startPosition: string | undefined;
  /** The ref of its pending `subscribe` on the current attempt. */
  ref: number | undefined;
  /** Whether the current attempt holds it or was asked for it. */
  onLink = false;
  /** Refusals in a row that were worth retrying: the backoff's exponent. */
  refusals = 0;
  /** Whether the service ever confirmed it (on any attempt). */
  confirmed = false;
  retry: ReturnType<typeof setTimeout> | undefined;
  /** With `presence: true`, the ref of the `subscribe` it is live by, until its first presence frame. */
  watchRef: number | undefined;
  /** Its presence: the members told, and this connection's membership. */
  readonly presence: Presence;
  /** Its filter as the client took it (a copy: changing the caller's object changes nothing), and its JSON text. */
  readonly filter: { readonly spec: SubscriptionFilter; readonly text: string } | undefined;

  constructor(
    readonly name: SubscriptionName,
    readonly key: string,
    readonly handler: (envelope: Envelope) => void,
    readonly options: RealtimeSubscribeOptions,
    private readonly owner: SubOwner,
  ) {
    this.lastId = options.since;
    const text = options.filter === undefined ? undefined : filterText(options.filter);
    this.filter = text === undefined ? undefined : { spec: JSON.parse(text) as SubscriptionFilter, text };
    this.presence = new Presence((failures, retryAfterMs) => owner.retryDelayMs(failures, retryAfterMs));
  }

  /** Whether it asks for the channel's presence frames. */
  get watches(): boolean {
    return this.options.presence === true;
  }

  /**
   * Whether a client path's own subscription of its name does not do: it is asked for again with
   * what only a `subscribe` frame carries (`presence`, `filter`).
   */
  get asksAgain(): boolean {
    return this.watches || this.filter !== undefined;
  }

  get members(): PresenceMembers {
    return this.presence.members;
  }

  track(state: unknown): Promise<void> {
    return this.owner.presence(this, { state });
  }

  untrack(): Promise<void> {
    return this.owner.presence(this, undefined);
  }

  /** Whether the handler takes `envelope` (its `event` filter, if any). */
  wants(envelope: Envelope): boolean {
    const wanted = this.options.event;
    if (wanted === undefined) return true;
    return typeof wanted === "string" ? envelope.event === wanted : envelope.event !== undefined && wanted.includes(envelope.event);
  }

  /** What a (re)subscribe asks for: its name, the last id it delivered, `self: false`, `presence: true` and its filter if so. */
  request(): SubscriptionRequest {
    const self = this.options.self === false ? { self: false as const } : {};
    const presence = this.watches ? { presence: true as const } : {};
    const filter = this.filter === undefined ? {} : { filter: this.filter.spec };
    return this.lastId === undefined
      ? { ...this.name, ...self, ...presence, ...filter }
      : { ...this.name, since: this.lastId, ...self, ...presence, ...filter };
  }

  unsubscribe(): void {
    this.owner.release(this);
  }
}

/** What a subscription asks of its connection. */
interface SubOwner {
  release(sub: Sub): void;
  presence(sub: Sub, tracks: Tracks): Promise<void>;
  /** The wait before tracking again after a retryable refusal. */
  retryDelayMs(failures: number, retryAfterMs: number | undefined): number;
}

/** A publish of the connection, until the service answers it. */
interface Publish {
  readonly request: PublishRequest;
  readonly resolve: (published: RealtimePublished) => void;
  readonly reject: (error: PlateClientError) => void;
}

function v1CannotPublish(): PlateClientError {
  return new PlateClientError(
    "bad_request",
    "A client path minted for one channel opens a v1 connection, which cannot publish: " +
      "mint it with channels, or use a signed token.",
  );
}

function v1HasNoPresence(): PlateClientError {
  return new PlateClientError(
    "bad_request",
    "A client path minted for one channel opens a v1 connection, which has no presence: mint it with channels.",
  );
}

function v1TakesNoFilter(): PlateClientError {
  return new PlateClientError(
    "bad_request",
    "A client path minted for one channel opens a v1 connection, which takes no filter from subscribe: " +
      "mint the path with the filter, or use subscribePath(path, handler, { filter }).",
  );
}

/**
 * The message ids a connection handed over lately and to which subscriptions (see
 * `RECENT_IDS_KEPT`), the oldest forgotten first. Ids are unique within a plate, and a connection
 * belongs to one plate.
 */
class RecentIds {
  readonly #ids = new Map<string, Sub[]>();

  constructor(private readonly max: number) {}

  /** Notes that `sub` gets `id`; false when it already had it. */
  first(id: string, sub: Sub): boolean {
    const subs = this.#ids.get(id);
    if (subs === undefined) {
      this.#ids.set(id, [sub]);
      if (this.#ids.size > this.max) this.#ids.delete(this.#ids.keys().next().value!);
      return true;
    }
    if (subs.includes(sub)) return false;
    subs.push(sub);
    return true;
  }
}

/**
 * Calls one of the caller's handlers or callbacks. Its bug must not end the connection (a throw
 * inside a transport's event ends the attempt, and a reconnect would skip or repeat work): it is
 * thrown again outside, where the platform reports uncaught errors.
 */
function tell<A extends unknown[]>(callback: ((...args: A) => void) | undefined, ...args: A): void {
  if (callback === undefined) return;
  try {
    callback(...args);
  } catch (err) {
    setTimeout(() => {
      throw err;
    });
  }
}

/** The channel or the pattern, as text. */
function describe(name: SubscriptionName): string {
  return name.channel ?? name.pattern;
}

/**
 * Where an SSE stream's changes go: `{url}/{clientId}` for route 9, and for a client path
 * (`…/{plate}/s/{token}`) `…/{plate}/realtime/{clientId}` with the path's token as the credential.
 */
function changesOf(url: URL, key: string | undefined): RealtimeTarget["changes"] {
  const path = /\/s\/([^/]+)\/?$/.exec(url.pathname);
  const base =
    url.origin + (path === null ? url.pathname.replace(/\/+$/, "") : url.pathname.slice(0, path.index) + "/realtime");
  return {
    url: (clientId) => `${base}/${encodeURIComponent(clientId)}`,
    credential: key ?? decodeURIComponent(path?.[1] ?? ""),
  };
}
