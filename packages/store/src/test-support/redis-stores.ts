import { randomBytes } from "node:crypto";
import type { RedisTarget } from "@plate/redis";
import { RedisStore } from "../redis-store.js";
import type { RedisStoreOptions } from "../redis-store.js";
import type { StoreFixture } from "../store.contract.js";
import type { Store } from "../store.js";

/** How long an expired token still claims as expired in these tests, in ms. */
export const TOKEN_TOMBSTONE_MS = 1000;
/** Short so the outage tests stay quick, and still far above a local Redis's answer time. */
export const COMMAND_TIMEOUT_MS = 500;
/** Longest wait between reconnect attempts (the edge's `REDIS_RECONNECT_MAX_MS`). */
export const RECONNECT_MAX_MS = 500;
/** How long a store may take to be ready once open. */
const READY_WITHIN_MS = 5000;

/** A prefix of its own for each fixture and test, so nothing one leaves behind is seen by another. */
export function freshPrefix(): string {
  return `test-${randomBytes(6).toString("hex")}:`;
}

/** A store on `target` with the tests' settings (probes off unless asked), ready or not. */
export function openRedisStore(target: RedisTarget, keyPrefix: string, overrides: Partial<RedisStoreOptions> = {}): Promise<RedisStore> {
  return RedisStore.open({
    target,
    keyPrefix,
    tokenTombstoneMs: TOKEN_TOMBSTONE_MS,
    commandTimeoutMs: COMMAND_TIMEOUT_MS,
    reconnectMaxMs: RECONNECT_MAX_MS,
    // Long: only the tests of the probe want it to fire.
    probeIntervalMs: 60_000,
    probeTimeoutMs: 1000,
    clusterRefreshMs: 1000,
    ...overrides,
  });
}

/** As `openRedisStore`, once the store is ready (its subscriber subscribed), or after 5 s. */
export async function readyRedisStore(target: RedisTarget, keyPrefix: string): Promise<RedisStore> {
  const store = await openRedisStore(target, keyPrefix);
  const deadline = Date.now() + READY_WITHIN_MS;
  while (!store.isReady() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  return store;
}

/** The contract's fixture on `target()`: every node() is a new RedisStore, as another edge node would be. */
export function redisStoreFixture(target: () => RedisTarget): () => Promise<StoreFixture> {
  return () => {
    const keyPrefix = freshPrefix();
    const stores: RedisStore[] = [];
    return Promise.resolve({
      async node(): Promise<Store> {
        const store = await readyRedisStore(target(), keyPrefix);
        stores.push(store);
        return store;
      },
      async close(): Promise<void> {
        await Promise.all(stores.map((store) => store.close()));
      },
      tokenTombstoneMs: TOKEN_TOMBSTONE_MS,
    });
  };
}
