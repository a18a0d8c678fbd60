import { mkdir, open, readFile, rename } from "node:fs/promises";
import { join } from "node:path";
import { PlateError } from "@plate/protocol";
import type { ClientToken, PlateId } from "@plate/protocol";
import { TOKEN_COST, USAGE_COUNTERS, signingKeyOwner, withHistory, withLimits } from "./store.js";
import type { ClaimResult, KeyRecord, SigningKeyRecord, PlateHistory, PlateLimits, PlateRecord, UsageAdd, UsageCounter, UsageHour, Revocation, Store, TokenRecord, WebhookClaim, WebhookRecord } from "./store.js";

/** One plate's webhook events waiting, and who holds them until when. */
interface WebhookQueue {
  entries: { readonly id: string; readonly json: string }[];
  heldUntil: number;
  retryAt: number;
  attempts: number;
}

/** Settings of the embedded store. */
export interface MemoryStoreOptions {
  /** Folder for plates and keys; none keeps them in memory only (tests). */
  readonly dataDir?: string;
  /** How long an expired token still answers "expired" rather than "unknown", in ms. */
  readonly tokenTombstoneMs: number;
  /** How often expired tokens are swept, in ms. */
  readonly tokenSweepMs: number;
}

interface Snapshot {
  readonly version: 1;
  readonly plates: PlateRecord[];
  readonly keys: KeyRecord[];
  /** Absent in files written before signing keys. */
  readonly signingKeys?: SigningKeyRecord[];
  /** Absent in files written before webhooks. */
  readonly webhooks?: WebhookRecord[];
}

interface TokenEntry {
  readonly record: TokenRecord;
  uses: number;
  /** What it counts against its plate's token budget (see TOKEN_COST). */
  readonly size: number;
}

const SNAPSHOT_FILE = "plates.json";

/** A plate over its token budget has the forgotten tokens swept first, at most this often, in ms. */
const TOKEN_BUDGET_SWEEP_MIN_MS = 100;

/** Buckets held before the full ones are swept. */
const RATE_BUCKETS_SWEEP_AT = 10_000;

/** One plate's usage in one hour: its counts, and each node's peak of connections. */
interface UsageEntry {
  readonly counts: Partial<Record<UsageCounter, number>>;
  readonly peaks: Map<string, number>;
}

/**
 * The embedded store for a single node. Plates and keys live in memory and, with a `dataDir`, are
 * written to `plates.json` there after every change (write to a temporary file, fsync, rename: a
 * crash leaves the old file or the new one, never half of one). Client tokens are short-lived and
 * live in memory only: a restart of the single node forgets them.
 */
export class MemoryStore implements Store {
  readonly #plates = new Map<PlateId, PlateRecord>();
  readonly #keys = new Map<string, KeyRecord>();
  readonly #keysByHash = new Map<string, KeyRecord>();
  /** Signing keys by plate, then by id. */
  readonly #signingKeys = new Map<PlateId, Map<string, SigningKeyRecord>>();
  readonly #webhooks = new Map<PlateId, WebhookRecord>();
  /** Webhook events waiting, by plate (not persisted: one process, whose end ends them too). */
  readonly #webhookQueues = new Map<PlateId, WebhookQueue>();
  #webhookSeq = 0;
  /** Usage by plate, then hour (memory only, like the webhook queues: a restart starts it again). */
  readonly #usage = new Map<PlateId, Map<string, UsageEntry>>();
  /** Token buckets by plate and name (`takeRate`). */
  readonly #rates = new Map<string, { readonly n: number; readonly at: number; readonly perS: number; readonly burst: number }>();
  readonly #tokens = new Map<ClientToken, TokenEntry>();
  /** Each plate's stored tokens, their bytes (its token budget), and when they were last swept for it. */
  readonly #plateTokens = new Map<PlateId, { readonly tokens: Set<ClientToken>; bytes: number; sweptAt: number }>();
  /** Open connections per plate, per node, with each report's lease end (`reportConnections`). */
  readonly #connections = new Map<PlateId, Map<string, { readonly count: number; readonly untilMs: number }>>();
  readonly #listeners = new Set<(revocation: Revocation) => void>();
  readonly #options: MemoryStoreOptions;
  #sweep: NodeJS.Timeout | undefined;
  #closed = false;
  /** Writes run one after another; each writes the state as it is when it runs. */
  #writing: Promise<void> = Promise.resolve();

  private constructor(options: MemoryStoreOptions) {
    this.#options = options;
  }

  /** Opens the store, loading `dataDir/plates.json` when it exists. */
  static async open(options: MemoryStoreOptions): Promise<MemoryStore> {
    const store = new MemoryStore(options);
    if (options.dataDir !== undefined) {
      await mkdir(options.dataDir, { recursive: true });
      const snapshot = await readSnapshot(join(options.dataDir, SNAPSHOT_FILE));
      for (const plate of snapshot?.plates ?? []) store.#plates.set(plate.id, plate);
      for (const key of snapshot?.keys ?? []) store.#indexKey(key);
      for (const key of snapshot?.signingKeys ?? []) store.#signingKeysOf(key.plateId).set(key.id, key);
      for (const hook of snapshot?.webhooks ?? []) store.#webhooks.set(hook.plateId, hook);
    }
    store.#sweep = setInterval(() => store.#sweepTokens(Date.now()), options.tokenSweepMs);
    store.#sweep.unref();
    return store;
  }

  async createPlate(plate: PlateRecord): Promise<PlateRecord> {
    if (this.#plates.has(plate.id)) {
      throw new PlateError("conflict", `A plate with id "${plate.id}" already exists.`);
    }
    this.#plates.set(plate.id, plate);
    await this.#persist();
    return plate;
  }

  getPlate(id: PlateId): Promise<PlateRecord | undefined> {
    return Promise.resolve(this.#plates.get(id));
  }

  setPlateHistory(id: PlateId, history: PlateHistory | null): Promise<PlateRecord | undefined> {
    return this.#updatePlate(id, (plate) => withHistory(plate, history));
  }

  setPlateLimits(id: PlateId, limits: PlateLimits | null): Promise<PlateRecord | undefined> {
    return this.#updatePlate(id, (plate) => withLimits(plate, limits));
  }

  /** Replaces a plate's record with `change` of it, and persists; undefined when there is no such plate. */
  async #updatePlate(id: PlateId, change: (plate: PlateRecord) => PlateRecord): Promise<PlateRecord | undefined> {
    const plate = this.#plates.get(id);
    if (plate === undefined) return undefined;
    const updated = change(plate);
    this.#plates.set(id, updated);
    await this.#persist();
    return updated;
  }

  listPlates(): Promise<PlateRecord[]> {
    return Promise.resolve([...this.#plates.values()]);
  }

  async deletePlate(id: PlateId): Promise<boolean> {
    if (!this.#plates.delete(id)) return false;
    for (const key of [...this.#keys.values()]) {
      if (key.plateId === id) this.#unindexKey(key);
    }
    this.#signingKeys.delete(id);
    this.#webhooks.delete(id);
    this.#webhookQueues.delete(id);
    await this.#persist();
    this.#announce({ plateId: id });
    return true;
  }

  async createKey(key: KeyRecord): Promise<KeyRecord> {
    if (!this.#plates.has(key.plateId)) {
      throw new PlateError("not_found", `There is no plate "${key.plateId}".`);
    }
    if (this.#keys.has(key.id) || this.#keysByHash.has(key.hash)) {
      throw new PlateError("conflict", `A key with id "${key.id}" or that secret already exists.`);
    }
    this.#indexKey(key);
    await this.#persist();
    return key;
  }

  listKeys(plateId: PlateId): Promise<KeyRecord[]> {
    return Promise.resolve([...this.#keys.values()].filter((key) => key.plateId === plateId));
  }

  async createSigningKey(key: SigningKeyRecord): Promise<SigningKeyRecord> {
    if (!this.#plates.has(key.plateId)) throw new PlateError("not_found", `There is no plate "${key.plateId}".`);
    const keys = this.#signingKeysOf(key.plateId);
    if (keys.has(key.id)) throw new PlateError("conflict", `A signing key with id "${key.id}" already exists.`);
    keys.set(key.id, key);
    await this.#persist();
    return key;
  }

  listSigningKeys(plateId: PlateId): Promise<SigningKeyRecord[]> {
    return Promise.resolve([...(this.#signingKeys.get(plateId)?.values() ?? [])]);
  }

  findSigningKey(plateId: PlateId, id: string): Promise<SigningKeyRecord | undefined> {
    return Promise.resolve(this.#signingKeys.get(plateId)?.get(id));
  }

  async deleteSigningKey(plateId: PlateId, id: string): Promise<boolean> {
    if (this.#signingKeys.get(plateId)?.delete(id) !== true) return false;
    await this.#persist();
    this.#announce({ plateId, keyId: signingKeyOwner(id) });
    return true;
  }

  async setWebhook(record: WebhookRecord): Promise<WebhookRecord> {
    if (!this.#plates.has(record.plateId)) throw new PlateError("not_found", `There is no plate "${record.plateId}".`);
    this.#webhooks.set(record.plateId, record);
    await this.#persist();
    return record;
  }

  getWebhook(plateId: PlateId): Promise<WebhookRecord | undefined> {
    return Promise.resolve(this.#webhooks.get(plateId));
  }

  async deleteWebhook(plateId: PlateId): Promise<boolean> {
    if (!this.#webhooks.delete(plateId)) return false;
    await this.#persist();
    return true;
  }

  webhookPush(plateId: PlateId, events: readonly string[], max: number): Promise<void> {
    let queue = this.#webhookQueues.get(plateId);
    if (queue === undefined) this.#webhookQueues.set(plateId, (queue = { entries: [], heldUntil: 0, retryAt: 0, attempts: 0 }));
    for (const json of events) queue.entries.push({ id: String(++this.#webhookSeq), json });
    if (queue.entries.length > max) queue.entries.splice(0, queue.entries.length - max);
    return Promise.resolve();
  }

  webhookWaiting(limit: number): Promise<PlateId[]> {
    return Promise.resolve([...this.#webhookQueues.keys()].slice(0, limit));
  }

  webhookClaim(plateId: PlateId, count: number, leaseMs: number): Promise<WebhookClaim | undefined> {
    const queue = this.#webhookQueues.get(plateId);
    const now = Date.now();
    if (queue === undefined || queue.entries.length === 0 || queue.heldUntil > now || queue.retryAt > now) return Promise.resolve(undefined);
    queue.heldUntil = now + leaseMs;
    const taken = queue.entries.slice(0, count);
    return Promise.resolve({ ids: taken.map((e) => e.id), events: taken.map((e) => e.json), attempts: queue.attempts });
  }

  webhookDone(plateId: PlateId, ids: readonly string[]): Promise<void> {
    const queue = this.#webhookQueues.get(plateId);
    if (queue === undefined) return Promise.resolve();
    const done = new Set(ids);
    queue.entries = queue.entries.filter((e) => !done.has(e.id));
    Object.assign(queue, { heldUntil: 0, retryAt: 0, attempts: 0 });
    if (queue.entries.length === 0) this.#webhookQueues.delete(plateId);
    return Promise.resolve();
  }

  webhookRetry(plateId: PlateId, retryMs: number): Promise<void> {
    const queue = this.#webhookQueues.get(plateId);
    if (queue !== undefined) Object.assign(queue, { heldUntil: 0, retryAt: Date.now() + retryMs, attempts: queue.attempts + 1 });
    return Promise.resolve();
  }

  usageAdd(nodeId: string, adds: readonly UsageAdd[], keepMs: number): Promise<void> {
    for (const add of adds) {
      let hours = this.#usage.get(add.plateId);
      if (hours === undefined) this.#usage.set(add.plateId, (hours = new Map<string, UsageEntry>()));
      let hour = hours.get(add.hour);
      if (hour === undefined) hours.set(add.hour, (hour = { counts: {}, peaks: new Map<string, number>() }));
      for (const [name, n] of Object.entries(add.counts)) hour.counts[name as UsageCounter] = (hour.counts[name as UsageCounter] ?? 0) + n;
      if (add.peakConnections !== undefined) hour.peaks.set(nodeId, add.peakConnections);
    }
    // Hours past `keepMs` go, as Redis expires them.
    const oldest = new Date(Date.now() - keepMs).toISOString().slice(0, 13);
    for (const [plateId, hours] of this.#usage) {
      for (const hour of hours.keys()) if (hour < oldest) hours.delete(hour);
      if (hours.size === 0) this.#usage.delete(plateId);
    }
    return Promise.resolve();
  }

  reportConnections(nodeId: string, counts: ReadonlyMap<PlateId, number>, leaseMs: number): Promise<Map<PlateId, number>> {
    const now = Date.now();
    const answer = new Map<PlateId, number>();
    for (const [plateId, count] of counts) {
      let nodes = this.#connections.get(plateId);
      if (nodes === undefined) {
        nodes = new Map();
        this.#connections.set(plateId, nodes);
      }
      if (count > 0) nodes.set(nodeId, { count, untilMs: now + leaseMs });
      else nodes.delete(nodeId);
      let others = 0;
      for (const [node, report] of nodes) {
        if (report.untilMs < now) nodes.delete(node);
        else if (node !== nodeId) others += report.count;
      }
      if (nodes.size === 0) this.#connections.delete(plateId);
      answer.set(plateId, others);
    }
    return Promise.resolve(answer);
  }

  takeRate(plateId: PlateId, name: string, perS: number, burst: number, count: number): Promise<number> {
    if (perS === 0) return Promise.resolve(0);
    const key = plateId + "\n" + name;
    const now = Date.now();
    const bucket = this.#rates.get(key) ?? { n: burst, at: now, perS, burst };
    const n = Math.min(burst, bucket.n + (Math.max(0, now - bucket.at) * perS) / 1000);
    if (n < count) return Promise.resolve(Math.ceil(((count - n) * 1000) / perS));
    this.#rates.set(key, { n: n - count, at: now, perS, burst });
    // Buckets full again are forgotten (they would start full anyway): the map stays as small as what is busy.
    if (this.#rates.size > RATE_BUCKETS_SWEEP_AT) {
      for (const [k, b] of this.#rates) if (b.n + ((now - b.at) * b.perS) / 1000 >= b.burst) this.#rates.delete(k);
    }
    return Promise.resolve(0);
  }

  usageRead(plateId: PlateId, hours: readonly string[]): Promise<UsageHour[]> {
    const kept = this.#usage.get(plateId);
    return Promise.resolve(
      hours.map((hour) => {
        const entry = kept?.get(hour);
        let peak = 0;
        for (const n of entry?.peaks.values() ?? []) peak += n;
        return { hour, peakConnections: peak, ...Object.fromEntries(USAGE_COUNTERS.map((name) => [name, entry?.counts[name] ?? 0])) } as UsageHour;
      }),
    );
  }

  #signingKeysOf(plateId: PlateId): Map<string, SigningKeyRecord> {
    let keys = this.#signingKeys.get(plateId);
    if (keys === undefined) this.#signingKeys.set(plateId, (keys = new Map<string, SigningKeyRecord>()));
    return keys;
  }

  findKey(plateId: PlateId, hash: string): Promise<KeyRecord | undefined> {
    const key = this.#keysByHash.get(hash);
    return Promise.resolve(key?.plateId === plateId ? key : undefined);
  }

  async deleteKey(plateId: PlateId, keyId: string): Promise<boolean> {
    const key = this.#keys.get(keyId);
    if (key === undefined || key.plateId !== plateId) return false;
    this.#unindexKey(key);
    await this.#persist();
    this.#announce({ plateId, keyId });
    return true;
  }

  putToken(token: TokenRecord, maxBytes = 0): Promise<boolean> {
    const size = JSON.stringify(token).length + TOKEN_COST.overhead;
    const now = Date.now();
    let plate = this.#plateTokens.get(token.plateId);
    if (plate === undefined) {
      plate = { tokens: new Set(), bytes: 0, sweptAt: 0 };
      this.#plateTokens.set(token.plateId, plate);
    }
    if (maxBytes > 0 && plate.bytes + size > maxBytes && now - plate.sweptAt >= TOKEN_BUDGET_SWEEP_MIN_MS) {
      // Over: the plate's tokens forgotten since the last sweep stop counting first.
      plate.sweptAt = now;
      for (const name of [...plate.tokens]) {
        const entry = this.#tokens.get(name);
        if (entry !== undefined && now >= entry.record.expiresAt + this.#options.tokenTombstoneMs) this.#forgetToken(name, entry);
      }
    }
    if (maxBytes > 0 && plate.bytes + size > maxBytes) return Promise.resolve(false);
    this.#tokens.set(token.token, { record: token, uses: 0, size });
    plate.tokens.add(token.token);
    plate.bytes += size;
    return Promise.resolve(true);
  }

  claimToken(plateId: PlateId, token: ClientToken, nowMs: number): Promise<ClaimResult> {
    const entry = this.#tokens.get(token);
    const key = entry === undefined ? undefined : this.#keys.get(entry.record.keyId);
    if (entry === undefined || entry.record.plateId !== plateId || key?.plateId !== plateId) {
      return Promise.resolve({ ok: false, code: "invalid_client_socket" });
    }
    const { record } = entry;
    if (nowMs >= record.expiresAt + this.#options.tokenTombstoneMs) {
      this.#forgetToken(token, entry);
      return Promise.resolve({ ok: false, code: "invalid_client_socket" });
    }
    if (nowMs >= record.expiresAt) return Promise.resolve({ ok: false, code: "expired_client_socket" });
    if (record.maxUses !== 0 && entry.uses >= record.maxUses) {
      return Promise.resolve({ ok: false, code: "exhausted_client_socket" });
    }
    entry.uses += 1;
    return Promise.resolve({ ok: true, token: record, uses: entry.uses });
  }

  onRevoked(listener: (revocation: Revocation) => void): () => void {
    this.#listeners.add(listener);
    return () => void this.#listeners.delete(listener);
  }

  /** Never called: announcements are calls within this process, and cannot be missed. */
  onResync(_listener: () => void): () => void {
    return () => undefined;
  }

  isReady(): boolean {
    return !this.#closed;
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#sweep);
    this.#listeners.clear();
    await this.#writing;
  }

  #indexKey(key: KeyRecord): void {
    this.#keys.set(key.id, key);
    this.#keysByHash.set(key.hash, key);
  }

  #unindexKey(key: KeyRecord): void {
    this.#keys.delete(key.id);
    this.#keysByHash.delete(key.hash);
  }

  #announce(revocation: Revocation): void {
    for (const listener of this.#listeners) listener(revocation);
  }

  #sweepTokens(nowMs: number): void {
    for (const [token, entry] of this.#tokens) {
      if (nowMs >= entry.record.expiresAt + this.#options.tokenTombstoneMs) this.#forgetToken(token, entry);
    }
  }

  /** Deletes a token and its bytes from its plate's token budget. */
  #forgetToken(token: ClientToken, entry: TokenEntry): void {
    if (!this.#tokens.delete(token)) return;
    const plate = this.#plateTokens.get(entry.record.plateId);
    if (plate === undefined) return;
    plate.tokens.delete(token);
    plate.bytes -= entry.size;
    // A plate's entry goes with its last token, unless it was swept just now (its throttle holds).
    if (plate.tokens.size === 0 && Date.now() - plate.sweptAt >= TOKEN_BUDGET_SWEEP_MIN_MS) this.#plateTokens.delete(entry.record.plateId);
  }

  #persist(): Promise<void> {
    const dir = this.#options.dataDir;
    if (dir === undefined) return Promise.resolve();
    const write = this.#writing.then(() =>
      writeAtomically(join(dir, SNAPSHOT_FILE), this.#snapshotText()),
    );
    // A failed write fails its own caller; the next write still runs and writes the whole state.
    this.#writing = write.catch(() => undefined);
    return write;
  }

  #snapshotText(): string {
    const snapshot: Snapshot = {
      version: 1,
      plates: [...this.#plates.values()],
      keys: [...this.#keys.values()],
      signingKeys: [...this.#signingKeys.values()].flatMap((keys) => [...keys.values()]),
      webhooks: [...this.#webhooks.values()],
    };
    return JSON.stringify(snapshot, null, 2) + "\n";
  }
}

async function readSnapshot(path: string): Promise<Snapshot | undefined> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (cause) {
    throw new Error(`${path} is not valid JSON; move it away to start afresh.`, { cause });
  }
  const snapshot = (typeof parsed === "object" && parsed !== null ? parsed : {}) as Partial<Snapshot>;
  if (snapshot.version !== 1 || !Array.isArray(snapshot.plates) || !Array.isArray(snapshot.keys)) {
    throw new Error(`${path} is not a Plate data file (version 1); move it away to start afresh.`);
  }
  return snapshot as Snapshot;
}

async function writeAtomically(path: string, text: string): Promise<void> {
  const temporary = `${path}.${process.pid}.tmp`;
  const file = await open(temporary, "w", 0o600);
  try {
    await file.writeFile(text, "utf8");
    await file.sync();
  } finally {
    await file.close();
  }
  await rename(temporary, path);
}
