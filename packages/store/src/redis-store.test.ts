import { createHash, randomBytes } from "node:crypto";
import { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { PlateError } from "@plate/protocol";
import type { ChannelName, ClientToken, PlateId } from "@plate/protocol";
import { freePort, redisCommand, startRedis, startRedisPair, startTcpProxy, whileOutOfMemory } from "@plate/testing";
import type { RedisPair, RedisServer, TcpProxy } from "@plate/testing";
import type { RedisStore, RedisStoreOptions } from "./redis-store.js";
import { runStoreContract } from "./store.contract.js";
import { COMMAND_TIMEOUT_MS, TOKEN_TOMBSTONE_MS, freshPrefix, openRedisStore, redisStoreFixture } from "./test-support/redis-stores.js";
import type { ClaimResult, KeyRecord, PlateRecord, Revocation, Store, TokenRecord } from "./store.js";

/** How long a node may take to be ready again after Redis restarts: the reconnect cap, and slack. */
const BACK_WITHIN_MS = 3_000;
/** How long the spawned redis-server may take to start (startRedis waits up to 10 s itself). */
const START_REDIS_TIMEOUT_MS = 20_000;
/**
 * startRedis() uses REDIS_URL when it is set: a server the tests cannot kill or restart, and must
 * not pause (others may share it). The fault cases skip then.
 */
const EXTERNAL_REDIS = (process.env.REDIS_URL ?? "") !== "";

let server: RedisServer | undefined;

beforeAll(async () => {
  server = await startRedis();
}, START_REDIS_TIMEOUT_MS);

afterAll(async () => {
  await server?.stop();
});

function redisServer(): RedisServer {
  if (server === undefined) throw new Error("redis-server did not start");
  return server;
}

function openStore(keyPrefix: string, url = redisServer().url, overrides: Partial<RedisStoreOptions> = {}): Promise<RedisStore> {
  return openRedisStore({ kind: "standalone", url }, keyPrefix, overrides);
}

runStoreContract(
  "redis",
  redisStoreFixture(() => ({ kind: "standalone", url: redisServer().url })),
);

function uid(): string {
  return randomBytes(6).toString("hex");
}

function plateRecord(): PlateRecord {
  return { id: `p-${uid()}` as PlateId, name: "Redis plate", createdAt: new Date().toISOString() };
}

function keyRecord(plateId: PlateId): KeyRecord {
  return {
    id: `k-${uid()}`,
    plateId,
    name: "redis key",
    scopes: ["publish", "subscribe", "client"],
    channels: null,
    hash: createHash("sha256").update(randomBytes(24)).digest("hex"),
    createdAt: new Date().toISOString(),
  };
}

function tokenRecord(key: KeyRecord, options: { maxUses: number; expiresAt: number }): TokenRecord {
  return {
    token: randomBytes(24).toString("base64url") as ClientToken,
    plateId: key.plateId,
    channel: "room.lobby" as ChannelName,
    pattern: false,
    keyId: key.id,
    maxDurationMs: 0,
    ...options,
  };
}

function outcome(result: ClaimResult): string {
  return result.ok ? "ok" : result.code;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function sleepUntil(epochMs: number): Promise<void> {
  while (Date.now() < epochMs) await sleep(Math.max(1, Math.min(50, epochMs - Date.now())));
}

/** Polls `condition` until it holds; false if it did not within `timeoutMs`. */
async function eventually(condition: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() >= deadline) return false;
    await sleep(20);
  }
  return true;
}

/** The code a call rejects with, and how long it took to reject. */
async function failure(call: () => Promise<unknown>): Promise<{ code: string | undefined; ms: number }> {
  const started = Date.now();
  try {
    await call();
  } catch (err) {
    return { code: err instanceof PlateError ? err.code : undefined, ms: Date.now() - started };
  }
  return expect.fail("expected the call to reject");
}

/** Every key name matching `match` (a Redis glob), by SCAN. */
async function scanKeys(client: Redis, match: string): Promise<string[]> {
  const found: string[] = [];
  let cursor = "0";
  do {
    const [next, keys] = await client.scan(cursor, "MATCH", match, "COUNT", 1000);
    found.push(...keys);
    cursor = next;
  } while (cursor !== "0");
  return found.sort();
}

describe("redis store", () => {
  const stores: RedisStore[] = [];
  const clients: Redis[] = [];

  afterEach(async () => {
    await Promise.all(stores.splice(0).map((store) => store.close()));
    await Promise.all(clients.splice(0).map((client) => client.quit()));
  });

  async function node(keyPrefix: string): Promise<RedisStore> {
    const store = await openStore(keyPrefix);
    stores.push(store);
    return store;
  }

  /** A plain connection to look at Redis the way an operator would. */
  function inspector(): Redis {
    const client = new Redis(redisServer().url);
    clients.push(client);
    return client;
  }

  async function plateWithKey(store: Store): Promise<KeyRecord> {
    const plate = plateRecord();
    await store.createPlate(plate);
    const key = keyRecord(plate.id);
    await store.createKey(key);
    return key;
  }

  it("spends exactly 3 uses of a max_uses=3 token under 60 concurrent claims from 3 nodes", async () => {
    const prefix = freshPrefix();
    const nodes = [await node(prefix), await node(prefix), await node(prefix)];
    const key = await plateWithKey(nodes[0]!);
    const token = tokenRecord(key, { maxUses: 3, expiresAt: Date.now() + 60_000 });
    await nodes[1]!.putToken(token);
    const results = await Promise.all(
      Array.from({ length: 60 }, (_, i) => nodes[i % 3]!.claimToken(key.plateId, token.token, Date.now())),
    );
    const uses = results.flatMap((result) => (result.ok ? [result.uses] : []));
    expect(uses.sort((x, y) => x - y)).toEqual([1, 2, 3]);
    expect(results.filter((result) => !result.ok).map(outcome)).toEqual(
      Array.from({ length: 57 }, () => "exhausted_client_socket"),
    );
  });

  it("keeps answering expired (not unknown) after expiry until the tombstone passes, and the Redis key then is gone (PTTL)", async () => {
    const prefix = freshPrefix();
    const store = await node(prefix);
    const redis = inspector();
    const key = await plateWithKey(store);
    const token = tokenRecord(key, { maxUses: 0, expiresAt: Date.now() + 200 });
    await store.putToken(token);
    const name = `${prefix}token:{${key.plateId}}:${token.token}`;
    const ttl = await redis.pttl(name);
    expect(ttl).toBeGreaterThan(TOKEN_TOMBSTONE_MS);
    expect(ttl).toBeLessThanOrEqual(200 + TOKEN_TOMBSTONE_MS);

    await sleepUntil(token.expiresAt);
    expect(outcome(await store.claimToken(key.plateId, token.token, Date.now()))).toBe("expired_client_socket");
    await sleepUntil(token.expiresAt + TOKEN_TOMBSTONE_MS / 2);
    expect(outcome(await store.claimToken(key.plateId, token.token, Date.now()))).toBe("expired_client_socket");
    expect(await redis.pttl(name)).toBeGreaterThan(0);

    await sleepUntil(token.expiresAt + TOKEN_TOMBSTONE_MS + 50);
    expect(await redis.pttl(name)).toBe(-2);
    expect(outcome(await store.claimToken(key.plateId, token.token, Date.now()))).toBe("invalid_client_socket");
  });

  it("moves plates and keys written in the layout before Redis Cluster support to today's when it connects", async () => {
    const prefix = freshPrefix();
    const redis = inspector();
    const plate = plateRecord();
    const key = keyRecord(plate.id);
    // As a node of the previous version left them.
    await redis.hset(`${prefix}plates`, plate.id, JSON.stringify(plate));
    await redis.set(`${prefix}key:${key.hash}`, JSON.stringify(key));
    await redis.hset(`${prefix}plate-keys:${plate.id}`, key.id, key.hash);
    const store = await node(prefix);
    expect(await store.getPlate(plate.id)).toEqual(plate);
    expect(await store.listPlates()).toEqual([plate]);
    expect(await store.findKey(plate.id, key.hash)).toEqual(key);
    expect(await store.listKeys(plate.id)).toEqual([key]);
    const token = tokenRecord(key, { maxUses: 1, expiresAt: Date.now() + 60_000 });
    await store.putToken(token);
    expect(outcome(await store.claimToken(plate.id, token.token, Date.now()))).toBe("ok");
    expect(await scanKeys(redis, `${prefix}plates`)).toEqual([]);
    expect(await scanKeys(redis, `${prefix}key:${key.hash}`)).toEqual([]);
    // A second node connecting finds nothing left to move, and the secret is still taken.
    await node(prefix);
    await expect(store.createKey({ ...keyRecord(plate.id), hash: key.hash })).rejects.toMatchObject({ code: "conflict" });
  });

  it("puts every key under the configured prefix, and its control channel too", async () => {
    const prefix = freshPrefix();
    const store = await node(prefix);
    const redis = inspector();
    const plate = plateRecord();
    await store.createPlate(plate);
    const kept = keyRecord(plate.id);
    const revoked = keyRecord(plate.id);
    await store.createKey(kept);
    await store.createKey(revoked);
    const token = tokenRecord(kept, { maxUses: 2, expiresAt: Date.now() + 60_000 });
    await store.putToken(token);
    expect(outcome(await store.claimToken(plate.id, token.token, Date.now()))).toBe("ok");
    await store.deleteKey(plate.id, revoked.id);

    expect(await scanKeys(redis, `${prefix}*`)).toEqual(
      [
        `${prefix}plate-ids`,
        `${prefix}plate:{${plate.id}}`,
        `${prefix}key:{${plate.id}}:${kept.hash}`,
        `${prefix}secret:${kept.hash}`,
        `${prefix}plate-keys:{${plate.id}}`,
        `${prefix}token:{${plate.id}}:${token.token}`,
        `${prefix}token-sizes:{${plate.id}}`,
        `${prefix}token-bytes:{${plate.id}}`,
      ].sort(),
    );
    const mentions = (await scanKeys(redis, "*")).filter((name) =>
      [plate.id, kept.hash, revoked.hash, token.token].some((id) => name.includes(id)),
    );
    expect(mentions.every((name) => name.startsWith(prefix))).toBe(true);
    const channels = (await redis.pubsub("CHANNELS", `${prefix}*`)) as string[];
    expect(channels.sort()).toEqual([`${prefix}ctl`, expect.stringMatching(new RegExp(`^${prefix}ctl\\.probe\\.[0-9a-f]+$`))]);
  });

  it("ignores malformed revocations on the control channel, and still hears good ones", async () => {
    const prefix = freshPrefix();
    const store = await node(prefix);
    const redis = inspector();
    const heard: Revocation[] = [];
    store.onRevoked((revocation) => void heard.push(revocation));
    const malformed = [
      "not json",
      "null",
      "[]",
      '{"plateId":5}',
      '{"plateId":"no spaces"}',
      '{"plateId":"p","keyId":7}',
    ];
    for (const payload of malformed) await redis.publish(`${prefix}ctl`, payload);
    await redis.publish(`${prefix}ctl`, '{"plateId":"acme","keyId":"k1"}');
    // Redis delivers one publisher's messages in order: once the good one is heard, the others were too.
    expect(await eventually(() => heard.length > 0, 1000)).toBe(true);
    expect(heard).toEqual([{ plateId: "acme", keyId: "k1" }]);
  });

  it("keeps a plate with webhook events listed while other nodes poll it held or not yet due: a node killed mid-poll cannot strand its queue", async () => {
    const prefix = freshPrefix();
    const a = await node(prefix);
    const b = await node(prefix);
    const plate = `q-${uid()}` as PlateId;
    await a.webhookPush(plate, ['{"n":1}'], 100);
    // Every command Redis runs, as an operator's MONITOR shows them.
    const monitor = await inspector().monitor();
    const commands: string[] = [];
    monitor.on("monitor", (_time: string, args: string[]) => commands.push(args.join(" ")));
    const held = await a.webhookClaim(plate, 10, 5_000);
    expect(held?.events).toEqual(['{"n":1}']);
    expect(await b.webhookClaim(plate, 10, 5_000)).toBeUndefined();
    await a.webhookRetry(plate, 60_000);
    expect(await b.webhookClaim(plate, 10, 5_000)).toBeUndefined();
    await inspector().echo("end of polls");
    expect(await eventually(() => commands.some((c) => c === "echo end of polls"), 2000)).toBe(true);
    monitor.disconnect();
    // Never off the list: a node that died between taking it off and putting it back would leave
    // these events unsent until the plate's next one.
    expect(commands.filter((c) => c.toLowerCase().startsWith("srem "))).toEqual([]);
    expect(await b.webhookWaiting(1000)).toContain(plate);
  });

  it("is ready once open, not after close, and closes twice without complaint", async () => {
    const store = await openStore(freshPrefix());
    expect(store.isReady()).toBe(true);
    await store.close();
    expect(store.isReady()).toBe(false);
    await store.close();
  });

  it("opens while nothing listens at the Redis URL: not ready, and its calls answer broker_unavailable at once", async () => {
    const url = `redis://127.0.0.1:${await freePort()}`;
    const store = await openStore(freshPrefix(), url);
    try {
      expect(store.isReady()).toBe(false);
      const { code, ms } = await failure(() => store.getPlate("p" as PlateId));
      expect(code).toBe("broker_unavailable");
      expect(ms).toBeLessThan(COMMAND_TIMEOUT_MS);
    } finally {
      await store.close();
    }
  });

  it.skipIf(EXTERNAL_REDIS)(
    "opened while Redis is down, becomes ready when Redis appears and then hears revocations",
    async () => {
      const prefix = freshPrefix();
      await redisServer().kill();
      let store: RedisStore;
      try {
        store = await openStore(prefix);
        expect(store.isReady()).toBe(false);
      } finally {
        await redisServer().restart();
      }
      try {
        expect(await eventually(() => store.isReady(), BACK_WITHIN_MS)).toBe(true);
        const heard: Revocation[] = [];
        store.onRevoked((r) => heard.push(r));
        const other = await openStore(prefix);
        try {
          const key = await plateWithKey(other);
          await other.deleteKey(key.plateId, key.id);
          expect(await eventually(() => heard.length === 1, 1000)).toBe(true);
          expect(heard).toEqual([{ plateId: key.plateId, keyId: key.id }]);
        } finally {
          await other.close();
        }
      } finally {
        await store.close();
      }
    },
  );

  it.skipIf(EXTERNAL_REDIS)(
    "answers broker_unavailable, quickly, while Redis is down, and works again after it restarts",
    async () => {
      const store = await node(freshPrefix());
      const key = await plateWithKey(store);
      const token = tokenRecord(key, { maxUses: 0, expiresAt: Date.now() + 60_000 });
      await store.putToken(token);
      await redisServer().kill();
      try {
        const calls: (() => Promise<unknown>)[] = [
          () => store.createPlate(plateRecord()),
          () => store.getPlate(key.plateId),
          () => store.listPlates(),
          () => store.createKey(keyRecord(key.plateId)),
          () => store.listKeys(key.plateId),
          () => store.findKey(key.plateId, key.hash),
          () => store.putToken(tokenRecord(key, { maxUses: 1, expiresAt: Date.now() + 60_000 })),
          () => store.claimToken(key.plateId, token.token, Date.now()),
          () => store.deleteKey(key.plateId, key.id),
          () => store.deletePlate(key.plateId),
        ];
        for (const call of calls) {
          const { code, ms } = await failure(call);
          expect(code).toBe("broker_unavailable");
          // Refused at once, not after waiting out a command timeout.
          expect(ms).toBeLessThan(COMMAND_TIMEOUT_MS);
        }
        // A dead socket stops taking writes a moment before its close event marks it down.
        expect(await eventually(() => !store.isReady(), 1000)).toBe(true);
      } finally {
        // Restarted even when an assertion above failed, so the tests after this one have a Redis.
        await redisServer().restart();
      }
      expect(await eventually(() => store.isReady(), BACK_WITHIN_MS)).toBe(true);
      // The restarted Redis is empty (its script cache too): everything works from scratch.
      const again = await plateWithKey(store);
      const fresh = tokenRecord(again, { maxUses: 1, expiresAt: Date.now() + 60_000 });
      await store.putToken(fresh);
      expect(outcome(await store.claimToken(again.plateId, fresh.token, Date.now()))).toBe("ok");
      expect(await store.findKey(again.plateId, again.hash)).toEqual(again);
    },
    15_000,
  );

  it.skipIf(EXTERNAL_REDIS)(
    "hears revocations from another node again after Redis restarts",
    async () => {
      const prefix = freshPrefix();
      const a = await node(prefix);
      const b = await node(prefix);
      await redisServer().kill();
      await redisServer().restart();
      expect(await eventually(() => a.isReady() && b.isReady(), BACK_WITHIN_MS)).toBe(true);

      const key = await plateWithKey(a);
      const heard: Revocation[] = [];
      b.onRevoked((revocation) => void heard.push(revocation));
      expect(await a.deleteKey(key.plateId, key.id)).toBe(true);
      expect(await eventually(() => heard.length > 0, 1000)).toBe(true);
      expect(heard).toEqual([{ plateId: key.plateId, keyId: key.id }]);
    },
    15_000,
  );

  it.skipIf(EXTERNAL_REDIS)(
    "answers broker_unavailable after the command timeout while Redis does not answer",
    async () => {
      const store = await node(freshPrefix());
      const key = await plateWithKey(store);
      // CLIENT PAUSE ALL holds every client's commands, CLIENT UNPAUSE included: the pause is waited out.
      const pauseMs = COMMAND_TIMEOUT_MS * 2;
      await inspector().call("CLIENT", "PAUSE", String(pauseMs), "ALL");
      const pausedUntil = Date.now() + pauseMs;
      const { code, ms } = await failure(() => store.findKey(key.plateId, key.hash));
      expect(code).toBe("broker_unavailable");
      expect(ms).toBeGreaterThanOrEqual(COMMAND_TIMEOUT_MS - 10);
      expect(ms).toBeLessThan(pauseMs);
      await sleepUntil(pausedUntil + 50);
      expect(await store.findKey(key.plateId, key.hash)).toEqual(key);
    },
  );

  describe("when its link to Redis fails", () => {
    let proxy: TcpProxy | undefined;
    afterEach(async () => {
      await proxy?.close();
      proxy = undefined;
    });

    async function storeThroughProxy(prefix: string, overrides: Partial<RedisStoreOptions> = {}): Promise<RedisStore> {
      proxy = await startTcpProxy(redisServer().port);
      const store = await openStore(prefix, `redis://127.0.0.1:${proxy.port}`, overrides);
      stores.push(store);
      return store;
    }

    it.skipIf(EXTERNAL_REDIS)("tells its resync listeners once its control channel is back after a cut, and hears revocations again", async () => {
      const prefix = freshPrefix();
      const store = await storeThroughProxy(prefix);
      const other = await node(prefix);
      let resyncs = 0;
      store.onResync(() => (resyncs += 1));
      const heard: Revocation[] = [];
      store.onRevoked((revocation) => void heard.push(revocation));

      proxy!.cut();
      expect(await eventually(() => !store.isReady(), 1000)).toBe(true);
      // Revoked while the link is cut: this store cannot hear it, and must say so when back.
      const missed = await plateWithKey(other);
      await other.deleteKey(missed.plateId, missed.id);
      expect(resyncs).toBe(0);
      proxy!.restore();
      expect(await eventually(() => store.isReady() && resyncs === 1, BACK_WITHIN_MS)).toBe(true);
      expect(heard).toEqual([]);

      const key = await plateWithKey(other);
      await other.deleteKey(key.plateId, key.id);
      expect(await eventually(() => heard.length === 1, 1000)).toBe(true);
      expect(heard).toEqual([{ plateId: key.plateId, keyId: key.id }]);
    });

    it.skipIf(EXTERNAL_REDIS)(
      "notices a control-channel subscriber that is up but deaf, reports not ready, reconnects it and tells its resync listeners",
      async () => {
        const prefix = freshPrefix();
        const warnings: string[] = [];
        const store = await storeThroughProxy(prefix, { probeIntervalMs: 100, probeTimeoutMs: 300, warn: (message) => warnings.push(message) });
        const other = await node(prefix);
        let resyncs = 0;
        store.onResync(() => (resyncs += 1));
        const heard: Revocation[] = [];
        store.onRevoked((revocation) => void heard.push(revocation));

        proxy!.deafenSubscribers();
        const missed = await plateWithKey(other);
        await other.deleteKey(missed.plateId, missed.id);
        expect(await eventually(() => !store.isReady(), 2000)).toBe(true);
        expect(warnings.some((w) => w.includes("deaf"))).toBe(true);
        expect(await eventually(() => store.isReady() && resyncs === 1, BACK_WITHIN_MS)).toBe(true);
        expect(heard).toEqual([]);

        const key = await plateWithKey(other);
        await other.deleteKey(key.plateId, key.id);
        expect(await eventually(() => heard.length === 1, 1000)).toBe(true);
        expect(heard).toEqual([{ plateId: key.plateId, keyId: key.id }]);
      },
    );
  });

  describe("when Redis refuses commands", () => {
    /** The PlateError a call rejects with. */
    async function refusal(call: () => Promise<unknown>): Promise<PlateError> {
      try {
        await call();
      } catch (err) {
        if (err instanceof PlateError) return err;
        throw err;
      }
      return expect.fail("expected the call to reject");
    }

    it.skipIf(EXTERNAL_REDIS)(
      "answers broker_unavailable naming OOM while Redis is out of memory, warns naming it, and works again once memory is freed",
      async () => {
        const warnings: string[] = [];
        const store = await openStore(freshPrefix(), redisServer().url, { warn: (message, fields) => warnings.push(`${message} ${JSON.stringify(fields)}`) });
        stores.push(store);
        const error = await whileOutOfMemory(redisServer().port, () => refusal(() => store.createPlate(plateRecord())));
        expect(error.code).toBe("broker_unavailable");
        expect(error.retryAfterS).toBeGreaterThan(0);
        expect(error.message).toMatch(/OOM/);
        expect(error.message).not.toMatch(/unreachable/);
        expect(warnings.some((w) => w.includes("OOM"))).toBe(true);
        await plateWithKey(store);
      },
    );

    it.skipIf(EXTERNAL_REDIS)(
      "writes again, without a restart, after a failover demoted its Redis to a replica (READONLY)",
      async () => {
        const pair: RedisPair = await startRedisPair();
        const proxy = await startTcpProxy(pair.a.port);
        try {
          const prefix = freshPrefix();
          const store = await openStore(prefix, `redis://127.0.0.1:${proxy.port}`);
          stores.push(store);
          const before = await plateWithKey(store);

          // The address the store uses now names the new primary, but its connections stay with the old one.
          await pair.failover();
          proxy.retarget(pair.b.port);
          const first = await refusal(() => store.createPlate(plateRecord()));
          expect(first.code).toBe("broker_unavailable");
          expect(first.message).toMatch(/READONLY/);
          let wrote = false;
          const deadline = Date.now() + BACK_WITHIN_MS;
          while (!wrote && Date.now() < deadline) {
            wrote = await store.createPlate(plateRecord()).then(
              () => true,
              () => false,
            );
            if (!wrote) await sleep(50);
          }
          expect(wrote).toBe(true);
          expect(await store.findKey(before.plateId, before.hash)).toEqual(before);
          expect(await redisCommand(pair.b.port, ["SCARD", `${prefix}plate-ids`])).not.toBe("0");
        } finally {
          await proxy.close();
          await pair.stop();
        }
      },
      20_000,
    );
  });
});
