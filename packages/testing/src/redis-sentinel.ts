import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { eventually } from "./eventually.js";
import { redisCommand, redisReply } from "./redis-command.js";
import type { RedisReply } from "./redis-command.js";
import { replicate } from "./redis-failover.js";
import { freePorts, startAll, startRedis, startRedisAt } from "./redis-server.js";
import type { RedisServer } from "./redis-server.js";

/** How long the sentinels may take to see the deployment, or to agree on a new primary, in ms. */
const SENTINEL_SETTLE_TIMEOUT_MS = 15_000;
/** `down-after-milliseconds`: how long the primary may not answer before a sentinel thinks it down. */
const SENTINEL_DOWN_AFTER_MS = 1000;
/** `failover-timeout`: a failover not done by then is aborted (and none is retried within twice that). */
const SENTINEL_FAILOVER_TIMEOUT_MS = 5000;

/** How a Sentinel deployment is started. */
export interface RedisSentinelOptions {
  /** Sentinels. Default 3. */
  readonly sentinels?: number;
  /** How many sentinels must find the primary down before one fails it over. Default 2. */
  readonly quorum?: number;
  /** The name the sentinels monitor the primary under. Default `plate`. */
  readonly masterName?: string;
}

/** Where a sentinel listens: the shape ioredis takes in its `sentinels` option. */
export interface SentinelAddress {
  readonly host: string;
  readonly port: number;
}

/**
 * A real Sentinel deployment of private redis-servers on 127.0.0.1: a primary, its replica, and
 * sentinels that monitor them under `masterName` (down after 1 s), persistence off.
 */
export interface RedisSentinelSetup {
  readonly sentinels: readonly SentinelAddress[];
  readonly masterName: string;
  /** The two data servers, the primary first as started; `primary()` says which one it is now. */
  readonly servers: readonly [RedisServer, RedisServer];
  /** The primary as the first sentinel names it (`SENTINEL get-master-addr-by-name`). */
  primary(): Promise<RedisServer>;
  /**
   * A failover ordered from a sentinel (`SENTINEL FAILOVER`), the primary still up. Resolves when
   * every sentinel names the replica as primary and it answers `ROLE` master. The old primary stays
   * a primary until the sentinels demote it, ~10 s later (measured; Sentinel first waits four of its
   * 2 s hello periods): until then it takes the writes of clients still connected to it.
   */
  failover(): Promise<void>;
  /**
   * SIGKILLs the current primary, as a crash would; the sentinels fail over by themselves. It
   * resolves once the process is gone, not when the failover is done: `waitForPrimary` waits for that.
   */
  killPrimary(): Promise<RedisServer>;
  /** Waits until every sentinel names a primary other than `old`, and that one answers `ROLE` master. */
  waitForPrimary(old: RedisServer): Promise<RedisServer>;
  /** Stops the sentinels and both servers for good and removes their folders. */
  stop(): Promise<void>;
}

/** Starts a primary, its replica (synced) and the sentinels, and waits until every sentinel sees all of them. */
export async function startRedisSentinel(options: RedisSentinelOptions = {}): Promise<RedisSentinelSetup> {
  const sentinelCount = options.sentinels ?? 3;
  const quorum = options.quorum ?? 2;
  const masterName = options.masterName ?? "plate";
  // No delay before a diskless sync (default 5 s), so a replica is ready in milliseconds.
  const args = ["--repl-diskless-sync-delay", "0"];
  const started: RedisServer[] = [];
  try {
    const first = await startRedis({ fromEnv: false, args });
    started.push(first);
    const second = await startRedis({ fromEnv: false, args });
    started.push(second);
    // Synced before the sentinels start: their first INFO of the primary then lists the replica.
    await replicate(second, first);
    const ports = await freePorts(sentinelCount);
    const sentinels = await startAll(ports.map((port) => startSentinel(port, masterName, first.port, quorum)));
    started.push(...sentinels);
    await settle("every sentinel to see the replica and the other sentinels", sentinels, (sentinel) =>
      seesAll(sentinel, masterName, sentinelCount),
    );
    return sentinelSetup(masterName, [first, second], sentinels, started);
  } catch (err) {
    await Promise.all(started.map((server) => server.stop()));
    throw err;
  }
}

async function startSentinel(
  port: number,
  masterName: string,
  primaryPort: number,
  quorum: number,
): Promise<RedisServer> {
  const dir = mkdtempSync(join(tmpdir(), "plate-redis-sentinel-"));
  // Sentinel insists on a config file of its own, which it rewrites (its id, what it learns).
  const configFile = join(dir, "sentinel.conf");
  writeFileSync(
    configFile,
    [
      `port ${port}`,
      "bind 127.0.0.1",
      "protected-mode no",
      "sentinel resolve-hostnames no",
      `sentinel monitor ${masterName} 127.0.0.1 ${primaryPort} ${quorum}`,
      `sentinel down-after-milliseconds ${masterName} ${SENTINEL_DOWN_AFTER_MS}`,
      `sentinel failover-timeout ${masterName} ${SENTINEL_FAILOVER_TIMEOUT_MS}`,
      "",
    ].join("\n"),
  );
  return startRedisAt(port, { dir, configFile, args: ["--sentinel"] });
}

/**
 * Whether `sentinel` sees the primary up, a replica it could promote now (linked, synced), and
 * every other sentinel: a `SENTINEL FAILOVER` sooner may answer `NOGOODSLAVE`.
 */
async function seesAll(sentinel: RedisServer, masterName: string, sentinelCount: number): Promise<boolean> {
  const master = fields(await redisReply(sentinel.port, ["SENTINEL", "MASTER", masterName]));
  const replicas = await redisReply(sentinel.port, ["SENTINEL", "REPLICAS", masterName]);
  const usable = (Array.isArray(replicas) ? (replicas as readonly RedisReply[]) : [])
    .map(fields)
    .filter((replica) => replica.get("flags") === "slave" && replica.get("master-link-status") === "ok");
  return (
    master.get("flags") === "master" &&
    usable.length >= 1 &&
    Number(master.get("num-other-sentinels")) >= sentinelCount - 1
  );
}

function sentinelSetup(
  masterName: string,
  servers: readonly [RedisServer, RedisServer],
  sentinels: readonly RedisServer[],
  started: readonly RedisServer[],
): RedisSentinelSetup {
  const primaryPort = async (sentinel: RedisServer) => {
    const address = await redisReply(sentinel.port, ["SENTINEL", "GET-MASTER-ADDR-BY-NAME", masterName]);
    return Array.isArray(address) ? Number(address[1]) : undefined;
  };
  const serverAt = (port: number | undefined) => {
    const server = servers.find((each) => each.port === port);
    if (server === undefined) throw new Error(`the sentinels name port ${port} as primary, not one of this setup's`);
    return server;
  };
  const primary = async () => serverAt(await primaryPort(sentinels[0]!));
  const waitForPrimary = async (old: RedisServer) => {
    const other = servers.find((server) => server !== old)!;
    await settle(`the primary to move to port ${other.port}`, sentinels, async (sentinel) => {
      if ((await primaryPort(sentinel)) !== other.port) return false;
      const role = await redisReply(other.port, ["ROLE"]);
      return Array.isArray(role) && role[0] === "master";
    });
    return other;
  };
  return {
    sentinels: sentinels.map((sentinel) => ({ host: "127.0.0.1", port: sentinel.port })),
    masterName,
    servers,
    primary,
    async failover() {
      const old = await primary();
      await redisCommand(sentinels[0]!.port, ["SENTINEL", "FAILOVER", masterName]);
      await waitForPrimary(old);
    },
    async killPrimary() {
      const old = await primary();
      await old.kill();
      return old;
    },
    waitForPrimary,
    async stop() {
      await Promise.all(started.map((server) => server.stop()));
    },
  };
}

/** Waits until `check` holds on every one of `sentinels` at once; one that does not answer counts as not yet. */
async function settle(
  what: string,
  sentinels: readonly RedisServer[],
  check: (sentinel: RedisServer) => Promise<boolean>,
): Promise<void> {
  const settled = await eventually(async () => {
    const answers = await Promise.all(sentinels.map((sentinel) => check(sentinel).catch(() => false)));
    return answers.every(Boolean);
  }, SENTINEL_SETTLE_TIMEOUT_MS);
  if (!settled)
    throw new Error(`the sentinels did not settle within ${SENTINEL_SETTLE_TIMEOUT_MS} ms, waiting for ${what}`);
}

/** A flat array of names and values (`SENTINEL MASTER`) as a map. */
function fields(reply: RedisReply): ReadonlyMap<string, string> {
  const map = new Map<string, string>();
  if (!Array.isArray(reply)) return map;
  const items = reply as readonly RedisReply[];
  for (let i = 0; i + 1 < items.length; i += 2) {
    const name = items[i];
    const value = items[i + 1];
    if (typeof name === "string" && typeof value === "string") map.set(name, value);
  }
  return map;
}
