import { PlateError, SCOPES, isChannelPattern, isPlateId, isScope, patternCovers, compilePattern } from "@plate/protocol";
import type { ChannelPattern, PlateId, Scope, Topic } from "@plate/protocol";
import type { Retention } from "@plate/broker";
import { signingKeyOwner } from "@plate/store";
import type { KeyRecord, PlateHistory, PlateLimits, PlateRecord, Revocation, Store } from "@plate/store";
import { KeyCache } from "./key-cache.js";
import { bootstrapKeyId, hashSecret, newKeyId, newKeySecret, newPlateId } from "./ids.js";

/** A key as the admin API shows it: never its secret or hash. */
export interface KeyView {
  readonly id: string;
  readonly name: string;
  readonly scopes: readonly Scope[];
  readonly channels: readonly ChannelPattern[] | null;
  readonly createdAt: string;
}

/** A key at creation, the only time its secret is shown. */
export interface NewKey extends KeyView {
  readonly secret: string;
}

/** What a new key may be given (the admin API's body, validated here). */
export interface KeyInput {
  readonly scopes?: unknown;
  readonly channels?: unknown;
  readonly name?: unknown;
}

/** Longest plate or key name, in characters. */
const MAX_NAME_CHARS = 200;
/** Most channel patterns one key may be limited to. */
const MAX_KEY_CHANNELS = 100;
/** A plate's own `history.count` may be 0 to this (as `HISTORY_COUNT`). */
const MAX_HISTORY_COUNT = 10_000;
/** A plate's own `history.ageMs` may be from 1 s to this (as `HISTORY_AGE_MS`). */
const MAX_HISTORY_AGE_MS = 7 * 86_400_000;
/** Most plates whose retention and limits one node keeps cached. */
const RETENTION_CACHE_MAX_ENTRIES = 10_000;

/**
 * A plate's limits in force: its own (`PlateLimits`, set through the admin API), else the node's
 * settings. Rates are per second; 0 = unlimited.
 */
export interface Limits {
  /** `PUBLISH_RATE_PER_S`, over every node sharing the broker. */
  readonly publishPerS: number;
  /** `PUBLISH_BURST`. */
  readonly publishBurst: number;
  /** `PUBLISH_BYTES_PER_S`, over every node sharing the broker. */
  readonly publishBytesPerS: number;
  /** `MAX_MESSAGE_BYTES`. */
  readonly maxMessageBytes: number;
  /** `MAX_CONNECTIONS_PER_PLATE`, over every node (connection-leases.ts). */
  readonly connections: number;
  /** `MAX_SUBSCRIPTIONS_PER_CONNECTION`. */
  readonly subscriptionsPerConnection: number;
  /** `PRESENCE_MAX_MEMBERS`. */
  readonly presenceMembers: number;
  /** `FILTERS_PER_PLATE` (on one node). */
  readonly filters: number;
  /** `CLIENT_TOKEN_MINT_RATE_PER_S`, over every node. */
  readonly tokensPerS: number;
  /** `CLIENT_TOKEN_MINT_BURST`. */
  readonly tokensBurst: number;
  /** `WEBHOOK_RATE_PER_S`: webhook POSTs a second, over every node. */
  readonly webhooksPerS: number;
  /** `WEBHOOK_BURST`. */
  readonly webhooksBurst: number;
  /** `HISTORY_CHANNELS_PER_PLATE`, over every node. */
  readonly historyChannels: number;
  /** `HISTORY_BYTES_PER_PLATE`, over every node. */
  readonly historyBytes: number;
  /** `CLIENT_TOKEN_BYTES_PER_PLATE`, over every node. */
  readonly tokenBytes: number;
}

/** The limits a plate may set of its own (`PUT /admin/plates/{id}/limits`), each up to `MAX_LIMIT`. */
const LIMIT_NAMES = [
  "publishPerS",
  "publishBurst",
  "publishBytesPerS",
  "maxMessageBytes",
  "connections",
  "subscriptionsPerConnection",
  "presenceMembers",
  "filters",
  "tokensPerS",
  "tokensBurst",
  "webhooksPerS",
  "webhooksBurst",
  "historyChannels",
  "historyBytes",
  "tokenBytes",
] as const satisfies readonly (keyof Limits & keyof PlateLimits)[];

/**
 * Plates, keys and what a key may do. Depends only on the `Store` seam.
 */
export class Tenancy {
  readonly #keys: KeyCache;
  readonly #retention = new Map<PlateId, { readonly value: PlateSettings; readonly untilMs: number }>();
  /**
   * Store reads in flight, by what they look up: when a cached key or retention expires under
   * load, the requests that find it missing share one read instead of each making its own
   * (measured: 5-46% more store calls than publishes at 64 publishers with a 1 s cache).
   */
  readonly #reading = new Map<string, Promise<unknown>>();
  /** Changes at every forget: a read begun before it caches nothing (it may predate a revocation). */
  #generation = 0;

  /**
   * `keyCacheMs`: how long a key (or a plate's retention) found in the store is trusted without
   * asking again (`KEY_CACHE_MS`). `defaults`: the retention of plates without their own.
   */
  constructor(
    private readonly store: Store,
    private readonly keyCacheMs: number,
    private readonly defaults: Retention,
    /** The limits of a plate without its own (the node's settings). */
    readonly defaultLimits: Limits,
  ) {
    this.#keys = new KeyCache(keyCacheMs);
  }

  /** Forgets cached keys (and a deleted plate's retention) that a revocation (from any node) names. */
  forget(revocation: Revocation): void {
    this.#generation += 1;
    this.#reading.clear();
    this.#keys.forget(revocation);
    if (revocation.keyId === undefined) this.#retention.delete(revocation.plateId);
  }

  /** Forgets every cached key and retention: after revocations may have been missed (see `Resync`). */
  forgetAll(): void {
    this.#generation += 1;
    this.#reading.clear();
    this.#keys.clear();
    this.#retention.clear();
  }

  /** `read()`, shared by every caller asking for `name` while it is in flight. */
  #once<T>(name: string, read: () => Promise<T>): Promise<T> {
    const pending = this.#reading.get(name);
    if (pending !== undefined) return pending as Promise<T>;
    const started = read().finally(() => {
      if (this.#reading.get(name) === started) this.#reading.delete(name);
    });
    this.#reading.set(name, started);
    return started;
  }

  /**
   * The limits in force for a plate: its own, else the node's settings. Cached with its retention
   * (see `settingsOf`).
   */
  async limitsOf(plateId: PlateId): Promise<Limits> {
    return (await this.settingsOf(plateId)).limits;
  }

  /**
   * A plate's history retention (its own `history`, else the node's defaults) and limits in force,
   * in one read: what a publish needs. Cached like keys: another node's change is seen within
   * `KEY_CACHE_MS` (1 s by default). Answered at once when cached, so a publish whose key is
   * cached too goes on without an await (`cachedKey`).
   */
  settingsOf(plateId: PlateId): PlateSettings | Promise<PlateSettings> {
    return this.#cachedSettings(plateId) ?? this.#readSettings(plateId);
  }

  #cachedSettings(plateId: PlateId): PlateSettings | undefined {
    const cached = this.#retention.get(plateId);
    return cached !== undefined && cached.untilMs > Date.now() ? cached.value : undefined;
  }

  async #readSettings(plateId: PlateId): Promise<PlateSettings> {
    const now = Date.now();
    const generation = this.#generation;
    const plate = await this.#once("plate\n" + plateId, () => this.store.getPlate(plateId));
    const value = this.#settingsFrom(plate);
    if (generation === this.#generation) this.#cacheRetention(plateId, value, now);
    return value;
  }

  /** Sets (or, with `null`, clears) a plate's own retention; `not_found` without the plate. */
  async setPlateHistory(plateId: PlateId, input: unknown): Promise<PlateRecord> {
    const plate = await this.store.setPlateHistory(plateId, input === null ? null : parseHistory(input));
    if (plate === undefined) throw new PlateError("not_found", "No such plate.");
    this.#cacheRetention(plateId, this.#settingsFrom(plate), Date.now());
    return plate;
  }

  /**
   * Sets (or, with `null`, clears) a plate's own limits: `{"publishPerS": n, ...}`, each a whole
   * number (`invalid_parameter` otherwise); the ones not named are the node's. `not_found` without
   * the plate. Answers the plate's limits in force and its own.
   */
  async setPlateLimits(plateId: PlateId, input: unknown): Promise<{ limits: Limits; own: PlateLimits }> {
    const plate = await this.store.setPlateLimits(plateId, input === null ? null : parseLimits(input));
    if (plate === undefined) throw new PlateError("not_found", "No such plate.");
    const settings = this.#settingsFrom(plate);
    this.#cacheRetention(plateId, settings, Date.now());
    return { limits: settings.limits, own: plate.limits ?? {} };
  }

  /** A plate's limits in force and its own; `not_found` without the plate. */
  async plateLimits(plateId: PlateId): Promise<{ limits: Limits; own: PlateLimits }> {
    const plate = await this.store.getPlate(plateId);
    if (plate === undefined) throw new PlateError("not_found", "No such plate.");
    return { limits: this.#settingsFrom(plate).limits, own: plate.limits ?? {} };
  }

  #settingsFrom(plate: PlateRecord | undefined): PlateSettings {
    const own = plate?.history;
    const retention = own === undefined ? this.defaults : { ...this.defaults, count: own.count, ageMs: own.ageMs };
    const limits = plate?.limits === undefined ? this.defaultLimits : { ...this.defaultLimits, ...plate.limits };
    return { retention, limits };
  }

  #cacheRetention(plateId: PlateId, value: PlateSettings, now: number): void {
    if (this.keyCacheMs === 0) return;
    if (this.#retention.size >= RETENTION_CACHE_MAX_ENTRIES) this.#retention.clear();
    this.#retention.set(plateId, { value, untilMs: now + this.keyCacheMs });
  }

  /**
   * The key an `Authorization` header names, if it belongs to `plateId`. A plate that does not
   * exist and a key of another plate both answer `invalid_api_key`: no tenant enumeration.
   */
  async authenticate(plateId: PlateId, header: string | undefined): Promise<KeyRecord> {
    const secret = parseAuthorization(header);
    if (secret === undefined) {
      throw new PlateError("missing_api_key", 'Send your API key as "Authorization: Bearer <key>".');
    }
    return this.authenticateSecret(plateId, secret);
  }

  /**
   * The key `header` names when this node has it cached as a key of `plateId`; else undefined, and
   * `authenticate` finds or refuses it. A publish's common case without `authenticate`'s awaits:
   * with the plate's settings (`settingsOf`), a publish whose key and plate are cached goes
   * from its request to the broker in one synchronous call. At W1 (load-tests, a publish every
   * 10 ms to 1,000 subscribers, a node gone cold between publishes) the fast lane's request to its
   * key took 36-60 µs through `authenticate`, 18-31 this way (issue 18).
   */
  cachedKey(plateId: PlateId, header: string | undefined): KeyRecord | undefined {
    const secret = parseAuthorization(header);
    if (secret === undefined) return undefined;
    const key = this.#keys.get(secret, Date.now());
    return key !== undefined && key.plateId === plateId ? key : undefined;
  }

  /** As `authenticate`, for a secret sent another way (a WebSocket's auth frame). */
  async authenticateSecret(plateId: PlateId, secret: string): Promise<KeyRecord> {
    const key = secret === "" ? undefined : await this.#findKey(plateId, secret);
    if (key === undefined || key.plateId !== plateId) {
      throw new PlateError("invalid_api_key", "This API key is not valid for this plate.");
    }
    return key;
  }

  async #findKey(plateId: PlateId, secret: string): Promise<KeyRecord | undefined> {
    const now = Date.now();
    const cached = this.#keys.get(secret, now);
    if (cached !== undefined) return cached;
    const generation = this.#generation;
    const key = await this.#once("key\n" + plateId + "\n" + secret, () => this.store.findKey(plateId, hashSecret(secret)));
    if (key !== undefined && generation === this.#generation) this.#keys.put(secret, key, now);
    return key;
  }

  /** Throws `forbidden` unless `key` has `scope` and may use the topic's channel or pattern. */
  authorize(key: KeyRecord, scope: Scope, topic: Topic): void {
    if (!key.scopes.includes(scope)) {
      throw new PlateError("forbidden", `This API key lacks the "${scope}" scope.`);
    }
    if (key.channels === null) return;
    const allowed = topic.pattern
      ? key.channels.some((limit) => patternCovers(limit, topic.channel))
      : key.channels.some((limit) => compilePattern(limit)(topic.channel));
    if (!allowed) {
      throw new PlateError(
        "forbidden",
        `This API key may not use ${topic.pattern ? "the pattern" : "the channel"} "${topic.channel}".`,
      );
    }
  }

  /** Creates a plate and its first key (every scope, every channel). */
  async createPlate(input: { id?: unknown; name?: unknown; history?: unknown }): Promise<{ plate: PlateRecord; key: NewKey }> {
    if (input.id !== undefined && (typeof input.id !== "string" || !isPlateId(input.id))) {
      throw new PlateError("invalid_plate", "A plate id has 1 to 64 of A-Z, a-z, 0-9, _ and -.");
    }
    const id = input.id ?? newPlateId();
    const history = input.history === undefined || input.history === null ? undefined : parseHistory(input.history);
    const plate = await this.store.createPlate({
      id,
      name: parseName(input.name, id),
      createdAt: new Date().toISOString(),
      ...(history === undefined ? {} : { history }),
    });
    const key = await this.createKey(plate.id, { name: "default" });
    return { plate, key };
  }

  getPlate(id: PlateId): Promise<PlateRecord | undefined> {
    return this.store.getPlate(id);
  }

  listPlates(): Promise<PlateRecord[]> {
    return this.store.listPlates();
  }

  /** Deletes a plate and its keys; its connections close on every node (4409). */
  async deletePlate(id: PlateId): Promise<boolean> {
    const deleted = await this.store.deletePlate(id);
    // The store announces it to every node; this node stops accepting the keys even before that.
    if (deleted) this.#keys.forget({ plateId: id });
    return deleted;
  }

  /** Creates a key; its secret is in the answer and nowhere else. */
  async createKey(plateId: PlateId, input: KeyInput, secret = newKeySecret(), id = newKeyId()): Promise<NewKey> {
    const record = await this.store.createKey({
      id,
      plateId,
      name: parseName(input.name, ""),
      scopes: parseScopes(input.scopes),
      channels: parseChannels(input.channels),
      hash: hashSecret(secret),
      createdAt: new Date().toISOString(),
    });
    return { ...viewKey(record), secret };
  }

  async listKeys(plateId: PlateId): Promise<KeyView[]> {
    return (await this.store.listKeys(plateId)).map(viewKey);
  }

  /**
   * The ids connections of `plateId` may be opened by that the store still holds: its API keys,
   * and its signing keys (`signingKeyOwner`).
   */
  async ownerIds(plateId: PlateId): Promise<Set<string>> {
    const [keys, signingKeys] = await Promise.all([this.store.listKeys(plateId), this.store.listSigningKeys(plateId)]);
    return new Set([...keys.map((key) => key.id), ...signingKeys.map((key) => signingKeyOwner(key.id))]);
  }

  /** Revokes a key; its connections close on every node (4409). */
  async revokeKey(plateId: PlateId, keyId: string): Promise<boolean> {
    const deleted = await this.store.deleteKey(plateId, keyId);
    if (deleted) this.#keys.forget({ plateId, keyId });
    return deleted;
  }

  /**
   * Makes sure `plateId` exists and `secret` is one of its keys with every scope (declarative
   * provisioning: `BOOTSTRAP_PLATES`). Answers whether anything was created.
   */
  async ensurePlateWithKey(plateId: PlateId, secret: string): Promise<boolean> {
    let created = false;
    if ((await this.store.getPlate(plateId)) === undefined) {
      try {
        await this.store.createPlate({ id: plateId, name: plateId, createdAt: new Date().toISOString() });
        created = true;
      } catch (err) {
        // Another node sharing the store, starting at the same time, created it first.
        if (!(err instanceof PlateError && err.code === "conflict")) throw err;
      }
    }
    const hash = hashSecret(secret);
    if ((await this.store.findKey(plateId, hash)) === undefined) {
      try {
        // The id follows from the secret, so nodes starting together try to write the same key;
        // the store lets one of them in.
        await this.createKey(plateId, { name: "bootstrap" }, secret, bootstrapKeyId(secret));
        return true;
      } catch (err) {
        if (!(err instanceof PlateError && err.code === "conflict")) throw err;
        // Another node wrote it; a conflict with no key of this plate is another plate's secret.
        if ((await this.store.findKey(plateId, hash)) === undefined) {
          throw new Error(`BOOTSTRAP_PLATES: the secret given for "${plateId}" is already a key of another plate.`);
        }
      }
    }
    return created;
  }
}

/** Reads `Authorization: <key>` or `Authorization: Bearer <key>`. */
export function parseAuthorization(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  const value = header.trim();
  // "Bearer" with nothing after it is a missing key, not a key called "Bearer".
  const secret = value.replace(/^bearer(?:\s+|$)/i, "");
  return secret === "" ? undefined : secret;
}

function viewKey(key: KeyRecord): KeyView {
  return { id: key.id, name: key.name, scopes: key.scopes, channels: key.channels, createdAt: key.createdAt };
}

function parseName(value: unknown, fallback: string): string {
  if (value === undefined || value === null) return fallback;
  if (typeof value !== "string" || value.length > MAX_NAME_CHARS) {
    throw new PlateError("invalid_parameter", `"name" must be a string of at most ${MAX_NAME_CHARS} characters.`);
  }
  return value;
}

function parseScopes(value: unknown): Scope[] {
  if (value === undefined || value === null) return [...SCOPES];
  if (!Array.isArray(value) || value.length === 0 || !value.every(isScope)) {
    throw new PlateError("invalid_parameter", `"scopes" must be a non-empty list of ${SCOPES.join(", ")}.`);
  }
  return [...new Set(value)];
}

function parseChannels(value: unknown): ChannelPattern[] | null {
  if (value === undefined || value === null) return null;
  if (
    !Array.isArray(value) ||
    value.length === 0 ||
    value.length > MAX_KEY_CHANNELS ||
    !value.every((p): p is ChannelPattern => typeof p === "string" && isChannelPattern(p))
  ) {
    throw new PlateError(
      "invalid_parameter",
      `"channels" must be a list of 1 to ${MAX_KEY_CHANNELS} channel patterns (channel characters, * and ?).`,
    );
  }
  return [...new Set(value)];
}

/** What a node keeps cached of a plate: its retention and its limits in force. */
export interface PlateSettings {
  readonly retention: Retention;
  readonly limits: Limits;
}

/** Largest value any limit may be set to. */
const MAX_LIMIT = 1_000_000_000_000;

/** A plate's `limits` as the admin API takes them: some of `LIMIT_NAMES`, each a whole number from 0 to `MAX_LIMIT`. */
export function parseLimits(input: unknown): PlateLimits {
  if (typeof input !== "object" || input === null || Array.isArray(input)) {
    throw new PlateError("invalid_parameter", `limits must be an object of some of ${LIMIT_NAMES.join(", ")}.`);
  }
  const out: Record<string, number> = {};
  for (const [name, value] of Object.entries(input)) {
    if (!(LIMIT_NAMES as readonly string[]).includes(name)) {
      throw new PlateError("invalid_parameter", `"${name}" is not a limit; the limits are ${LIMIT_NAMES.join(", ")}.`);
    }
    if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value > MAX_LIMIT) {
      throw new PlateError("invalid_parameter", `limits.${name} must be a whole number from 0 to ${MAX_LIMIT}.`);
    }
    out[name] = value;
  }
  return out;
}

/** A plate's `history` as the admin API takes it: `{"count": 0-10000, "ageMs": 1000-604800000}`. */
function parseHistory(input: unknown): PlateHistory {
  const value = input as { count?: unknown; ageMs?: unknown } | null;
  const count = value?.count;
  const ageMs = value?.ageMs;
  if (typeof input !== "object" || input === null || Array.isArray(input) || Object.keys(input).some((k) => k !== "count" && k !== "ageMs")) {
    throw new PlateError("invalid_parameter", 'history must be {"count": <messages>, "ageMs": <ms>}.');
  }
  if (typeof count !== "number" || !Number.isInteger(count) || count < 0 || count > MAX_HISTORY_COUNT) {
    throw new PlateError("invalid_parameter", `history.count must be a whole number from 0 to ${MAX_HISTORY_COUNT}.`);
  }
  if (typeof ageMs !== "number" || !Number.isInteger(ageMs) || ageMs < 1000 || ageMs > MAX_HISTORY_AGE_MS) {
    throw new PlateError("invalid_parameter", `history.ageMs must be a whole number of ms from 1000 to ${MAX_HISTORY_AGE_MS}.`);
  }
  return { count, ageMs };
}
