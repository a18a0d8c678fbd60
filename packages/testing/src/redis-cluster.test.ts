import { Cluster } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { eventually } from "./eventually.js";
import { keySlot } from "@plate/redis";
import { redisCommand } from "./redis-command.js";
import { startRedisCluster } from "./redis-cluster.js";
import type { ClusterNode, RedisCluster } from "./redis-cluster.js";

/** A master killed with a replica must be replaced within this, in ms (node timeout 1 s; measured ~2.5 s). */
const FAILOVER_WITHIN_MS = 6000;

const clients: Cluster[] = [];
afterEach(() => {
  for (const client of clients.splice(0)) client.disconnect();
});

/** An ioredis cluster client that knows one node only, and finds the rest as clients do. */
function clientOf(cluster: RedisCluster): Cluster {
  const client = new Cluster([cluster.seeds[0]!], { redisOptions: { maxRetriesPerRequest: 1 } });
  // It reports every refused connection while a server is down; the tests assert what it does instead.
  client.on("error", () => undefined);
  clients.push(client);
  return client;
}

describe("a cluster of three masters", () => {
  let cluster: RedisCluster;
  beforeAll(async () => {
    cluster = await startRedisCluster({ masters: 3 });
  });
  afterAll(async () => {
    await cluster.stop();
  });

  it("computes keySlot as CLUSTER KEYSLOT does, hash tags included", async () => {
    const keys = ["foo", "plate:t1:ch", "{user1}.a", "{user1}.b", "a{}b", "{}{x}", "x{a}{b}", "{a", "a}", "é{ü}", ""];
    for (const key of keys) {
      expect(keySlot(key), key).toBe(Number(await redisCommand(cluster.nodes[0]!.port, ["CLUSTER", "KEYSLOT", key])));
    }
    expect(keySlot("foo")).toBe(12182);
    expect(keySlot("{user1}.a")).toBe(keySlot("{user1}.b"));
  });

  it("splits the slots among the masters and stores each key on the master of its slot", async () => {
    const masters = await cluster.masters();
    expect(new Set(masters)).toEqual(new Set(cluster.nodes));
    // One key for every master.
    const keyOf = new Map<ClusterNode, string>();
    for (let i = 0; keyOf.size < masters.length; i++) {
      const owner = await cluster.nodeForSlot(keySlot(`key:${i}`));
      if (!keyOf.has(owner)) keyOf.set(owner, `key:${i}`);
    }

    const client = clientOf(cluster);
    for (const key of keyOf.values()) await client.set(key, `value of ${key}`);

    for (const [owner, key] of keyOf) {
      expect(await client.get(key)).toBe(`value of ${key}`);
      expect(await redisCommand(owner.port, ["GET", key])).toBe(`value of ${key}`);
      for (const other of masters.filter((node) => node !== owner)) {
        await expect(redisCommand(other.port, ["GET", key])).rejects.toThrow(
          `MOVED ${keySlot(key)} 127.0.0.1:${owner.port}`,
        );
      }
    }
  });

  it("moves a slot with its keys while a client keeps reading them, the client following the redirections", async () => {
    const keys = Array.from({ length: 250 }, (_, i) => `{moving}:${i}`);
    const slot = keySlot("{moving}");
    const client = clientOf(cluster);
    for (const key of keys) await client.set(key, key);
    const from = await cluster.nodeForSlot(slot);
    const to = (await cluster.masters()).find((node) => node !== from)!;

    // The client's slot map goes stale: it is sent ASK during the move and MOVED after it.
    let reading = true;
    let reads = 0;
    const wrong: unknown[] = [];
    const reader = (async () => {
      while (reading) {
        const key = keys[reads++ % keys.length]!;
        const value = await client.get(key).catch((err: unknown) => err);
        if (value !== key) wrong.push(value);
      }
    })();
    try {
      await cluster.migrateSlot(slot, from, to);
    } finally {
      reading = false;
      await reader;
    }

    expect(reads).toBeGreaterThan(0);
    expect(wrong).toEqual([]);
    expect(await cluster.nodeForSlot(slot)).toBe(to);
    expect(await redisCommand(to.port, ["CLUSTER", "COUNTKEYSINSLOT", String(slot)])).toBe(String(keys.length));
    expect(await redisCommand(from.port, ["CLUSTER", "COUNTKEYSINSLOT", String(slot)])).toBe("0");
    expect(await client.mget(keys)).toEqual(keys);
  });

  it("sends a PUBLISH to every other node over the bus, counted in CLUSTER INFO", async () => {
    const node = cluster.nodes[0]!;
    const sent = async () => Number((await cluster.clusterInfo(node)).cluster_stats_messages_publish_sent ?? "0");
    const before = await sent();
    await redisCommand(node.port, ["PUBLISH", "news", "hello"]);
    expect(await eventually(async () => (await sent()) === before + cluster.nodes.length - 1)).toBe(true);
  });
});

describe("a cluster of three masters with a replica each", () => {
  let cluster: RedisCluster;
  beforeAll(async () => {
    cluster = await startRedisCluster({ masters: 3, replicasPerMaster: 1 });
  });
  afterAll(async () => {
    await cluster.stop();
  });

  it("starts every replica synced with its master", async () => {
    const masters = await cluster.masters();
    expect(new Set(masters)).toEqual(new Set(cluster.nodes.slice(0, 3)));
    for (const [i, master] of cluster.nodes.slice(0, 3).entries()) {
      expect(await cluster.replicasOf(master)).toEqual([cluster.nodes[3 + i]]);
      expect(await redisCommand(cluster.nodes[3 + i]!.port, ["INFO", "replication"])).toMatch(/master_link_status:up/);
    }
  });

  it("sends a sharded publish only within the shard: one bus message per replica of the channel's master", async () => {
    const owner = await cluster.nodeForSlot(keySlot("news"));
    const info = () => cluster.clusterInfo(owner);
    const before = await info();
    await redisCommand(owner.port, ["SPUBLISH", "news", "hello"]);
    const shardSent = Number(before.cluster_stats_messages_publishshard_sent ?? "0") + 1;
    expect(
      await eventually(async () => (await info()).cluster_stats_messages_publishshard_sent === String(shardSent)),
    ).toBe(true);
    expect((await info()).cluster_stats_messages_publish_sent).toBe(before.cluster_stats_messages_publish_sent);
  });

  it("swaps a master and its replica on a manual failover, keeping the slot's keys", async () => {
    const slot = keySlot("{manual}");
    const master = await cluster.nodeForSlot(slot);
    const [replica] = await cluster.replicasOf(master);
    const client = clientOf(cluster);
    await client.set("{manual}:k", "kept");

    await cluster.failover(replica!);

    expect(await cluster.nodeForSlot(slot)).toBe(replica);
    expect(await cluster.replicasOf(replica!)).toEqual([master]);
    expect(await client.get("{manual}:k")).toBe("kept");
  });

  it("promotes a killed master's replica within seconds, and takes the master back as its replica", async () => {
    const slot = keySlot("{crash}");
    const master = await cluster.nodeForSlot(slot);
    const [replica] = await cluster.replicasOf(master);
    const client = clientOf(cluster);
    await client.set("{crash}:k", "kept");
    await cluster.waitForReplicas(master);

    const killedAt = Date.now();
    await cluster.kill(master);
    await cluster.waitForState("ok");
    expect(Date.now() - killedAt).toBeLessThan(FAILOVER_WITHIN_MS);
    expect(await cluster.nodeForSlot(slot)).toBe(replica);
    expect(await cluster.masters()).not.toContain(master);
    expect(
      await eventually(() =>
        client.get("{crash}:k").then(
          (value) => value === "kept",
          () => false,
        ),
      ),
    ).toBe(true);

    await cluster.restart(master);
    expect(await eventually(async () => (await cluster.replicasOf(replica!)).includes(master), 5000)).toBe(true);
    await cluster.waitForState("ok");
    expect(await cluster.nodeForSlot(slot)).toBe(replica);
  });
});
