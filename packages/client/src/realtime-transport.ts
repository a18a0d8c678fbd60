import type { ErrorCode, PlateClientError } from "./errors.js";
import type { SubscriptionFilter } from "./filter.js";
import type { PresenceFrame } from "./realtime-presence.js";
import type { Envelope, Ready, RealtimeReady, RealtimeReset, SubscriptionInfo, SubscriptionName } from "./types.js";

/**
 * The seam between a realtime connection (realtime.ts: subscriptions, dispatch, reconnect) and
 * the transport of one attempt (realtime-ws.ts, realtime-sse.ts): the transport moves frames, the
 * connection decides what they mean.
 */

/**
 * A request for a subscription: its name, the id to resume after, `self: false` to leave out
 * the connection's own publications (only a WebSocket publishes, so SSE has none to leave out),
 * `presence: true` for a channel's presence frames (a WebSocket only asks for them), and the
 * `filter` its messages must match (spec section 13), on every (re)subscribe.
 */
export type SubscriptionRequest = SubscriptionName & {
  readonly since?: string;
  readonly self?: false;
  readonly presence?: true;
  readonly filter?: SubscriptionFilter;
};

/** A message to publish from the connection (route 12 of the spec). */
export interface PublishRequest {
  readonly channel: string;
  readonly message: unknown;
  readonly event?: string;
  /** Small JSON delivered live in the envelope, never stored (spec section 13). */
  readonly volatile?: unknown;
}

/**
 * The `ready` of a route 9 connection, or of a client path minted for one channel (route 5 then
 * opens a v1 connection, whose `ready` names that channel).
 */
export type AnyReady = RealtimeReady | Ready;

/** A subscription the service ended or confirmed ending: `reason` (a code of the spec) when it ended it by itself. */
export type Unsubscribed = SubscriptionName & { readonly reason?: ErrorCode };

/** What one attempt tells its connection. Nothing is told after `end`, nor after `close()`. */
export interface RealtimeEvents {
  ready(ready: AnyReady): void;
  message(envelope: Envelope): void;
  /**
   * The service holds the subscription; with `since`, what was missed follows (or one `reset`).
   * `ref`: the request it answers, when the transport says (a WebSocket does, SSE does not).
   */
  subscribed(info: SubscriptionInfo & { readonly ref?: unknown }): void;
  unsubscribed(frame: Unsubscribed): void;
  reset(reset: RealtimeReset): void;
  /** A channel's presence (route 10), for a subscription that asked for it. */
  presence(frame: PresenceFrame): void;
  /**
   * The service refused the request `ref` (a `subscribe`, a `publish`, a refresh, a presence
   * track or untrack); the connection stays open.
   */
  refused(ref: number, error: PlateClientError): void;
  /** The service published the message of the request `ref`, as `id`. */
  published(ref: number, id: string): void;
  /** The service did the request `ref`: took a fresh token, or tracked or untracked presence. */
  ok(ref: number): void;
  /** The attempt is over, once: `error` says why (a drop the server did not explain is a retryable `network_error`). */
  end(error: PlateClientError): void;
}

/** Where one attempt connects. */
export interface RealtimeTarget {
  /** Route 9 (`/{plate}/realtime`) or a client path (route 5), absolute, `http(s)`, with its query. */
  readonly url: string;
  /** The API key; undefined for a client path or a signed token. */
  readonly key: string | undefined;
  /**
   * The signed client token (route 11), sent in the WebSocket's first frame; an SSE `url` carries
   * it as `?token=` already.
   */
  readonly token: string | undefined;
  /**
   * Where SSE changes go (`POST /{plate}/realtime/{clientId}`) and the credential they carry (the
   * key, or the client path's token; the service takes no signed token there).
   */
  readonly changes: { readonly url: (clientId: string) => string; readonly credential: string };
  /** Ends the attempt when nothing at all (not even a heartbeat) arrives for this long. */
  readonly idleTimeoutMs: number;
}

/**
 * One open attempt. Its methods are called only after `ready`, and the requests about one name
 * reach the service in the order they were made. `close` ends the attempt with no `end` event.
 * `publish`, `refresh`, `track` and `untrack` exist on a WebSocket only: an SSE stream sends
 * nothing but its subscription changes, and takes a fresh token by being opened again.
 */
export interface RealtimeLink {
  subscribe(ref: number, request: SubscriptionRequest): void;
  unsubscribe(ref: number, name: SubscriptionName): void;
  /** Sends a message; `published` or `refused` answers it, unless the attempt ends first. */
  readonly publish?: (ref: number, request: PublishRequest) => void;
  /** Hands the live connection a fresh signed token; `ok` or `refused` answers it. */
  readonly refresh?: (ref: number, token: string) => void;
  /** Makes the connection a member of `channel` with `state` (or replaces its state); `ok` or `refused` answers it. */
  readonly track?: (ref: number, channel: string, state: unknown) => void;
  /** Ends the connection's membership of `channel`; `ok` or `refused` answers it. */
  readonly untrack?: (ref: number, channel: string) => void;
  close(): void;
}

/** `c:<channel>` or `p:<pattern>`: one string per name, for maps. */
export function nameKey(name: SubscriptionName): string {
  return name.channel !== undefined ? `c:${name.channel}` : `p:${name.pattern}`;
}

/** Just the name of a frame that carries one (`{"channel"}` or `{"pattern"}`), as the wire sends it. */
export function nameOf(frame: SubscriptionName): SubscriptionName {
  return frame.channel !== undefined ? { channel: frame.channel } : { pattern: frame.pattern };
}
