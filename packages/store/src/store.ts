import type { ChannelName, ChannelPattern, ClientToken, PlateId, Scope } from "@plate/protocol";

/** A tenant. */
export interface PlateRecord {
  readonly id: PlateId;
  readonly name: string;
  /** ISO-8601. */
  readonly createdAt: string;
  /** How much of each channel's history this plate keeps; absent = the node's defaults. */
  readonly history?: PlateHistory;
  /** The plate's own limits (its plan); each one absent = the node's setting. */
  readonly limits?: PlateLimits;
}

/**
 * A plate's own limits, set through the admin API; each one absent is the node's setting of that
 * name. Rates are per second over every node sharing the store; 0 = unlimited (as the settings).
 */
export interface PlateLimits {
  /** `PUBLISH_RATE_PER_S` for this plate: publishes a second over every node. */
  readonly publishPerS?: number;
  /** `PUBLISH_BURST`. */
  readonly publishBurst?: number;
  /** `PUBLISH_BYTES_PER_S`: bytes of messages published a second over every node. */
  readonly publishBytesPerS?: number;
  /** `MAX_MESSAGE_BYTES`: the largest message (at most the node's own). */
  readonly maxMessageBytes?: number;
  /** `MAX_CONNECTIONS_PER_PLATE`: open connections over every node. */
  readonly connections?: number;
  /** `MAX_SUBSCRIPTIONS_PER_CONNECTION`. */
  readonly subscriptionsPerConnection?: number;
  /** `PRESENCE_MAX_MEMBERS`: members of one channel. */
  readonly presenceMembers?: number;
  /** `FILTERS_PER_PLATE`: filtered subscriptions on one node. */
  readonly filters?: number;
  /** `CLIENT_TOKEN_MINT_RATE_PER_S`: client paths minted a second over every node. */
  readonly tokensPerS?: number;
  /** `CLIENT_TOKEN_MINT_BURST`. */
  readonly tokensBurst?: number;
  /** `WEBHOOK_RATE_PER_S`: webhook POSTs a second over every node. */
  readonly webhooksPerS?: number;
  /** `WEBHOOK_BURST`. */
  readonly webhooksBurst?: number;
  /** `HISTORY_CHANNELS_PER_PLATE`: channels holding history at once, over every node. */
  readonly historyChannels?: number;
  /** `HISTORY_BYTES_PER_PLATE`: bytes of history at once, over every node. */
  readonly historyBytes?: number;
  /** `CLIENT_TOKEN_BYTES_PER_PLATE`: bytes of stored client paths at once. */
  readonly tokenBytes?: number;
}

/**
 * What a stored client token counts against its plate's token budget: its record's JSON and
 * `overhead` bytes (the store's hash and expiry, and the budget's own entry; measured on Redis 7).
 */
export const TOKEN_COST = { overhead: 256 } as const;

/** What a plate's usage counts (issue 17): messages and bytes published, messages delivered, client tokens minted. */
export const USAGE_COUNTERS = ["published", "publishedBytes", "delivered", "tokensMinted"] as const;
export type UsageCounter = (typeof USAGE_COUNTERS)[number];

/** One node's counts of one plate in one hour, to add. */
export interface UsageAdd {
  readonly plateId: PlateId;
  /** The hour, `YYYY-MM-DDTHH` (UTC). */
  readonly hour: string;
  readonly counts: Readonly<Partial<Record<UsageCounter, number>>>;
  /** The most connections of the plate this node held open at once in that hour, if it held any. */
  readonly peakConnections?: number;
}

/**
 * A plate's usage in one hour: every counter summed over the nodes, and `peakConnections`, the sum
 * of each node's own peak in the hour (at least the true peak of connections open at once).
 */
export type UsageHour = { readonly hour: string; readonly peakConnections: number } & Readonly<Record<UsageCounter, number>>;

/** What a plate's webhook may be told (route 10's channel events). */
export type WebhookEvent = "channel_occupied" | "channel_vacated" | "member_added" | "member_removed";

/** A plate's webhook: where its channel events are POSTed, signed with `secret` (HMAC-SHA256). */
export interface WebhookRecord {
  readonly plateId: PlateId;
  readonly url: string;
  readonly secret: string;
  readonly events: readonly WebhookEvent[];
  /** ISO-8601. */
  readonly createdAt: string;
}

/** Webhook events a node claimed: their ids in the queue, their JSON texts, and the attempts made before. */
export interface WebhookClaim {
  readonly ids: readonly string[];
  readonly events: readonly string[];
  readonly attempts: number;
}

/** A plate's own history retention (see the edge's HISTORY_COUNT and HISTORY_AGE_MS). */
export interface PlateHistory {
  /** Messages kept per channel; 0 = none. */
  readonly count: number;
  /** How long a message is kept, in ms. */
  readonly ageMs: number;
}

/** `plate` with its own retention set to `history`, or without one (`null`). */
export function withHistory(plate: PlateRecord, history: PlateHistory | null): PlateRecord {
  return withOwn(plate, "history", history);
}

/** `plate` with its own limits set, or (with `null`) cleared. */
export function withLimits(plate: PlateRecord, limits: PlateLimits | null): PlateRecord {
  return withOwn(plate, "limits", limits);
}

/** `plate` with one of its own settings set, or (with `null`) cleared; the others as they were. */
function withOwn<K extends "history" | "limits">(plate: PlateRecord, name: K, value: PlateRecord[K] | null): PlateRecord {
  const rest: { -readonly [P in keyof PlateRecord]: PlateRecord[P] } = { ...plate };
  delete rest[name];
  return value === null ? rest : { ...rest, [name]: value };
}

/** An API key as stored: its secret is never kept, only `hash` (hex SHA-256 of the secret). */
export interface KeyRecord {
  readonly id: string;
  readonly plateId: PlateId;
  readonly name: string;
  readonly scopes: readonly Scope[];
  /** Channel patterns the key is limited to; `null` means every channel of its plate. */
  readonly channels: readonly ChannelPattern[] | null;
  readonly hash: string;
  readonly createdAt: string;
}

/** The algorithms a plate's signing key may use (spec, route 11): a shared secret, or a public key. */
export type SigningAlgorithm = "HS256" | "ES256" | "RS256";

/** A key that signs a plate's client tokens (JWT, route 11); its id is the tokens' `kid`. */
export interface SigningKeyRecord {
  readonly id: string;
  readonly plateId: PlateId;
  readonly alg: SigningAlgorithm;
  /**
   * HS256: the shared secret (base64url), which must be kept to verify and so is stored as it is;
   * ES256 and RS256: the public key (SPKI PEM). Never shown after creation for HS256.
   */
  readonly key: string;
  readonly createdAt: string;
}

/** A client token as stored (route 4 writes it, route 5 claims it). */
export interface TokenRecord {
  readonly token: ClientToken;
  readonly plateId: PlateId;
  /** A concrete channel, or a pattern when `pattern` is true. */
  readonly channel: ChannelName | ChannelPattern;
  readonly pattern: boolean;
  /**
   * Every channel and pattern of a token minted with several (route 4's `channels`, `patterns`),
   * the first being `channel`; absent for a one-topic token. A connection made with it is a route 9
   * connection subscribed to them all, which may subscribe to what they cover.
   */
  readonly topics?: readonly { readonly channel: ChannelName | ChannelPattern; readonly pattern: boolean }[];
  /** The key that minted it: revoking that key makes the token unusable and closes its sockets. */
  readonly keyId: string;
  /** How long a connection made with it may last, in ms; 0 = unlimited. */
  readonly maxDurationMs: number;
  /** Successful connections allowed; 0 = unlimited. */
  readonly maxUses: number;
  /** Epoch ms after which no new connection may be made with it. */
  readonly expiresAt: number;
  /** The filter every subscription made with it must match (route 13), as JSON text; ANDed with the client's. */
  readonly filter?: string;
}

/** The outcome of spending one use of a client token. */
export type ClaimResult =
  | { readonly ok: true; readonly token: TokenRecord; readonly uses: number }
  | {
      readonly ok: false;
      readonly code: "invalid_client_socket" | "expired_client_socket" | "exhausted_client_socket";
    };

/**
 * A plate deleted (`keyId` absent), one of its API keys revoked, or one of its signing keys deleted
 * (`keyId` is then `signingKeyOwner(id)`).
 */
export interface Revocation {
  readonly plateId: PlateId;
  readonly keyId?: string;
}

/**
 * The key id that stands for a signing key in a revocation, and for the connections opened with
 * tokens it signed (so deleting it closes them as revoking an API key closes its connections).
 * API key ids never hold a colon.
 */
export function signingKeyOwner(id: string): string {
  return `signing:${id}`;
}

/**
 * Where plates, API keys and client tokens live. Shared by every node of a deployment.
 *
 * Contract (every implementation passes `store.contract.ts`):
 * - Plate ids are unique: `createPlate` with an existing id throws `PlateError("conflict")`.
 * - Deleting a plate deletes its keys; both it and `deleteKey` answer whether something was
 *   deleted, and announce a `Revocation` to every `onRevoked` listener of every node (within 1 s).
 * - `claimToken` spends one use atomically: under any number of concurrent claims, across nodes,
 *   exactly `maxUses` succeed (0 = unlimited). A token whose key was revoked claims as unknown.
 *   After `expiresAt` a token claims as expired for at least `tokenTombstoneMs` (a setting of
 *   each implementation), then as unknown. Nothing is kept forever.
 * - Announcements can be missed by a node whose link to a shared store was cut (Redis pub/sub
 *   keeps nothing): once they reach it again, `onResync` listeners are told, and it is up to them
 *   to check what they hold (open connections, cached keys) against the store.
 * - `close()` frees connections and timers; the store is unusable after.
 */
export interface Store {
  createPlate(plate: PlateRecord): Promise<PlateRecord>;
  getPlate(id: PlateId): Promise<PlateRecord | undefined>;
  /**
   * Sets a plate's history retention (`null`: back to the node's defaults). Answers the plate as
   * updated, or undefined when there is no such plate.
   */
  setPlateHistory(id: PlateId, history: PlateHistory | null): Promise<PlateRecord | undefined>;
  /** Sets (or, with `null`, clears) a plate's own limits; undefined when there is no such plate. */
  setPlateLimits(id: PlateId, limits: PlateLimits | null): Promise<PlateRecord | undefined>;
  listPlates(): Promise<PlateRecord[]>;
  deletePlate(id: PlateId): Promise<boolean>;

  /** Adds a key to an existing plate (`not_found` otherwise). */
  createKey(key: KeyRecord): Promise<KeyRecord>;
  listKeys(plateId: PlateId): Promise<KeyRecord[]>;
  /**
   * The key of `plateId` whose secret hashes to `hash`; undefined when that plate has none (a key
   * of another plate with that secret is not found: a request names its plate).
   */
  findKey(plateId: PlateId, hash: string): Promise<KeyRecord | undefined>;
  deleteKey(plateId: PlateId, keyId: string): Promise<boolean>;

  /** Adds a signing key to an existing plate (`not_found` otherwise; `conflict` for an id taken in it). */
  createSigningKey(key: SigningKeyRecord): Promise<SigningKeyRecord>;
  listSigningKeys(plateId: PlateId): Promise<SigningKeyRecord[]>;
  findSigningKey(plateId: PlateId, id: string): Promise<SigningKeyRecord | undefined>;
  /** Sets the plate's one webhook, replacing any; `not_found` when there is no such plate. Deleting a plate deletes it. */
  setWebhook(record: WebhookRecord): Promise<WebhookRecord>;
  getWebhook(plateId: PlateId): Promise<WebhookRecord | undefined>;
  /** Answers whether there was one. */
  deleteWebhook(plateId: PlateId): Promise<boolean>;

  /**
   * The queue of a plate's webhook events (JSON texts), shared by every node so that an event
   * outlives the node that emitted it: appended here, then claimed by one node at a time, POSTed,
   * and removed when delivered. At most `max` wait per plate (the oldest go past it).
   */
  webhookPush(plateId: PlateId, events: readonly string[], max: number): Promise<void>;
  /** Plates with events waiting, at most `limit` of them. */
  webhookWaiting(limit: number): Promise<PlateId[]>;
  /**
   * The plate's first `count` events, held by the caller for `leaseMs` (another node takes them
   * after, if it did not answer), with the attempts made at them; undefined when another node holds
   * them, a retry is not due yet, or none wait.
   */
  webhookClaim(plateId: PlateId, count: number, leaseMs: number): Promise<WebhookClaim | undefined>;
  /** Claimed events delivered (or given up: `dropped`): removed. */
  webhookDone(plateId: PlateId, ids: readonly string[]): Promise<void>;
  /** Claimed events not delivered: claimable again after `retryMs`, one more attempt counted. */
  webhookRetry(plateId: PlateId, retryMs: number): Promise<void>;
  /**
   * Adds one node's usage counts (issue 17's metering), each to its plate's hour, and sets that
   * node's peak of open connections in each hour named. Kept `keepMs` after the hour began.
   */
  usageAdd(nodeId: string, adds: readonly UsageAdd[], keepMs: number): Promise<void>;
  /**
   * Takes `count` tokens from the plate's bucket `name` (one per plate and name, shared by every
   * node): `perS` a second up to `burst`. Answers 0, or the ms until they would be there (taking
   * nothing). A rate of 0 takes nothing and answers 0.
   */
  takeRate(plateId: PlateId, name: string, perS: number, burst: number, count: number): Promise<number>;
  /**
   * Reports this node's open connections of each plate in `counts` (0: none any more), each held
   * for `leaseMs` unless reported again (a node that dies stops counting then), and answers each
   * plate's open connections on the other nodes, as they last reported them (leases in force).
   */
  reportConnections(nodeId: string, counts: ReadonlyMap<PlateId, number>, leaseMs: number): Promise<Map<PlateId, number>>;
  /** A plate's usage in each of `hours` (`YYYY-MM-DDTHH`, UTC), zeros for an hour with none. */
  usageRead(plateId: PlateId, hours: readonly string[]): Promise<UsageHour[]>;

  /**
   * Answers whether it existed; if so, announces its revocation (`signingKeyOwner(id)`) to every
   * node. Deleting a plate deletes its signing keys.
   */
  deleteSigningKey(plateId: PlateId, id: string): Promise<boolean>;

  /**
   * Stores a client token until `expiresAt` and its tombstone after; answers false (storing
   * nothing) when the plate's tokens would then take more than `maxBytes` (0 = no limit), counted
   * as `TOKEN_COST` says, until each is forgotten.
   */
  putToken(token: TokenRecord, maxBytes?: number): Promise<boolean>;
  claimToken(plateId: PlateId, token: ClientToken, nowMs: number): Promise<ClaimResult>;

  onRevoked(listener: (revocation: Revocation) => void): () => void;
  /**
   * Called each time announcements reach this node again after they may have been missed (the
   * connection that hears them was cut or found deaf, and is back): every revocation made
   * meanwhile may have gone unheard. Never called by a store whose announcements cannot be cut.
   * Returns a function that removes the listener.
   */
  onResync(listener: () => void): () => void;
  /** Whether calls can succeed and announcements arrive right now (for a node's readiness). */
  isReady(): boolean;
  close(): Promise<void>;
}
