import { redisCommand } from "./redis-command.js";
import { startRedis } from "./redis-server.js";
import type { RedisServer } from "./redis-server.js";

/** How long a replica may take to finish its sync with the primary, in ms. */
const REPLICA_SYNC_TIMEOUT_MS = 10_000;
/** How often a syncing replica is polled, in ms. */
const REPLICA_POLL_MS = 20;

/** Two private redis-servers, `b` a replica of `a` until `failover` swaps their roles. */
export interface RedisPair {
  readonly a: RedisServer;
  readonly b: RedisServer;
  /**
   * A failover: the replica is promoted (`REPLICAOF NO ONE`) and the old primary demoted to a
   * replica of it (`REPLICAOF`), as Sentinel does. Clients still connected to the old primary get
   * `READONLY` for every write. Resolves once the demoted one has synced.
   */
  failover(): Promise<void>;
  stop(): Promise<void>;
}

/** Starts `a`, and `b` as its replica (synced); never an external `REDIS_URL` server. */
export async function startRedisPair(): Promise<RedisPair> {
  // No delay before a diskless sync (default 5 s), so a role change settles in milliseconds.
  const args = ["--repl-diskless-sync-delay", "0"];
  const a = await startRedis({ fromEnv: false, args });
  const b = await startRedis({ fromEnv: false, args });
  let primary = a;
  let replica = b;
  await replicate(replica, primary);
  return {
    a,
    b,
    async failover() {
      // As a careful failover does: the replica has every write the primary took before it is promoted.
      await caughtUp(replica, primary);
      await redisCommand(replica.port, ["REPLICAOF", "NO", "ONE"]);
      [primary, replica] = [replica, primary];
      await replicate(replica, primary);
    },
    async stop() {
      await Promise.all([a.stop(), b.stop()]);
    },
  };
}

/** Makes `replica` a replica of `primary` and waits until it has synced. */
export async function replicate(replica: RedisServer, primary: RedisServer): Promise<void> {
  await redisCommand(replica.port, ["REPLICAOF", "127.0.0.1", String(primary.port)]);
  const deadline = Date.now() + REPLICA_SYNC_TIMEOUT_MS;
  while (!/master_link_status:up/.test(await redisCommand(replica.port, ["INFO", "replication"]))) {
    if (Date.now() > deadline) throw new Error(`redis-server on port ${replica.port} did not sync with ${primary.port}`);
    await new Promise((r) => setTimeout(r, REPLICA_POLL_MS));
  }
}

/**
 * Runs `use` while the Redis on `port` is out of memory (`maxmemory` 1 byte, no eviction: every
 * write answers OOM), and frees it again however `use` ends.
 */
export async function whileOutOfMemory<T>(port: number, use: () => Promise<T>): Promise<T> {
  await redisCommand(port, ["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
  await redisCommand(port, ["CONFIG", "SET", "maxmemory", "1"]);
  try {
    return await use();
  } finally {
    await redisCommand(port, ["CONFIG", "SET", "maxmemory", "0"]);
  }
}

/** Waits until `replica` has applied everything `primary` had taken when this was called. */
async function caughtUp(replica: RedisServer, primary: RedisServer): Promise<void> {
  const target = offset(await redisCommand(primary.port, ["INFO", "replication"]), "master_repl_offset");
  const deadline = Date.now() + REPLICA_SYNC_TIMEOUT_MS;
  while (offset(await redisCommand(replica.port, ["INFO", "replication"]), "slave_repl_offset") < target) {
    if (Date.now() > deadline) throw new Error(`redis-server on port ${replica.port} did not catch up with ${primary.port}`);
    await new Promise((r) => setTimeout(r, REPLICA_POLL_MS));
  }
}

function offset(info: string, field: string): number {
  return Number(new RegExp(`^${field}:(\\d+)`, "m").exec(info)?.[1] ?? "-1");
}
