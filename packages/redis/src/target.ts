import { Cluster, Redis } from "ioredis";
import type { ClusterOptions, RedisOptions } from "ioredis";

/** One Redis server's address. */
export interface HostPort {
  readonly host: string;
  readonly port: number;
}

/**
 * The Redis deployment a node shares with the others, as its settings name it:
 * - `standalone`: one Redis (`REDIS_URL`);
 * - `sentinel`: a primary and replicas watched by Sentinel (`REDIS_SENTINELS`,
 *   `REDIS_SENTINEL_MASTER`); every connection asks a sentinel where the primary is, again at each
 *   reconnect, so a failover is followed;
 * - `cluster`: Redis Cluster 7+ (`REDIS_CLUSTER_NODES`, a seed list), with sharded pub/sub.
 * For the last two, `url` (`REDIS_URL`, optional) gives what every connection shares: user,
 * password, `rediss:` for TLS, and (sentinel only) the database.
 */
export type RedisTarget =
  | { readonly kind: "standalone"; readonly url: string }
  | { readonly kind: "sentinel"; readonly sentinels: readonly HostPort[]; readonly masterName: string; readonly url?: string }
  | { readonly kind: "cluster"; readonly nodes: readonly HostPort[]; readonly url?: string };

/** A connection that runs commands: one Redis, or a cluster client routing each by hash slot. */
export type Commands = Redis | Cluster;

/** What the cluster client does on its own, as settings of the node (see the README). */
export interface ClusterSettings {
  /** How often the slot map is read again even when nothing failed, in ms (`SLOTS_REFRESH_DEFAULT_MS` when not given). */
  readonly slotsRefreshMs?: number;
}

/** `REDIS_CLUSTER_REFRESH_MS`'s default, in ms. */
const SLOTS_REFRESH_DEFAULT_MS = 5000;

/**
 * Wait before a command answered TRYAGAIN is sent again, in ms: a script whose keys are being
 * moved by a live slot migration (some already on the new master) waits for the move to finish.
 */
const CLUSTER_TRYAGAIN_DELAY_MS = 50;
/** Redirections (MOVED, ASK, TRYAGAIN) one command may follow before it fails (503). */
const CLUSTER_MAX_REDIRECTIONS = 16;

/** `host:port,host:port` as addresses; throws naming the entry that is not one. */
export function parseHostPorts(text: string): HostPort[] {
  const entries = text
    .split(",")
    .map((entry) => entry.trim())
    .filter((entry) => entry !== "");
  if (entries.length === 0) throw new Error("expected host:port[,host:port...]");
  return entries.map((entry) => {
    const colon = entry.lastIndexOf(":");
    const host = entry.slice(0, colon).replace(/^\[(.*)\]$/, "$1");
    const port = Number(entry.slice(colon + 1));
    if (colon <= 0 || host === "" || !Number.isInteger(port) || port < 1 || port > 65535) {
      throw new Error(`"${entry}" is not host:port`);
    }
    return { host, port };
  });
}

/** The options a `redis://` or `rediss://` URL gives every connection: credentials, TLS, database. */
export function urlOptions(url: string | undefined): RedisOptions {
  if (url === undefined || url === "") return {};
  const parsed = new URL(url);
  const options: RedisOptions = {};
  if (parsed.username !== "") options.username = decodeURIComponent(parsed.username);
  if (parsed.password !== "") options.password = decodeURIComponent(parsed.password);
  if (parsed.protocol === "rediss:") options.tls = {};
  const db = parsed.pathname.replace(/^\//, "");
  if (db !== "") options.db = Number(db);
  return options;
}

/** A connection to the primary of a standalone or Sentinel target (not a cluster: see `connectNode`). */
export function connectPrimary(target: RedisTarget, options: RedisOptions): Redis {
  switch (target.kind) {
    case "standalone":
      return new Redis(target.url, options);
    case "sentinel":
      return new Redis({
        ...urlOptions(target.url),
        ...options,
        sentinels: target.sentinels.map(({ host, port }) => ({ host, port })),
        name: target.masterName,
        // The primary's address comes from a sentinel; a READONLY reply (a demoted primary) makes
        // the connection reconnect, which asks again.
        role: "master",
        // Listens to the sentinels' +switch-master and reconnects at once: after an ordered
        // failover the old primary takes writes for ~10 s more until the sentinels demote it
        // (measured), and writes there would be lost.
        failoverDetector: true,
      });
    case "cluster":
      throw new Error("connectPrimary: a Redis Cluster has no one primary");
  }
}

/** A connection to one server of a cluster, by its `host:port` as the slot map names it. */
export function connectNode(target: RedisTarget, nodeKey: string, options: RedisOptions): Redis {
  const [address] = parseHostPorts(nodeKey);
  return new Redis({ ...urlOptions(target.url), ...options, host: address!.host, port: address!.port });
}

/**
 * The command connection of a target. On a cluster, every command of Plate names keys (or a shard
 * channel) of one hash slot, and the client sends it to the master of that slot, following MOVED
 * and ASK and reading the slot map again after a failover.
 */
export function connectCommands(target: RedisTarget, options: RedisOptions, cluster: ClusterSettings): Commands {
  if (target.kind !== "cluster") return connectPrimary(target, options);
  const { enableAutoPipelining, autoPipeliningIgnoredCommands, lazyConnect, ...perNode } = options;
  // Per server, ioredis sets its own queue (see below); the caller's choice is met by isCommandReady.
  delete perNode.enableOfflineQueue;
  const clusterOptions: ClusterOptions = {
    // A server that cannot be reached within a command's time fails what waits on it.
    redisOptions: { ...urlOptions(target.url), connectTimeout: perNode.commandTimeout, ...perNode },
    // The cluster client connects to a master at its first command; with no queue, the commands
    // that come while it connects fail. Callers refuse commands while the client is not ready
    // (`isCommandReady`) instead, which is what `enableOfflineQueue: false` gives one Redis.
    enableOfflineQueue: true,
    enableAutoPipelining: enableAutoPipelining ?? false,
    autoPipeliningIgnoredCommands: autoPipeliningIgnoredCommands ?? [],
    lazyConnect: lazyConnect ?? false,
    scaleReads: "master",
    slotsRefreshInterval: cluster.slotsRefreshMs ?? SLOTS_REFRESH_DEFAULT_MS,
    // A master that died: its commands fail at once (503 for its plates only) while the cluster
    // promotes a replica; the slot map is read again meanwhile.
    retryDelayOnFailover: 0,
    retryDelayOnClusterDown: 0,
    retryDelayOnTryAgain: CLUSTER_TRYAGAIN_DELAY_MS,
    maxRedirections: CLUSTER_MAX_REDIRECTIONS,
  };
  return new Cluster(
    target.nodes.map(({ host, port }) => ({ host, port })),
    clusterOptions,
  );
}

/**
 * Whether a command sent now goes out (or fails) at once: one Redis without an offline queue
 * refuses by itself while down, but a cluster client keeps a queue (see `connectCommands`) that
 * must not hold a request while the whole cluster is unreachable, so callers check this first.
 */
export function isCommandReady(commands: Commands): boolean {
  return commands.status === "ready";
}

/** The current master of a hash slot on a cluster client, as `host:port`; undefined when unknown. */
export function masterOf(cluster: Cluster, slot: number): string | undefined {
  return cluster.slots[slot]?.[0];
}

/**
 * Closes a connection: gracefully when it is up (pending replies first), at once otherwise, and
 * either way stops its reconnecting.
 */
export async function closeConnection(redis: Commands): Promise<void> {
  if (redis.status === "ready") {
    try {
      await redis.quit();
      return;
    } catch {
      // Dropped meanwhile: disconnect below.
    }
  }
  redis.disconnect();
}
