import type { KeyRecord, Revocation } from "@plate/store";

/** Most keys one node keeps cached; past it the oldest entry goes first. */
const KEY_CACHE_MAX_ENTRIES = 10_000;

/**
 * Keys found by their secret, kept for `ttlMs` so an authenticated request costs no store round
 * trip (on Redis: one GET saved per publish and per subscribe) and no SHA-256 (2-3% of a publish
 * in a CPU profile of W3). The secrets stay in this process' memory only, as they do while each
 * request is handled. Only keys that exist
 * are cached, so a key just created works at once everywhere. A revocation announced by the store
 * drops the key (or the plate's keys) at once; `ttlMs` bounds how long a node that missed the
 * announcement (its Redis subscriber was down) still accepts a revoked key. `ttlMs` 0 turns it off.
 */
export class KeyCache {
  readonly #entries = new Map<string, { readonly key: KeyRecord; readonly untilMs: number }>();

  constructor(private readonly ttlMs: number) {}

  get(secret: string, nowMs: number): KeyRecord | undefined {
    const entry = this.#entries.get(secret);
    if (entry === undefined) return undefined;
    if (entry.untilMs > nowMs) return entry.key;
    this.#entries.delete(secret);
    return undefined;
  }

  put(secret: string, key: KeyRecord, nowMs: number): void {
    if (this.ttlMs === 0) return;
    if (this.#entries.size >= KEY_CACHE_MAX_ENTRIES) {
      const oldest = this.#entries.keys().next();
      if (oldest.done !== true) this.#entries.delete(oldest.value);
    }
    this.#entries.set(secret, { key, untilMs: nowMs + this.ttlMs });
  }

  /** Drops every entry: after revocations may have been missed, none can be trusted. */
  clear(): void {
    this.#entries.clear();
  }

  /** Drops what a revocation names: one key, or every key of a deleted plate. */
  forget(revocation: Revocation): void {
    for (const [secret, { key }] of this.#entries) {
      if (key.plateId === revocation.plateId && (revocation.keyId === undefined || key.id === revocation.keyId)) {
        this.#entries.delete(secret);
      }
    }
  }
}
