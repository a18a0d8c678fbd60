import { createHash, randomBytes } from "node:crypto";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { ChannelName, ClientToken, PlateId } from "@plate/protocol";
import { keySlot, parseHostPorts } from "@plate/redis";
import type { RedisTarget } from "@plate/redis";
import { startRedisCluster } from "@plate/testing";
import type { RedisCluster } from "@plate/testing";
import type { RedisStore } from "./redis-store.js";
import { freshPrefix, readyRedisStore, redisStoreFixture } from "./test-support/redis-stores.js";
import { runStoreContract } from "./store.contract.js";
import type { KeyRecord, PlateRecord } from "./store.js";

/** How long a three-master cluster may take to form. */
const CLUSTER_START_TIMEOUT_MS = 30_000;

let cluster: RedisCluster;
beforeAll(async () => {
  cluster = await startRedisCluster({ masters: 3 });
}, CLUSTER_START_TIMEOUT_MS);
afterAll(async () => {
  await cluster.stop();
});

const target = (): RedisTarget => ({ kind: "cluster", nodes: parseHostPorts(cluster.seeds.join(",")) });

function openStore(keyPrefix: string): Promise<RedisStore> {
  return readyRedisStore(target(), keyPrefix);
}

runStoreContract("redis cluster", redisStoreFixture(target));

describe("redis store on Redis Cluster", () => {
  const stores: RedisStore[] = [];
  afterEach(async () => {
    await Promise.all(stores.splice(0).map((store) => store.close()));
  });

  async function node(prefix: string): Promise<RedisStore> {
    const store = await openStore(prefix);
    stores.push(store);
    return store;
  }

  /** Plate ids whose slots are on every master of the cluster, and then some. */
  async function platesAcrossMasters(count: number): Promise<PlateId[]> {
    const plates: PlateId[] = [];
    const owners = new Set<string>();
    while (plates.length < count || owners.size < 3) {
      const id = `p-${randomBytes(4).toString("hex")}` as PlateId;
      owners.add((await cluster.nodeForSlot(keySlot(id))).id);
      plates.push(id);
    }
    return plates;
  }

  it("creates, lists, keys and deletes plates whose records live on different masters, from three nodes", async () => {
    const prefix = freshPrefix();
    const nodes = [await node(prefix), await node(prefix), await node(prefix)];
    const plates = await platesAcrossMasters(9);
    await Promise.all(
      plates.map((id, i) => nodes[i % 3]!.createPlate({ id, name: `plate ${i}`, createdAt: new Date().toISOString() } satisfies PlateRecord)),
    );
    const keys: KeyRecord[] = plates.map((plateId, i) => ({
      id: `k-${i}`,
      plateId,
      name: "key",
      scopes: ["publish", "subscribe", "client"],
      channels: null,
      hash: createHash("sha256").update(randomBytes(24)).digest("hex"),
      createdAt: new Date().toISOString(),
    }));
    await Promise.all(keys.map((key, i) => nodes[(i + 1) % 3]!.createKey(key)));
    expect((await nodes[2]!.listPlates()).map((p) => p.id).sort()).toEqual([...plates].sort());
    for (const key of keys) expect(await nodes[0]!.findKey(key.plateId, key.hash)).toEqual(key);
    // One secret, one key: a second key with the same secret in another plate is refused.
    await expect(nodes[1]!.createKey({ ...keys[0]!, id: "k-again", plateId: plates[1]! })).rejects.toMatchObject({ code: "conflict" });
    expect(await nodes[1]!.deletePlate(plates[0]!)).toBe(true);
    expect(await nodes[2]!.findKey(plates[0]!, keys[0]!.hash)).toBeUndefined();
    expect((await nodes[0]!.listPlates()).map((p) => p.id)).not.toContain(plates[0]);
    // The deleted plate's secret is free again.
    await nodes[0]!.createKey({ ...keys[0]!, id: "k-reused", plateId: plates[2]! });
    expect((await nodes[1]!.findKey(plates[2]!, keys[0]!.hash))?.plateId).toBe(plates[2]);
  });

  it("spends exactly 3 uses of a max_uses=3 token under 60 concurrent claims from 3 nodes", async () => {
    const prefix = freshPrefix();
    const nodes = [await node(prefix), await node(prefix), await node(prefix)];
    const [plateId] = await platesAcrossMasters(1);
    await nodes[0]!.createPlate({ id: plateId!, name: "p", createdAt: new Date().toISOString() });
    const key: KeyRecord = {
      id: "k",
      plateId: plateId!,
      name: "key",
      scopes: ["client"],
      channels: null,
      hash: createHash("sha256").update(randomBytes(24)).digest("hex"),
      createdAt: new Date().toISOString(),
    };
    await nodes[1]!.createKey(key);
    const token = randomBytes(24).toString("base64url") as ClientToken;
    await nodes[2]!.putToken({
      token,
      plateId: plateId!,
      channel: "room" as ChannelName,
      pattern: false,
      keyId: key.id,
      maxDurationMs: 0,
      maxUses: 3,
      expiresAt: Date.now() + 60_000,
    });
    const results = await Promise.all(Array.from({ length: 60 }, (_, i) => nodes[i % 3]!.claimToken(plateId!, token, Date.now())));
    expect(results.filter((r) => r.ok).length).toBe(3);
    expect(results.filter((r) => !r.ok).every((r) => !r.ok && r.code === "exhausted_client_socket")).toBe(true);
  });
});
