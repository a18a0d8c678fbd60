import { PlateError, SCOPES, isChannelPattern, isPlateId, isScope, patternCovers, compilePattern } from "@plate/protocol";
import type { ChannelPattern, PlateId, Scope, Topic } from "@plate/protocol";
import type { KeyRecord, PlateRecord, Revocation, Store } from "@plate/store";
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

/**
 * Plates, keys and what a key may do. Depends only on the `Store` seam.
 */
export class Tenancy {
  readonly #keys: KeyCache;

  /** `keyCacheMs`: how long a key found in the store is trusted without asking again (`KEY_CACHE_MS`). */
  constructor(
    private readonly store: Store,
    keyCacheMs: number,
  ) {
    this.#keys = new KeyCache(keyCacheMs);
  }

  /** Forgets cached keys that a revocation (from any node) names. */
  forget(revocation: Revocation): void {
    this.#keys.forget(revocation);
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

  /** As `authenticate`, for a secret sent another way (a WebSocket's auth frame). */
  async authenticateSecret(plateId: PlateId, secret: string): Promise<KeyRecord> {
    const key = secret === "" ? undefined : await this.#findKey(secret);
    if (key === undefined || key.plateId !== plateId) {
      throw new PlateError("invalid_api_key", "This API key is not valid for this plate.");
    }
    return key;
  }

  async #findKey(secret: string): Promise<KeyRecord | undefined> {
    const now = Date.now();
    const cached = this.#keys.get(secret, now);
    if (cached !== undefined) return cached;
    const key = await this.store.findKeyByHash(hashSecret(secret));
    if (key !== undefined) this.#keys.put(secret, key, now);
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
  async createPlate(input: { id?: unknown; name?: unknown }): Promise<{ plate: PlateRecord; key: NewKey }> {
    if (input.id !== undefined && (typeof input.id !== "string" || !isPlateId(input.id))) {
      throw new PlateError("invalid_plate", "A plate id has 1 to 64 of A-Z, a-z, 0-9, _ and -.");
    }
    const id = input.id ?? newPlateId();
    const plate = await this.store.createPlate({
      id,
      name: parseName(input.name, id),
      createdAt: new Date().toISOString(),
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
    let existing = await this.store.findKeyByHash(hash);
    if (existing === undefined) {
      try {
        // The id follows from the secret, so nodes starting together try to write the same key;
        // the store lets one of them in.
        await this.createKey(plateId, { name: "bootstrap" }, secret, bootstrapKeyId(secret));
        return true;
      } catch (err) {
        if (!(err instanceof PlateError && err.code === "conflict")) throw err;
        existing = await this.store.findKeyByHash(hash);
      }
    }
    if (existing !== undefined && existing.plateId !== plateId) {
      throw new Error(`BOOTSTRAP_PLATES: the secret given for "${plateId}" is already a key of another plate.`);
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
