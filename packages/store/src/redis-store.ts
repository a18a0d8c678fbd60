/**
 * The store of many edge nodes sharing Redis: one server, a primary watched by Sentinel, or a Redis
 * Cluster. Every name starts with `keyPrefix` (`P` below, `plate:` by default); `{a}` is the plate
 * id as a hash tag, so everything of one plate lives in one hash slot of a cluster:
 *
 * | name                   | type    | holds                                                          |
 * |------------------------|---------|----------------------------------------------------------------|
 * | `Pplate:{a}`           | string  | the plate's PlateRecord JSON (the truth of whether it exists)  |
 * | `Pplate-keys:{a}`      | hash    | key id → key hash: the plate's keys (the truth of which count) |
 * | `Pkey:{a}:<hash>`      | string  | KeyRecord JSON, named by the hex SHA-256 of the key's secret:  |
 * |                        |         | a request names its plate, so a key is found in its slot;     |
 * |                        |         | believed only while the plate's index holds it                |
 * | `Psecret:<hash>`       | string  | the plate holding that secret: one secret, one key, across     |
 * |                        |         | plates (read only when a key is created)                      |
 * | `Psigning-keys:{a}`    | hash    | signing key id (`kid`) → SigningKeyRecord JSON (route 11)      |
 * | `Pwebhook:{a}`         | string  | WebhookRecord JSON (route 10's channel events)                 |
 * | `Pwebhook-events:{a}`  | stream  | its events waiting (field e: JSON), MAXLEN ~ the node's bound   |
 * | `Pwebhook-state:{a}`   | hash    | until (held by a node), retryAt, attempts                      |
 * | `Pwebhook-waiting`     | set     | plate ids with events waiting (one slot: a few per second)     |
 * | `Pplate-ids`           | set     | every plate id: the plate list (one key on one master)         |
 * | `Ptoken:{a}:<token>`   | hash    | `record` → TokenRecord JSON, `uses` → uses spent; Redis        |
 * |                        |         | deletes it at `expiresAt + tokenTombstoneMs`                   |
 * | `Ptoken-sizes:{a}`     | zset    | "<token>:<bytes>" → when it is deleted: the plate's token      |
 * |                        |         | budget (`putToken`'s `maxBytes`), swept at each put           |
 * | `Ptoken-bytes:{a}`     | string  | the sum of those bytes                                         |
 * | `Pconnections:{a}`     | hash    | node id → "open connections:lease end ms" (reportConnections) |
 * | `Prate:{a}:<name>`     | hash    | n, at: a token bucket (`takeRate`)                             |
 * | `Pusage:{a}:<hour>`    | hash    | the plate's usage counters in that hour, `peak:<node>`         |
 * | `Pctl` (pub/sub)       |         | revocations, JSON `{"plateId","keyId"?}` (classic PUBLISH: it  |
 * |                        |         | reaches every node of a cluster; revocations are rare)        |
 * | `Pctl.probe.<id>` (pub/sub) |    | one store instance's deaf-subscriber probes (see the class)    |
 *
 * What spans plates (the list, the secrets taken) cannot be in a plate's script on a cluster;
 * it is written in an order whose partial failure is harmless, and compensated:
 * - createPlate: the record (SET NX, the uniqueness check), then the list; a failed list write
 *   deletes the record again. A listed id without a record (a delete cut short) is skipped.
 * - createKey: the secret (SET NX: uniqueness across plates), then the key in the plate's script
 *   (which checks the plate exists); a refused key frees the secret again. A secret left taken by
 *   a failure names a plate without that key, and the next key that wants it takes it over.
 * - deleteKey / deletePlate: the plate's script first (key records and index gone, revocation
 *   announced: from then on nothing of it authenticates or claims), then the list and the
 *   secrets, best effort.
 * The broker's names (`P<a>:<c>`, `Phistory:{a}:<c>`, ...) start with other words, so no two
 * names collide. A deleted plate's tokens are left to expire (a claim finds their key gone).
 * ioredis' own `keyPrefix` option is not used: it would not reach the control channel.
 *
 * The layout before Redis Cluster support (a hash `Pplates`, indexes without hash tags) is moved to
 * this one when the store connects to one Redis; client tokens minted before that must be minted again.
 */
import { randomBytes } from "node:crypto";
import type { Redis, RedisOptions } from "ioredis";
import { PlateError, isPlateId, readJsonObject } from "@plate/protocol";
import type { ClientToken, PlateId } from "@plate/protocol";
import { DeafnessProbe, RefusalWarnings, checkKeyPrefix, closeConnection, connectCommands, connectNode, connectPrimary, isCommandReady, reconnectOnReadOnly } from "@plate/redis";
import type { Commands, RedisRefusal, RedisTarget, Warn } from "@plate/redis";
import { withScripts } from "./redis-scripts.js";
import type { StoreScripts } from "./redis-scripts.js";
import { TOKEN_COST, USAGE_COUNTERS, signingKeyOwner, withHistory, withLimits } from "./store.js";
import type { ClaimResult, KeyRecord, SigningKeyRecord, PlateHistory, PlateLimits, PlateRecord, UsageAdd, UsageHour, Revocation, Store, TokenRecord, WebhookClaim, WebhookRecord } from "./store.js";

/** Settings of the Redis store; each is a setting of the edge node. */
export interface RedisStoreOptions {
  /** The shared Redis: one server, Sentinel, or a cluster (see `RedisTarget`). */
  readonly target: RedisTarget;
  /** On a cluster, how often the slot map is read again when nothing failed, in ms (`REDIS_CLUSTER_REFRESH_MS`). */
  readonly clusterRefreshMs?: number;
  /** Put before every key and the control channel, e.g. `plate:` (`REDIS_KEY_PREFIX`). */
  readonly keyPrefix: string;
  /** How long an expired token still claims as expired rather than unknown, in ms; Redis then deletes it. */
  readonly tokenTombstoneMs: number;
  /** How long one Redis command may take before its call fails with `broker_unavailable`, in ms. */
  readonly commandTimeoutMs: number;
  /** Longest wait between reconnect attempts, in ms: bounds how long the store stays down after Redis is back. */
  readonly reconnectMaxMs: number;
  /** How often the store sends itself a probe through its control channel's subscriber, in ms (`REDIS_PROBE_INTERVAL_MS`). */
  readonly probeIntervalMs: number;
  /** How long that probe may take to come back before the subscriber counts as deaf, in ms (`REDIS_PROBE_TIMEOUT_MS`). */
  readonly probeTimeoutMs: number;
  /** Where the store reports what an operator should know (a deaf subscriber, Redis refusing commands). */
  readonly warn?: Warn;
}

/** First wait before reconnecting, in ms; it doubles at each failed attempt, up to `reconnectMaxMs`. */
const RECONNECT_FIRST_MS = 50;
/** Random bytes in the name of one store instance's probe channel. */
const PROBE_ID_BYTES = 6;
/** `Retry-After` of `broker_unavailable`, in s: a reconnect attempt comes within `reconnectMaxMs`. */
const RETRY_AFTER_S = 1;
/** Redis answers that mean a bug, or foreign data under the prefix, rather than an unavailable Redis. */
const BUG_REPLY = /^(ERR|WRONGTYPE) /;

/**
 * `Store` over Redis, for any number of stateless nodes. Reads are one or two round trips
 * (`listKeys` and `listPlates` read the list then the records); finding a key or claiming a token
 * is one script on the plate's master; the writes are the ordered steps above.
 *
 * - Two connections: commands, and a subscriber to `{p}ctl`. A deletion publishes its revocation
 *   from inside its script; every instance, the deleting one included, hears it there and tells
 *   its `onRevoked` listeners. Revocations published while this node's subscriber is disconnected
 *   are lost (Redis pub/sub keeps nothing): each time the subscriber has subscribed again, the
 *   `onResync` listeners are told.
 * - Deaf-subscriber guard (as the Redis broker's): every `probeIntervalMs` the store publishes a
 *   probe to a channel of its own, which its subscriber also listens to. A probe not back within
 *   `probeTimeoutMs` means the subscriber is up but deaf: the store reports not ready, reconnects
 *   it, and (once subscribed again) tells its `onResync` listeners.
 * - Redis refusing a command (OOM, READONLY, ...) rejects with `broker_unavailable` naming the
 *   refusal, warned once until a call succeeds again; READONLY (a primary demoted by a failover)
 *   also reconnects the command connection, so it reaches the new primary at the same address.
 * - Redis unreachable: every call rejects with `broker_unavailable` at once (no offline queue), or
 *   after `commandTimeoutMs` when Redis does not answer. A call that timed out may still have run
 *   in Redis (a claim may have spent its use). Both connections keep reconnecting meanwhile.
 * - On a cluster, the commands go to the master of each plate's slot (a master that is down fails
 *   only its plates' calls), and the control channel is heard on any one server (see
 *   `roamingSubscriber`).
 */
export class RedisStore implements Store {
  readonly #options: RedisStoreOptions;
  readonly #names: RedisNames;
  readonly #commands: Commands & StoreScripts;
  readonly #subscriber: Redis;
  readonly #listeners = new Set<(revocation: Revocation) => void>();
  readonly #resyncListeners = new Set<() => void>();
  readonly #probeChannel: string;
  readonly #probe: DeafnessProbe;
  readonly #refusals: RefusalWarnings;
  /** The control channel is subscribed on the subscriber's current connection (and not found deaf). */
  #listening = false;
  /** The latest subscription to the control channel, started at each "ready" of the subscriber. */
  #subscribing: Promise<void> | undefined;
  #closing: Promise<void> | undefined;

  private constructor(options: RedisStoreOptions) {
    this.#options = options;
    this.#names = redisNames(options.keyPrefix);
    this.#probeChannel = `${this.#names.control}.probe.${randomBytes(PROBE_ID_BYTES).toString("hex")}`;
    this.#refusals = new RefusalWarnings(options.warn, "redis refuses the store's commands");
    const connection: RedisOptions = {
      // open() connects, to learn whether Redis is there at all.
      lazyConnect: true,
      // While disconnected a call fails at once instead of waiting in a queue.
      enableOfflineQueue: false,
      commandTimeout: options.commandTimeoutMs,
      // A call in flight when the connection drops fails at once, and is never sent again: a claim
      // or a delete whose answer was lost may already have run.
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false,
      // ioredis' own resubscription leaves its SUBSCRIBE's rejection unhandled; ours is #resubscribe.
      autoResubscribe: false,
      retryStrategy: (attempt) => Math.min(RECONNECT_FIRST_MS * 2 ** Math.min(attempt - 1, 16), options.reconnectMaxMs),
    };
    const { target } = options;
    this.#commands = withScripts(
      connectCommands(target, { ...connection, reconnectOnError: reconnectOnReadOnly }, options.clusterRefreshMs === undefined ? {} : { slotsRefreshMs: options.clusterRefreshMs }),
    );
    this.#subscriber = target.kind === "cluster" ? roamingSubscriber(target, connection) : connectPrimary(target, connection);
    // The layout before cluster support, on one Redis: moved at every connect (idempotent, one TYPE when done).
    if (target.kind !== "cluster") this.#commands.on("ready", () => void this.#migrate());
    // Errors reach callers as rejections and show in isReady(); unheard, ioredis prints each one.
    this.#commands.on("error", ignore);
    this.#subscriber.on("error", ignore);
    this.#subscriber.on("close", () => {
      this.#listening = false;
    });
    this.#subscriber.on("message", (channel: string, text: string) => this.#onControl(channel, text));
    this.#probe = new DeafnessProbe({
      intervalMs: options.probeIntervalMs,
      timeoutMs: options.probeTimeoutMs,
      wanted: () => this.isReady(),
      publish: (payload) => this.#commands.publish(this.#probeChannel, payload),
      lost: () => this.#probeLost(),
    });
  }

  /**
   * Connects both connections and subscribes to the control channel, so the store hears every
   * revocation made after it opened. When Redis cannot be reached the store opens all the same:
   * its calls answer `broker_unavailable`, `isReady()` is false, and both connections keep trying
   * (a node may start before its Redis; it has no open connections for a revocation to close yet).
   */
  static async open(options: RedisStoreOptions): Promise<RedisStore> {
    const store = new RedisStore(options);
    store.#subscriber.on("ready", () => {
      store.#subscribing = store.#resubscribe();
    });
    try {
      await Promise.all([store.#commands.connect(), store.#subscriber.connect()]);
      await store.#subscribing;
    } catch {
      // Not reachable yet: ioredis goes on reconnecting, and "ready" subscribes when it succeeds.
    }
    return store;
  }

  async createPlate(plate: PlateRecord): Promise<PlateRecord> {
    const record = JSON.stringify(plate);
    const name = this.#names.plate(plate.id);
    const created = await this.#reach(this.#live.set(name, record, "NX"));
    if (created === null) throw new PlateError("conflict", `A plate with id "${plate.id}" already exists.`);
    try {
      await this.#reach(this.#live.sadd(this.#names.plateList, plate.id));
    } catch (err) {
      // Not listed: undo the record, so a retry can create it (and nothing half-made stays).
      await this.#tidy(() => this.#commands.plateDeleteIf(name, record));
      throw err;
    }
    return plate;
  }

  async getPlate(id: PlateId): Promise<PlateRecord | undefined> {
    const text = await this.#reach(this.#live.get(this.#names.plate(id)));
    return text === null ? undefined : parse<PlateRecord>(text);
  }

  setPlateHistory(id: PlateId, history: PlateHistory | null): Promise<PlateRecord | undefined> {
    return this.#updatePlate(id, (plate) => withHistory(plate, history));
  }

  setPlateLimits(id: PlateId, limits: PlateLimits | null): Promise<PlateRecord | undefined> {
    return this.#updatePlate(id, (plate) => withLimits(plate, limits));
  }

  /** Replaces a plate's record with `change` of it; undefined when there is no such plate. */
  async #updatePlate(id: PlateId, change: (plate: PlateRecord) => PlateRecord): Promise<PlateRecord | undefined> {
    const plate = await this.getPlate(id);
    if (plate === undefined) return undefined;
    const updated = change(plate);
    // Written only if the plate still exists (a delete may have come in between); concurrent
    // updates of one plate: the last one wins.
    const written = await this.#reach(this.#live.plateReplacePlate(this.#names.plate(id), JSON.stringify(updated)));
    return written === 1 ? updated : undefined;
  }

  async listPlates(): Promise<PlateRecord[]> {
    const ids = await this.#reach(this.#live.smembers(this.#names.plateList));
    // One GET per plate: the records live in slots of their own (pipelined by the client).
    const texts = await this.#reach(Promise.all(ids.map((id) => this.#live.get(this.#names.plate(id as PlateId)))));
    return texts.flatMap((text) => (text === null ? [] : [parse<PlateRecord>(text)]));
  }

  async deletePlate(id: PlateId): Promise<boolean> {
    const names = this.#names;
    const payload = JSON.stringify({ plateId: id } satisfies Revocation);
    const hashes = await this.#reach(this.#live.hvals(names.plateKeys(id)));
    const keyNames = [names.plate(id), names.plateKeys(id), names.signingKeys(id), names.webhook(id), names.webhookEvents(id), names.webhookState(id), ...hashes.map((hash) => names.key(id, hash))];
    const deleted = await this.#reach(this.#live.plateDeletePlate(keyNames.length, ...keyNames, names.control, payload));
    if (deleted !== 1) return false;
    // The plate is gone and announced; what follows only tidies (a listed id without a record is
    // skipped, a secret taken by a key that is gone is freed by the next key that wants it).
    await Promise.all([
      this.#tidy(() => this.#commands.srem(names.plateList, id)),
      ...hashes.map((hash) => this.#tidy(() => this.#commands.plateDeleteIf(names.secret(hash), id))),
    ]);
    return true;
  }

  async createKey(key: KeyRecord): Promise<KeyRecord> {
    const names = this.#names;
    const secret = names.secret(key.hash);
    if (!(await this.#takeSecret(key.hash, key.plateId))) {
      throw new PlateError("conflict", `A key with id "${key.id}" or that secret already exists.`);
    }
    let outcome: unknown;
    try {
      outcome = await this.#reach(
        this.#live.plateCreateKey(names.plate(key.plateId), names.plateKeys(key.plateId), names.key(key.plateId, key.hash), key.id, key.hash, JSON.stringify(key)),
      );
    } catch (err) {
      await this.#tidy(() => this.#commands.plateDeleteIf(secret, key.plateId));
      throw err;
    }
    if (outcome === "ok") return key;
    await this.#tidy(() => this.#commands.plateDeleteIf(secret, key.plateId));
    if (outcome === "not_found") throw new PlateError("not_found", `There is no plate "${key.plateId}".`);
    throw new PlateError("conflict", `A key with id "${key.id}" or that secret already exists.`);
  }

  async listKeys(plateId: PlateId): Promise<KeyRecord[]> {
    const hashes = await this.#reach(this.#live.hvals(this.#names.plateKeys(plateId)));
    if (hashes.length === 0) return [];
    // One slot: one MGET. A key revoked between the two reads reads as null and is left out.
    const texts = await this.#reach(this.#live.mget(hashes.map((hash) => this.#names.key(plateId, hash))));
    return texts.flatMap((text) => (text === null ? [] : [parse<KeyRecord>(text)]));
  }

  async findKey(plateId: PlateId, hash: string): Promise<KeyRecord | undefined> {
    const text = await this.#reach(this.#live.plateFindKey(this.#names.key(plateId, hash), this.#names.plateKeys(plateId)));
    return text === null ? undefined : parse<KeyRecord>(text);
  }

  async deleteKey(plateId: PlateId, keyId: string): Promise<boolean> {
    const names = this.#names;
    const hash = await this.#reach(this.#live.hget(names.plateKeys(plateId), keyId));
    if (hash === null) return false;
    const payload = JSON.stringify({ plateId, keyId } satisfies Revocation);
    const deleted = await this.#reach(this.#live.plateDeleteKey(names.plateKeys(plateId), names.key(plateId, hash), keyId, hash, names.control, payload));
    if (deleted !== 1) return false;
    // Revoked and announced; freeing its secret only tidies (see #takeSecret).
    await this.#tidy(() => this.#commands.plateDeleteIf(names.secret(hash), plateId));
    return true;
  }

  async createSigningKey(key: SigningKeyRecord): Promise<SigningKeyRecord> {
    const names = this.#names;
    const outcome = await this.#reach(this.#live.plateCreateSigningKey(names.plate(key.plateId), names.signingKeys(key.plateId), key.id, JSON.stringify(key)));
    if (outcome === "not_found") throw new PlateError("not_found", `There is no plate "${key.plateId}".`);
    if (outcome === "conflict") throw new PlateError("conflict", `A signing key with id "${key.id}" already exists.`);
    return key;
  }

  async listSigningKeys(plateId: PlateId): Promise<SigningKeyRecord[]> {
    return (await this.#reach(this.#live.hvals(this.#names.signingKeys(plateId)))).map((text) => parse<SigningKeyRecord>(text));
  }

  async findSigningKey(plateId: PlateId, id: string): Promise<SigningKeyRecord | undefined> {
    const text = await this.#reach(this.#live.hget(this.#names.signingKeys(plateId), id));
    return text === null ? undefined : parse<SigningKeyRecord>(text);
  }

  async setWebhook(record: WebhookRecord): Promise<WebhookRecord> {
    const names = this.#names;
    const written = await this.#reach(this.#live.plateSetIfPlate(names.plate(record.plateId), names.webhook(record.plateId), JSON.stringify(record)));
    if (written !== 1) throw new PlateError("not_found", `There is no plate "${record.plateId}".`);
    return record;
  }

  async getWebhook(plateId: PlateId): Promise<WebhookRecord | undefined> {
    const text = await this.#reach(this.#live.get(this.#names.webhook(plateId)));
    return text === null ? undefined : parse<WebhookRecord>(text);
  }

  async deleteWebhook(plateId: PlateId): Promise<boolean> {
    return (await this.#reach(this.#live.del(this.#names.webhook(plateId)))) === 1;
  }

  async webhookPush(plateId: PlateId, events: readonly string[], max: number): Promise<void> {
    const names = this.#names;
    const live = this.#live;
    // Both sent now, in order: the plate is listed once its events are in.
    await this.#reach(
      Promise.all([
        ...events.map((json) => live.xadd(names.webhookEvents(plateId), "MAXLEN", "~", max, "*", "e", json)),
        live.sadd(names.webhookWaiting, plateId),
      ]),
    );
  }

  async webhookWaiting(limit: number): Promise<PlateId[]> {
    return (await this.#reach(this.#live.srandmember(this.#names.webhookWaiting, limit))) as PlateId[];
  }

  async webhookClaim(plateId: PlateId, count: number, leaseMs: number): Promise<WebhookClaim | undefined> {
    const names = this.#names;
    const reply = await this.#reach(this.#live.plateWebhookClaim(names.webhookEvents(plateId), names.webhookState(plateId), count, leaseMs));
    // Held by another node, or its retry not due: its events wait, and the plate stays listed.
    if (reply === 0) return undefined;
    if (reply === null) {
      // Nothing waits any more: off the list, unless events came meanwhile (the order makes it safe).
      await this.#unlistIfEmpty(plateId);
      return undefined;
    }
    const ids: string[] = [];
    const events: string[] = [];
    for (let i = 1; i + 1 < reply.length; i += 2) {
      ids.push(String(reply[i]));
      events.push(String(reply[i + 1]));
    }
    return { ids, events, attempts: Number(reply[0]) };
  }

  async webhookDone(plateId: PlateId, ids: readonly string[]): Promise<void> {
    const names = this.#names;
    const left = await this.#reach(this.#live.plateWebhookDone(names.webhookEvents(plateId), names.webhookState(plateId), ...ids));
    if (left === 0) await this.#unlistIfEmpty(plateId);
  }

  async webhookRetry(plateId: PlateId, retryMs: number): Promise<void> {
    const names = this.#names;
    await this.#reach(this.#live.plateWebhookRetry(names.webhookEvents(plateId), names.webhookState(plateId), retryMs));
  }

  async usageAdd(nodeId: string, adds: readonly UsageAdd[], keepMs: number): Promise<void> {
    const live = this.#live;
    const sent: Promise<unknown>[] = [];
    // All sent before any answer: one pipeline per flush, whatever the number of plates.
    for (const add of adds) {
      const key = this.#names.usage(add.plateId, add.hour);
      for (const [name, n] of Object.entries(add.counts)) if (n !== 0) sent.push(live.hincrby(key, name, n));
      if (add.peakConnections !== undefined) sent.push(live.hset(key, "peak:" + nodeId, add.peakConnections));
      sent.push(live.pexpireat(key, Date.parse(add.hour + ":00:00Z") + keepMs));
    }
    await this.#reach(Promise.all(sent));
  }

  async takeRate(plateId: PlateId, name: string, perS: number, burst: number, count: number): Promise<number> {
    if (perS === 0) return 0;
    // The key lives as long as the bucket takes to fill again, after which it would start full anyway.
    const ttlMs = Math.ceil((burst * 1000) / perS) + 1000;
    return this.#reach(this.#live.plateTakeRate(this.#names.rate(plateId, name), perS, burst, count, ttlMs));
  }

  async reportConnections(nodeId: string, counts: ReadonlyMap<PlateId, number>, leaseMs: number): Promise<Map<PlateId, number>> {
    const live = this.#live;
    const plates = [...counts.keys()];
    // All sent before any answer: one pipeline per report, whatever the number of plates.
    const others = await this.#reach(Promise.all(plates.map((plateId) => live.plateReportConnections(this.#names.connections(plateId), nodeId, counts.get(plateId)!, leaseMs))));
    return new Map(plates.map((plateId, i) => [plateId, others[i]!]));
  }

  async usageRead(plateId: PlateId, hours: readonly string[]): Promise<UsageHour[]> {
    const live = this.#live;
    const all = await this.#reach(Promise.all(hours.map((hour) => live.hgetall(this.#names.usage(plateId, hour)))));
    return hours.map((hour, i) => {
      const fields = all[i] ?? {};
      let peak = 0;
      for (const [name, value] of Object.entries(fields)) if (name.startsWith("peak:")) peak += Number(value);
      return { hour, peakConnections: peak, ...Object.fromEntries(USAGE_COUNTERS.map((name) => [name, Number(fields[name] ?? 0)])) } as UsageHour;
    });
  }

  /** Takes a plate off the waiting list, then puts it back if an event came in between. */
  /**
   * Takes a plate whose queue is empty off the list. The list is one key for every plate (a cluster
   * cannot run it in a plate's script), so this is three calls, not one: a node that dies between
   * the SREM and the SADD leaves the plate unlisted. Only a queue seen empty just before is unlisted,
   * so that takes an event pushed in between as well; the plate's next event lists it again.
   */
  async #unlistIfEmpty(plateId: PlateId): Promise<void> {
    const names = this.#names;
    const events = names.webhookEvents(plateId);
    if ((await this.#reach(this.#live.xlen(events))) > 0) return;
    await this.#reach(this.#live.srem(names.webhookWaiting, plateId));
    if ((await this.#reach(this.#live.xlen(events))) > 0) await this.#reach(this.#live.sadd(names.webhookWaiting, plateId));
  }

  async deleteSigningKey(plateId: PlateId, id: string): Promise<boolean> {
    const payload = JSON.stringify({ plateId, keyId: signingKeyOwner(id) } satisfies Revocation);
    return (await this.#reach(this.#live.plateDeleteSigningKey(this.#names.signingKeys(plateId), id, this.#names.control, payload))) === 1;
  }

  async putToken(token: TokenRecord, maxBytes = 0): Promise<boolean> {
    const deleteAtMs = token.expiresAt + this.#options.tokenTombstoneMs;
    const names = this.#names;
    const stored = await this.#reach(
      this.#live.platePutToken(
        names.token(token.plateId, token.token),
        names.tokenSizes(token.plateId),
        names.tokenBytes(token.plateId),
        JSON.stringify(token),
        deleteAtMs,
        maxBytes,
        TOKEN_COST.overhead,
        token.token,
      ),
    );
    return stored === 1;
  }

  async claimToken(plateId: PlateId, token: ClientToken, nowMs: number): Promise<ClaimResult> {
    const reply = await this.#reach(
      this.#live.plateClaimToken(
        this.#names.token(plateId, token),
        this.#names.plateKeys(plateId),
        plateId,
        nowMs,
        this.#options.tokenTombstoneMs,
      ),
    );
    return decodeClaim(reply);
  }

  onRevoked(listener: (revocation: Revocation) => void): () => void {
    this.#listeners.add(listener);
    return () => void this.#listeners.delete(listener);
  }

  /** Told after every subscription of the control channel (see the class). */
  onResync(listener: () => void): () => void {
    this.#resyncListeners.add(listener);
    return () => void this.#resyncListeners.delete(listener);
  }

  /**
   * Whether calls can succeed and revocations arrive: the command connection is up and the
   * subscriber is up, subscribed and not found deaf.
   */
  isReady(): boolean {
    return this.#closing === undefined && this.#listening && this.#commands.status === "ready";
  }

  /** Quits both connections (pending replies first) and forgets every listener. Safe to call twice. */
  close(): Promise<void> {
    this.#closing ??= this.#shut();
    return this.#closing;
  }

  async #shut(): Promise<void> {
    this.#probe.stop();
    this.#listeners.clear();
    this.#resyncListeners.clear();
    this.#listening = false;
    await Promise.all([closeConnection(this.#commands), closeConnection(this.#subscriber)]);
    this.#commands.removeAllListeners();
    this.#subscriber.removeAllListeners();
  }

  /**
   * After every connect of the subscriber: subscribe to the control channel (and the probe's), then
   * tell the resync listeners what was published while it was not subscribed went unheard.
   */
  async #resubscribe(): Promise<void> {
    try {
      await this.#subscriber.subscribe(this.#names.control, this.#probeChannel);
    } catch {
      // The SUBSCRIBE was lost (dropped again, or timed out): reconnect, and this runs again when ready.
      if (this.#closing === undefined) this.#subscriber.disconnect(true);
      return;
    }
    this.#listening = true;
    for (const listener of this.#resyncListeners) {
      try {
        listener();
      } catch {
        // A listener must not throw; one that does stops neither the others nor ioredis.
      }
    }
  }

  /**
   * The command connection when a command sent now goes out; else `broker_unavailable` is thrown
   * (inside the async methods: their promise rejects).
   */
  get #live(): Commands & StoreScripts {
    if (!isCommandReady(this.#commands)) throw unavailable(undefined, undefined);
    return this.#commands;
  }

  /** A step that only tidies: sent when the connection is up, its failure ignored. */
  async #tidy(send: () => Promise<unknown>): Promise<void> {
    if (!isCommandReady(this.#commands)) return;
    await send().catch(ignore);
  }

  /**
   * Takes a secret for a key of `plateId` unless a key that exists holds it: true when taken. A
   * secret whose key is gone (a failure between the steps of createKey or a delete) is taken over.
   */
  async #takeSecret(hash: string, plateId: PlateId): Promise<boolean> {
    const secret = this.#names.secret(hash);
    if ((await this.#reach(this.#live.set(secret, plateId, "NX"))) !== null) return true;
    const holder = await this.#reach(this.#live.get(secret));
    if (holder === null) return (await this.#reach(this.#live.set(secret, plateId, "NX"))) !== null;
    if ((await this.findKey(holder as PlateId, hash)) !== undefined) return false;
    await this.#reach(this.#live.plateDeleteIf(secret, holder));
    return (await this.#reach(this.#live.set(secret, plateId, "NX"))) !== null;
  }

  /** Moves the layout before cluster support to today's (one Redis only; see the top of this file). */
  async #migrate(): Promise<void> {
    try {
      const moved = await this.#commands.plateMigratePlates(this.#names.legacyPlates, this.#names.plateList, this.#options.keyPrefix);
      if (moved > 0) this.#options.warn?.("moved plates to the Redis layout of this version", { plates: moved });
    } catch (err) {
      this.#options.warn?.("could not move plates to the Redis layout of this version; retried at the next connect", { error: String(err) });
    }
  }

  /** The reply of a Redis call; a failure becomes `broker_unavailable` (see `unavailable`). */
  async #reach<T>(reply: Promise<T>): Promise<T> {
    let value: T;
    try {
      value = await reply;
    } catch (err) {
      if (err instanceof Error && err.name === "ReplyError" && BUG_REPLY.test(err.message)) throw err;
      throw unavailable(err, this.#refusals.failed(err));
    }
    this.#refusals.succeeded();
    return value;
  }

  #probeLost(): void {
    // Already reconnecting (cut, not deaf): its resubscription tells the resync listeners anyway.
    if (this.#closing !== undefined || !this.#listening) return;
    this.#options.warn?.("redis store subscriber is deaf (probe lost); reconnecting it", { probeTimeoutMs: this.#options.probeTimeoutMs });
    this.#listening = false;
    this.#subscriber.disconnect(true);
  }

  #onControl(channel: string, text: string): void {
    if (channel === this.#probeChannel) {
      this.#probe.returned(text);
      return;
    }
    if (channel !== this.#names.control) return;
    // Anything with access to Redis can publish here: a malformed payload is ignored.
    const revocation = decodeRevocation(text);
    if (revocation === undefined) return;
    for (const listener of this.#listeners) {
      try {
        listener(revocation);
      } catch {
        // A listener must not throw; one that does stops neither the others nor ioredis' reply parser.
      }
    }
  }
}

/** The names of one deployment's keys and control channel (the layout at the top of this file). */
interface RedisNames {
  readonly plateList: string;
  /** The hash of every plate in the layout before cluster support (see `#migrate`). */
  readonly legacyPlates: string;
  readonly control: string;
  plate(plateId: PlateId): string;
  key(plateId: PlateId, hash: string): string;
  secret(hash: string): string;
  plateKeys(plateId: PlateId): string;
  signingKeys(plateId: PlateId): string;
  webhook(plateId: PlateId): string;
  webhookEvents(plateId: PlateId): string;
  webhookState(plateId: PlateId): string;
  /** A plate's usage in one hour (hash: the counters, and `peak:<node id>`). */
  usage(plateId: PlateId, hour: string): string;
  /** A plate's token bucket `name` (hash: n, at). */
  rate(plateId: PlateId, name: string): string;
  /** A plate's open connections per node (hash: node id → "count:lease end ms"). */
  connections(plateId: PlateId): string;
  readonly webhookWaiting: string;
  token(plateId: PlateId, token: ClientToken): string;
  /** A plate's stored tokens for its token budget (zset: "token:size" → when it is deleted), and their sum. */
  tokenSizes(plateId: PlateId): string;
  tokenBytes(plateId: PlateId): string;
}

function redisNames(prefix: string): RedisNames {
  checkKeyPrefix(prefix);
  return {
    plateList: `${prefix}plate-ids`,
    legacyPlates: `${prefix}plates`,
    control: `${prefix}ctl`,
    plate: (plateId) => `${prefix}plate:{${plateId}}`,
    key: (plateId, hash) => `${prefix}key:{${plateId}}:${hash}`,
    secret: (hash) => `${prefix}secret:${hash}`,
    plateKeys: (plateId) => `${prefix}plate-keys:{${plateId}}`,
    signingKeys: (plateId) => `${prefix}signing-keys:{${plateId}}`,
    webhook: (plateId) => `${prefix}webhook:{${plateId}}`,
    webhookEvents: (plateId) => `${prefix}webhook-events:{${plateId}}`,
    webhookState: (plateId) => `${prefix}webhook-state:{${plateId}}`,
    usage: (plateId, hour) => `${prefix}usage:{${plateId}}:${hour}`,
    rate: (plateId, name) => `${prefix}rate:{${plateId}}:${name}`,
    connections: (plateId) => `${prefix}connections:{${plateId}}`,
    webhookWaiting: `${prefix}webhook-waiting`,
    token: (plateId, token) => `${prefix}token:{${plateId}}:${token}`,
    tokenSizes: (plateId) => `${prefix}token-sizes:{${plateId}}`,
    tokenBytes: (plateId) => `${prefix}token-bytes:{${plateId}}`,
  };
}

/**
 * The control channel's subscriber on a cluster: a connection to one of its servers (classic
 * PUBLISH reaches every server of a cluster). Each reconnect attempt goes to the next seed, so a
 * server that died is left for one that answers.
 */
function roamingSubscriber(target: Extract<RedisTarget, { kind: "cluster" }>, options: RedisOptions): Redis {
  const seeds = target.nodes;
  let next = 0;
  const seed = seeds[0]!;
  const redis = connectNode(target, `${seed.host}:${seed.port}`, {
    ...options,
    retryStrategy: (attempt) => {
      next = (next + 1) % seeds.length;
      // ioredis reads host and port from its options at each connect.
      redis.options.host = seeds[next]!.host;
      redis.options.port = seeds[next]!.port;
      return options.retryStrategy?.(attempt) ?? RECONNECT_FIRST_MS;
    },
  });
  return redis;
}

/** `broker_unavailable`, saying what Redis refused (OOM, READONLY, ...) or that it could not be reached. */
function unavailable(cause: unknown, refusal: RedisRefusal | undefined): PlateError {
  const what = refusal === undefined ? "The store (Redis) is unreachable" : `The store's Redis refused the command: ${refusal.what}`;
  return new PlateError("broker_unavailable", `${what}; retry shortly.`, { retryAfterS: RETRY_AFTER_S, cause });
}

/** Records in Redis are written by this class only, so their shape is not checked again. */
function parse<T>(text: string): T {
  return JSON.parse(text) as T;
}

/** The answer of the claim script (see `CLAIM_TOKEN`). */
function decodeClaim(reply: unknown): ClaimResult {
  const [code, uses, record] = Array.isArray(reply) ? (reply as unknown[]) : [];
  switch (code) {
    case "ok":
      if (typeof uses === "number" && typeof record === "string") {
        return { ok: true, token: parse<TokenRecord>(record), uses };
      }
      break;
    case "invalid_client_socket":
    case "expired_client_socket":
    case "exhausted_client_socket":
      return { ok: false, code };
  }
  throw new Error(`Unexpected answer of the claim script: ${JSON.stringify(reply)}`);
}

/** A revocation from the control channel; undefined for anything that is not one. */
function decodeRevocation(text: string): Revocation | undefined {
  const value = readJsonObject(text);
  if (value === undefined) return undefined;
  const { plateId, keyId } = value;
  if (typeof plateId !== "string" || !isPlateId(plateId)) return undefined;
  if (keyId === undefined) return { plateId };
  return typeof keyId === "string" && keyId !== "" ? { plateId, keyId } : undefined;
}

/** The sink of connection errors (see the constructor). */
function ignore(): void {
  return undefined;
}
