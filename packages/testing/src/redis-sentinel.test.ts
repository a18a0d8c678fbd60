import { Redis } from "ioredis";
import type { RedisOptions } from "ioredis";
import { afterEach, describe, expect, it } from "vitest";
import { eventually } from "./eventually.js";
import { redisCommand, redisReply } from "./redis-command.js";
import { startRedisSentinel } from "./redis-sentinel.js";
import type { RedisSentinelSetup } from "./redis-sentinel.js";

/** A crashed primary must be replaced within this, in ms (down after 1 s; measured ~2.5 s). */
const FAILOVER_WITHIN_MS = 8000;

const setups: RedisSentinelSetup[] = [];
const clients: Redis[] = [];
afterEach(async () => {
  for (const client of clients.splice(0)) client.disconnect();
  for (const setup of setups.splice(0)) await setup.stop();
});

async function started(): Promise<RedisSentinelSetup> {
  const setup = await startRedisSentinel();
  setups.push(setup);
  return setup;
}

/** An ioredis client that asks the sentinels for the primary, as an application would. */
function clientOf(setup: RedisSentinelSetup, options: RedisOptions = {}): Redis {
  const client = new Redis({ sentinels: [...setup.sentinels], name: setup.masterName, ...options });
  // It reports every refused connection while a server is down; the tests assert what it does instead.
  client.on("error", () => undefined);
  clients.push(client);
  return client;
}

async function role(port: number): Promise<string> {
  const reply = await redisReply(port, ["ROLE"]);
  return Array.isArray(reply) && typeof reply[0] === "string" ? reply[0] : "";
}

describe("a Sentinel deployment", () => {
  it("starts a primary and its replica, watched by every sentinel", async () => {
    const setup = await started();
    const [first, second] = setup.servers;
    expect(setup.sentinels).toHaveLength(3);
    expect(await setup.primary()).toBe(first);
    expect(await role(first.port)).toBe("master");
    expect(await role(second.port)).toBe("slave");

    await clientOf(setup).set("k", "v");
    expect(await redisCommand(first.port, ["GET", "k"])).toBe("v");
  });

  it("moves the primary on an ordered failover, and a client watching the sentinels writes to the new one", async () => {
    const setup = await started();
    // failoverDetector: the client hears +switch-master from the sentinels. Without it, it would keep
    // writing to the old primary until the sentinels demote it, ~10 s later.
    const client = clientOf(setup, { failoverDetector: true });
    await client.set("before", "1");
    // SENTINEL FAILOVER does not wait for the replica to catch up: it has the write by then, not by luck.
    expect(await client.wait(1, 1000)).toBe(1);
    const old = await setup.primary();

    await setup.failover();

    const now = await setup.primary();
    expect(now).not.toBe(old);
    expect(await role(now.port)).toBe("master");
    expect(await redisCommand(now.port, ["GET", "before"])).toBe("1");
    // A write lands on the new primary once the client has switched, and never on the old one.
    let n = 0;
    expect(
      await eventually(async () => {
        const key = `after:${n++}`;
        await client.set(key, "1").catch(() => undefined);
        return (await redisCommand(now.port, ["GET", key])) === "1";
      }, 5000),
    ).toBe(true);
    await client.set("last", "1");
    expect(await redisCommand(now.port, ["GET", "last"])).toBe("1");
    expect(await redisCommand(old.port, ["GET", "last"])).toBe("");
  });

  it("fails a crashed primary over to its replica within seconds, and a client follows", async () => {
    const setup = await started();
    const client = clientOf(setup);
    await client.set("before", "1");
    // Replication is asynchronous: the replica has the write before the crash, not by luck.
    expect(await client.wait(1, 1000)).toBe(1);

    const killedAt = Date.now();
    const old = await setup.killPrimary();
    const now = await setup.waitForPrimary(old);
    expect(Date.now() - killedAt).toBeLessThan(FAILOVER_WITHIN_MS);

    expect(now).not.toBe(old);
    expect(await setup.primary()).toBe(now);
    expect(
      await eventually(
        () =>
          client.set("after", "1").then(
            () => true,
            () => false,
          ),
        5000,
      ),
    ).toBe(true);
    expect(await redisCommand(now.port, ["GET", "after"])).toBe("1");
    expect(await redisCommand(now.port, ["GET", "before"])).toBe("1");
  });
});
