import type { SubscriptionFilter } from "./filter.js";

/** One delivered message, as the spec's envelope. `T` is the published JSON value's type. */
export interface Envelope<T = unknown> {
  readonly type: "message";
  /** Opaque, ordered within the plate; the client resumes after the last one it saw. */
  readonly id: string;
  /** The concrete channel it was published to (tells pattern subscribers which one). */
  readonly channel: string;
  /** The event name its publisher gave, if any. */
  readonly event?: string;
  /** Who published it, when a client did so from its realtime connection (absent for an HTTP publish). */
  readonly from?: Sender;
  readonly message: T;
  /**
   * The publisher's `volatile` metadata (spec section 13), when it gave some: delivered live only,
   * never kept in the service's history, so a replayed message (a resume) has none.
   */
  readonly volatile?: unknown;
  /** ISO 8601, when the service accepted it. */
  readonly timestamp: string;
}

/** The client that published a message from its realtime connection (route 12 of the spec). */
export interface Sender {
  /** The publishing connection's `clientId` (its `ready` names it). */
  readonly clientId: string;
  /** The `sub` of the signed token the connection was opened with; absent for an API key. */
  readonly user?: string;
}

/** What a realtime connection's `publish` answers: the message's id. */
export interface RealtimePublished {
  readonly id: string;
}

/** Sent once a subscription is live, after every (re)connect. */
export interface Ready {
  readonly type: "ready";
  readonly clientId: string;
  readonly channel: string;
  readonly pattern: boolean;
  /** The position the subscription starts from: resuming from it misses nothing. */
  readonly position?: string;
}

/** Why a resume could not replay what was missed (see the API reference). */
export type ResetReason = "expired" | "epoch" | "unknown_id" | "pattern" | "gap";

/** The service could not replay everything missed: refetch your state; live messages follow. */
export interface Reset {
  readonly type: "reset";
  readonly channel: string;
  readonly reason: ResetReason;
  readonly message: string;
}

/** What `publish` answers: the message's id and when it was accepted. */
export interface Published {
  readonly id: string;
  readonly channel: string;
  readonly timestamp: string;
}

/** A minted client path (route 4 of the spec), with `url` made absolute for convenience. */
export interface ClientPath {
  /** `/{plateId}/s/{token}`. */
  readonly path: string;
  /** The service's base URL joined with `path`. */
  readonly url: string;
  readonly token: string;
  readonly channel: string;
  readonly pattern: boolean;
  readonly expiresAt: string;
  readonly maxUses: number;
  readonly maxDuration: number;
  /** The further channels the path may subscribe to (`clientPath`'s `channels`), when any. */
  readonly channels?: readonly string[];
  /** The further patterns the path may subscribe to (`clientPath`'s `patterns`), when any. */
  readonly patterns?: readonly string[];
  /** The filter the path enforces on everything it subscribes to (`clientPath`'s `filter`), when any. */
  readonly filter?: SubscriptionFilter;
}

/**
 * Where a subscription is: `connecting` (first try), `open` (ready received), `reconnecting`
 * (waiting for the next try after a drop), `closed` (unsubscribed, or a final error).
 */
export type SubscriptionState = "connecting" | "open" | "reconnecting" | "closed";

/**
 * What one subscription of a realtime connection listens to, as the wire names it: one channel,
 * or one pattern of `*` (any run, possibly empty) and `?` (exactly one character).
 */
export type SubscriptionName = { readonly channel: string; readonly pattern?: undefined } | { readonly pattern: string; readonly channel?: undefined };

/** A subscription the service holds, and the position it started from (resuming from it misses nothing). */
export type SubscriptionInfo = SubscriptionName & { readonly position?: string };

/** The first frame (event) of a realtime connection, after every (re)connect. */
export interface RealtimeReady {
  readonly type: "ready";
  readonly clientId: string;
  /** What the connection was opened with: its query, or a client path's channels and patterns. */
  readonly subscriptions: readonly SubscriptionInfo[];
}

/** One subscription of a realtime connection may have missed messages: refetch its state; live messages follow. */
export type RealtimeReset = { readonly type: "reset"; readonly reason: ResetReason; readonly message: string } & SubscriptionName;

/**
 * Where a realtime connection is: `connecting` (first try), `open` (ready received),
 * `reconnecting` (waiting for the next try after a drop; or an SSE stream opened with a signed
 * token opening again, with a fresh token or a new subscription), `closed` (closed, or a final error).
 */
export type ConnectionState = SubscriptionState;

/**
 * Where one subscription of a realtime connection is: `pending` (asked for, on this connection or
 * the next one), `live` (the service confirmed it on the current connection), `closed`
 * (unsubscribed, refused, ended by the service, or its connection closed).
 */
export type RealtimeSubscriptionState = "pending" | "live" | "closed";

/** One member of a channel's presence (route 10 of the spec): what one connection tracks there. */
export interface PresenceMember {
  /** The `sub` of the member's signed token; absent for a connection opened with an API key or a client path. */
  readonly user?: string;
  /** The JSON value it tracked (`track(state)`); an update replaces it. */
  readonly state: unknown;
  /** ISO 8601, when it joined; kept across its updates. */
  readonly joinedAt: string;
}

/**
 * A channel's members by client id (each connection is one member: one user with two tabs is two).
 * A snapshot: the client replaces it on each change, never changes one it handed over.
 */
export type PresenceMembers = ReadonlyMap<string, PresenceMember>;

/** A member as `PlateClient.presence` lists it. */
export type PresenceEntry = PresenceMember & { readonly clientId: string };

/** What `PlateClient.presence` answers: a channel's members, read from any node. */
export interface ChannelPresence {
  readonly members: readonly PresenceEntry[];
  readonly count: number;
}

/** One channel with subscribers, and how many connections subscribe to it (over every node). */
export interface ChannelOccupancy {
  readonly channel: string;
  readonly connections: number;
}

/** What `PlateClient.channels` answers, sorted by channel; `truncated` when the service left channels out (past 10,000). */
export interface Occupancy {
  readonly channels: readonly ChannelOccupancy[];
  readonly truncated: boolean;
}
