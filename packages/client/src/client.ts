import { PlateClientError, errorFromResponse } from "./errors.js";
import { filterText } from "./filter.js";
import type { SubscriptionFilter } from "./filter.js";
import { RealtimeConnection } from "./realtime.js";
import type { RealtimeOptions } from "./realtime.js";
import { subscription } from "./subscription.js";
import type { SubscribeOptions, Unsubscribe } from "./subscription.js";
import type { TokenProvider } from "./token.js";
import type { ChannelOccupancy, ChannelPresence, ClientPath, Envelope, Occupancy, Published } from "./types.js";
import type { WebSocketConstructor } from "./ws.js";

/** How to reach one plate. */
export interface PlateClientOptions {
  /** The service's base URL, e.g. `https://plate.example.com`. */
  readonly url: string;
  readonly plate: string;
  /** An API key of the plate. Keep it on your servers; browsers get client paths instead. */
  readonly key: string;
  /** Default: the platform's `fetch`. */
  readonly fetch?: typeof fetch;
  /** Default: the platform's `WebSocket` (Node 20 has none: pass the `ws` package's). */
  readonly WebSocket?: WebSocketConstructor;
}

/** Options of `clientPath` (route 4 of the spec); the service's defaults apply to those left out. */
export interface ClientPathOptions {
  readonly pattern?: boolean;
  /** Successful connections the path allows; 0 = unlimited. Service default 1. */
  readonly maxUses?: number;
  /** How long the path stays valid unused, in ms (1 to 600,000). Service default 300,000. */
  readonly ttlMs?: number;
  /** How long a connection made with it may last, in ms; 0 = unlimited (the default). */
  readonly maxDurationMs?: number;
  /**
   * Further channels the path subscribes to, besides the route's one: a path minted with
   * `channels` or `patterns` opens a realtime connection (route 9) holding all of them; use it
   * with `realtimePath`.
   */
  readonly channels?: readonly string[];
  /** Further patterns (of `*` and `?`) the path subscribes to; see `channels`. */
  readonly patterns?: readonly string[];
  /**
   * A filter (spec section 13) the path enforces on everything it subscribes to: the client
   * cannot remove it, and a filter the client adds must match as well.
   */
  readonly filter?: SubscriptionFilter;
}

/** Publish and subscribe with an API key (a backend, a script, an operator's console). */
export class PlateClient {
  readonly #base: string;
  readonly #plate: string;
  readonly #key: string;
  readonly #fetch: typeof fetch;
  readonly #WebSocket: WebSocketConstructor | undefined;

  constructor(options: PlateClientOptions) {
    this.#base = options.url.replace(/\/+$/, "");
    this.#plate = options.plate;
    this.#key = options.key;
    this.#fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.#WebSocket = options.WebSocket;
  }

  /**
   * Publishes one JSON value. With `idempotencyKey`, a retry of the same publish (same key, within
   * the service's window) answers the first publish's id and is not delivered twice. `volatile`
   * (small JSON, spec section 13) reaches live subscribers in the envelope and is never stored:
   * a replayed message has none.
   */
  async publish(
    channel: string,
    message: unknown,
    options: { idempotencyKey?: string; signal?: AbortSignal; event?: string; volatile?: unknown } = {},
  ): Promise<Published> {
    const headers: Record<string, string> = { "Content-Type": "application/json", Authorization: `Bearer ${this.#key}` };
    if (options.idempotencyKey !== undefined) headers["Idempotency-Key"] = options.idempotencyKey;
    const body: Record<string, unknown> = { message };
    if (options.event !== undefined) body.event = options.event;
    if (options.volatile !== undefined) body.volatile = options.volatile;
    return this.#call<Published>(this.#route(channel, "publish"), {
      method: "POST",
      headers,
      body: JSON.stringify(body),
      ...(options.signal === undefined ? {} : { signal: options.signal }),
    });
  }

  /** Mints a client path for an untrusted client (a browser): it subscribes with no key. */
  async clientPath(channel: string, options: ClientPathOptions = {}): Promise<ClientPath> {
    const body: Record<string, unknown> = {};
    if (options.pattern !== undefined) body.pattern = options.pattern;
    if (options.maxUses !== undefined) body.max_uses = options.maxUses;
    if (options.ttlMs !== undefined) body.ttl = options.ttlMs;
    if (options.maxDurationMs !== undefined) body.max_dur = options.maxDurationMs;
    if (options.channels !== undefined) body.channels = options.channels;
    if (options.patterns !== undefined) body.patterns = options.patterns;
    if (options.filter !== undefined) {
      filterText(options.filter); // as a subscription's: anything but a JSON object throws `invalid_filter`, unsent
      body.filter = options.filter;
    }
    const data = await this.#call<Omit<ClientPath, "url">>(this.#route(channel, "client"), {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${this.#key}` },
      body: JSON.stringify(body),
    });
    return { ...data, url: this.#base + data.path };
  }

  /**
   * The members of a channel's presence (route 10 of the spec), from any node: every connection
   * that tracked a state there and did not leave. Needs the key's scope `subscribe` on the channel.
   */
  async presence(channel: string, options: { signal?: AbortSignal } = {}): Promise<ChannelPresence> {
    return this.#call<ChannelPresence>(this.#route(channel, "presence"), {
      headers: { Authorization: `Bearer ${this.#key}` },
      ...(options.signal === undefined ? {} : { signal: options.signal }),
    });
  }

  /**
   * The plate's channels that have at least one subscriber (occupancy, route 10 of the spec), with
   * how many connections subscribe to each over every node, sorted by name; only those whose
   * name starts with `prefix` when given. A key limited to some channels sees only those.
   */
  async channels(options: { prefix?: string; signal?: AbortSignal } = {}): Promise<Occupancy> {
    const query = options.prefix === undefined || options.prefix === "" ? "" : `?prefix=${encodeURIComponent(options.prefix)}`;
    const res = await this.#send(`${this.#base}/${encodeURIComponent(this.#plate)}/channels${query}`, {
      headers: { Authorization: `Bearer ${this.#key}` },
      ...(options.signal === undefined ? {} : { signal: options.signal }),
    });
    const body = (await res.json()) as { data: ChannelOccupancy[]; truncated?: boolean };
    return { channels: body.data, truncated: body.truncated === true };
  }

  /**
   * Subscribes to a channel (or, with `{pattern: true}`, to a pattern of `*` and `?`). `handler`
   * gets every message once, in order, across reconnects within the service's history; when the
   * service cannot replay what was missed, `onReset` says so before live messages go on. With
   * `filter`, only the messages that match it are delivered (a filter that is not a JSON object
   * throws `invalid_filter`; one the service refuses ends the subscription with it).
   */
  subscribe<T = unknown>(channel: string, handler: (envelope: Envelope<T>) => void, options: SubscribeOptions & { pattern?: boolean } = {}): Unsubscribe {
    const route = options.transport === "ws" ? "ws" : "subscribe";
    const url = this.#route(channel, route) + (options.pattern === true ? "?pattern=true" : "");
    const target = { url, key: this.#key };
    return subscription({ target: () => Promise.resolve(target), fetch: this.#fetch, WebSocket: this.#WebSocket }, handler, options);
  }

  /**
   * Opens one realtime connection (route 9): every `subscribe` on it shares its one WebSocket or
   * SSE stream, and a drop reconnects once and resumes every subscription (see
   * `RealtimeConnection`). Subscriptions made in the same turn go in its first request:
   *
   * ```ts
   * const rt = plate.realtime({ transport: "ws", onStateChange: console.log });
   * const room = rt.subscribe("room:1", (m) => show(m.message), { onReset: refetch });
   * rt.subscribe({ pattern: "user:*" }, (m) => show(m.channel, m.message));
   * room.unsubscribe(); // the connection stays open
   * rt.close();
   * ```
   */
  realtime(options: RealtimeOptions = {}): RealtimeConnection {
    const target = { url: `${this.#base}/${encodeURIComponent(this.#plate)}/realtime`, key: this.#key };
    return new RealtimeConnection({ target: () => Promise.resolve(target), fetch: this.#fetch, WebSocket: this.#WebSocket }, options);
  }

  /** `/{plate}/pubsub/{channel}/{action}`; `?` (a pattern's one-character wildcard) is escaped. */
  #route(channel: string, action: string): string {
    return `${this.#base}/${encodeURIComponent(this.#plate)}/pubsub/${channel.replaceAll("?", "%3F")}/${action}`;
  }

  async #call<T>(url: string, init: RequestInit): Promise<T> {
    const res = await this.#send(url, init);
    return ((await res.json()) as { data: T }).data;
  }

  /** A request to the service: its 2xx answer, or throws its error (`network_error` when unreachable). */
  async #send(url: string, init: RequestInit): Promise<Response> {
    let res: Response;
    try {
      res = await this.#fetch(url, init);
    } catch (err) {
      throw new PlateClientError("network_error", `Could not reach ${this.#base}: ${String(err)}`, { cause: err });
    }
    if (!res.ok) throw await errorFromResponse(res);
    return res;
  }
}

/** Options of `subscribePath`. */
export interface SubscribePathOptions extends SubscribeOptions {
  /** The base a relative path is resolved against. Default: the page's origin (`location.origin`). */
  readonly base?: string;
  readonly fetch?: typeof fetch;
  readonly WebSocket?: WebSocketConstructor;
}

/** Options of `realtimePath`. */
export interface RealtimePathOptions extends RealtimeOptions {
  /** The base a relative path is resolved against. Default: the page's origin (`location.origin`). */
  readonly base?: string;
  readonly fetch?: typeof fetch;
  readonly WebSocket?: WebSocketConstructor;
}

/**
 * Opens a realtime connection with a client path, as an untrusted client (a browser) does, with no
 * key. A path minted with `channels` / `patterns` holds all of them: `subscribe` to each to get
 * its messages (claiming one of the path's own makes no request), or to others its token allows.
 * A path minted for one channel opens a v1 connection that carries that one subscription only.
 * `path` is the path itself (reconnects reuse it: mint it with `maxUses: 0` or enough uses) or a
 * function that asks your backend for a fresh one before every connect.
 */
export function realtimePath(path: string | (() => Promise<string>), options: RealtimePathOptions = {}): RealtimeConnection {
  const base = options.base ?? (globalThis as { location?: { origin: string } }).location?.origin;
  const resolve = (p: string): { url: string; key: undefined } => ({ url: new URL(p, base).href, key: undefined });
  const target = typeof path === "string" ? () => Promise.resolve(resolve(path)) : async () => resolve(await path());
  return new RealtimeConnection({ target, fetch: options.fetch ?? globalThis.fetch.bind(globalThis), WebSocket: options.WebSocket }, options);
}

/** Options of `realtimeWithToken`. */
export interface RealtimeTokenOptions extends RealtimeOptions {
  /** The service's base URL, e.g. `https://plate.example.com`. */
  readonly url: string;
  readonly plate: string;
  /**
   * Answers a signed client token (route 11 of the spec) that your backend minted for this user:
   * called before every connect, and again before the current token expires (at its `exp` less
   * `min(TOKEN_REFRESH_MAX_MARGIN_MS, TOKEN_REFRESH_LIFETIME_SHARE × its lifetime)`). When it
   * throws, the connection's `onError` gets a retryable `token_unavailable` and it tries again
   * after the reconnect backoff.
   */
  readonly tokenProvider: TokenProvider;
  readonly fetch?: typeof fetch;
  readonly WebSocket?: WebSocketConstructor;
}

/**
 * Opens a realtime connection (route 9) with signed client tokens, as a browser does with no key:
 * the token's `channels` and `patterns` say what it may subscribe to, its `publish` where
 * `publish` may send, and its `sub` is the `from.user` of what it publishes. The connection
 * refreshes the token before it expires (a WebSocket on the live connection; an SSE stream by
 * opening again, resuming every subscription), and reconnects with a fresh one after
 * `token_expired`.
 *
 * ```ts
 * const rt = realtimeWithToken({
 *   url: "https://plate.example.com",
 *   plate: "demo",
 *   transport: "ws",
 *   tokenProvider: async () => (await fetch("/my-backend/plate-token")).text(),
 * });
 * rt.subscribe("room.1", (m) => show(m.from?.user, m.message), { self: false });
 * const { id } = await rt.publish("room.1", { text: "hi" }, { event: "chat" });
 * ```
 */
export function realtimeWithToken(options: RealtimeTokenOptions): RealtimeConnection {
  const base = options.url.replace(/\/+$/, "");
  const target = { url: `${base}/${encodeURIComponent(options.plate)}/realtime`, key: undefined };
  return new RealtimeConnection(
    {
      target: () => Promise.resolve(target),
      tokenProvider: options.tokenProvider,
      fetch: options.fetch ?? globalThis.fetch.bind(globalThis),
      WebSocket: options.WebSocket,
    },
    options,
  );
}

/**
 * Subscribes with a client path (`/{plateId}/s/{token}`), as an untrusted client does. `path` is
 * either the path itself (reconnects reuse it: mint it with `maxUses: 0` or enough uses) or a
 * function that asks your backend for a fresh one before every connect (for single-use paths).
 */
export function subscribePath<T = unknown>(
  path: string | (() => Promise<string>),
  handler: (envelope: Envelope<T>) => void,
  options: SubscribePathOptions = {},
): Unsubscribe {
  const base = options.base ?? (globalThis as { location?: { origin: string } }).location?.origin;
  const resolve = (p: string): { url: string; key: undefined } => ({ url: new URL(p, base).href, key: undefined });
  const target = typeof path === "string" ? () => Promise.resolve(resolve(path)) : async () => resolve(await path());
  return subscription(
    { target, fetch: options.fetch ?? globalThis.fetch.bind(globalThis), WebSocket: options.WebSocket },
    handler,
    options,
  );
}
