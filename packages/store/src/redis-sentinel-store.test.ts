import { randomBytes } from "node:crypto";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { PlateId } from "@plate/protocol";
import type { RedisTarget } from "@plate/redis";
import { startRedisSentinel } from "@plate/testing";
import type { RedisSentinelSetup } from "@plate/testing";
import type { RedisStore } from "./redis-store.js";
import { freshPrefix, readyRedisStore, redisStoreFixture } from "./test-support/redis-stores.js";
import { runStoreContract } from "./store.contract.js";

/** How long a primary, its replica and three sentinels may take to start and see each other. */
const SENTINEL_START_TIMEOUT_MS = 30_000;

let setup: RedisSentinelSetup;
beforeAll(async () => {
  setup = await startRedisSentinel();
}, SENTINEL_START_TIMEOUT_MS);
afterAll(async () => {
  await setup.stop();
});

const target = (): RedisTarget => ({ kind: "sentinel", sentinels: setup.sentinels, masterName: setup.masterName });

function openStore(keyPrefix: string): Promise<RedisStore> {
  return readyRedisStore(target(), keyPrefix);
}

runStoreContract("redis sentinel", redisStoreFixture(target));

describe("redis store through Sentinel", () => {
  const stores: RedisStore[] = [];
  afterEach(async () => {
    await Promise.all(stores.splice(0).map((store) => store.close()));
  });

  it("keeps its plates across a failover, writes to the new primary, and tells its resync listeners", async () => {
    const store = await openStore(freshPrefix());
    stores.push(store);
    let resyncs = 0;
    store.onResync(() => (resyncs += 1));
    const plate = { id: `p-${randomBytes(4).toString("hex")}` as PlateId, name: "kept", createdAt: new Date().toISOString() };
    await store.createPlate(plate);
    await setup.failover();
    const next = { ...plate, id: `p-${randomBytes(4).toString("hex")}` as PlateId };
    const deadline = Date.now() + 10_000;
    for (;;) {
      const outcome = await store.createPlate(next).catch((e: unknown) => e);
      if (!(outcome instanceof Error)) break;
      expect((outcome as { code?: string }).code).toBe("broker_unavailable");
      expect(Date.now()).toBeLessThan(deadline);
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(await store.getPlate(plate.id)).toEqual(plate);
    expect((await store.listPlates()).map((p) => p.id).sort()).toEqual([plate.id, next.id].sort());
    const deadlineResync = Date.now() + 5000;
    while (resyncs === 0 && Date.now() < deadlineResync) await new Promise((r) => setTimeout(r, 20));
    expect(resyncs).toBeGreaterThan(0);
  }, 30_000);
});
