import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { eventually } from "./eventually.js";
import { SLOT_COUNT as CLUSTER_SLOTS } from "@plate/redis";
import { redisCommand, redisReply } from "./redis-command.js";
import { freePorts, startAll, startRedisAt } from "./redis-server.js";
import type { RedisServer } from "./redis-server.js";

/** How long a cluster may take to form, to fail over, or to agree on a moved slot, in ms. */
const CLUSTER_SETTLE_TIMEOUT_MS = 10_000;
/** How many keys one `MIGRATE` moves (and one `CLUSTER GETKEYSINSLOT` asks for). */
const MIGRATE_BATCH_KEYS = 100;
/** How long one `MIGRATE` may wait for the target, in ms. */
const MIGRATE_TIMEOUT_MS = 5000;

/** One redis-server of a `RedisCluster`. Its id outlives `kill` and `restart` (it is kept in its nodes file). */
export interface ClusterNode {
  readonly port: number;
  /** The port of its cluster bus (gossip and failover votes). */
  readonly clusterPort: number;
  /** Its cluster node id (`CLUSTER MYID`). */
  readonly id: string;
  readonly url: string;
}

/** How a cluster is started. */
export interface RedisClusterOptions {
  /** Masters, the hash slots split evenly among them. Default 3, the fewest that can vote a failover. */
  readonly masters?: number;
  /** Replicas of every master. Default 0. */
  readonly replicasPerMaster?: number;
  /** `cluster-node-timeout`: how long a node may be unreachable before it is failing, in ms. Default 1000. */
  readonly nodeTimeoutMs?: number;
}

/**
 * A real Redis Cluster of private redis-servers on 127.0.0.1, persistence off. Full coverage is not
 * required (`cluster-require-full-coverage no`): a dead master only makes its own slots fail.
 * Everything that reads the cluster's state asks the first running node of `nodes`.
 */
export interface RedisCluster {
  /** `127.0.0.1:port` of every node, as cluster clients take their startup nodes. */
  readonly seeds: readonly string[];
  /** Every node as started: the masters first (in slot order), then the replicas of each in turn. */
  readonly nodes: readonly ClusterNode[];
  /**
   * The masters that hold slots now, failing ones left out (`CLUSTER NODES`). A master restarted
   * after its replica took its slots shows as a master without slots until it learns it is now a
   * replica: it is left out too (counted in, it made a search for a plate on every master endless).
   */
  masters(): Promise<ClusterNode[]>;
  /** The replicas of `master` now (`CLUSTER NODES`). */
  replicasOf(master: ClusterNode): Promise<ClusterNode[]>;
  /** The master that holds `slot` now; rejects when no node does. */
  nodeForSlot(slot: number): Promise<ClusterNode>;
  /**
   * Waits until every replica of `master` has applied everything the master had taken when this was
   * called. Replication is asynchronous: a master killed before that takes its last writes with it,
   * which a test of what survives a failover must rule out first.
   */
  waitForReplicas(master: ClusterNode): Promise<void>;
  /** SIGKILLs `node`, as a crash would, and waits for it to be gone. */
  kill(node: ClusterNode): Promise<void>;
  /**
   * Starts a killed `node` again, empty but with its nodes file (id, epoch, role), and waits until
   * every running node sees it up, in the same role, and all agree which masters hold which slots.
   * A master whose replica took its slots while it was down is a master for a while in some views
   * (seen here under load: a master without slots, for seconds), and a test that read the cluster
   * then saw a master too many.
   */
  restart(node: ClusterNode): Promise<void>;
  /**
   * A manual failover (`CLUSTER FAILOVER`): `replica` takes its master's slots once it has caught up.
   * Resolves when every running node sees it as a master, and its old master as its replica.
   */
  failover(replica: ClusterNode): Promise<void>;
  /**
   * Waits until every running node reports `cluster_state:<state>`; for `ok`, also until each sees
   * every slot held by a node that is running, as after the failover that follows a `kill` (the
   * nodes still say `ok` for a second or so after one: they have not noticed it yet).
   */
  waitForState(state: "ok" | "fail"): Promise<void>;
  /**
   * Moves `slot` from master `from` to master `to` while it is in use, as `redis-cli --cluster
   * reshard` does: `IMPORTING` on `to`, `MIGRATING` on `from`, every key `MIGRATE`d (clients get
   * `ASK` meanwhile), then `SETSLOT NODE` on both and on every other running master. Resolves when
   * every running node sees `to` as its owner.
   */
  migrateSlot(slot: number, from: ClusterNode, to: ClusterNode): Promise<void>;
  /** `CLUSTER INFO` of `node` as fields, e.g. `cluster_state`, `cluster_stats_messages_publish_sent`. */
  clusterInfo(node: ClusterNode): Promise<Record<string, string>>;
  /** Stops every node for good and removes their folders. */
  stop(): Promise<void>;
}

/** One line of `CLUSTER NODES`. */
interface NodeLine {
  readonly id: string;
  readonly port: number;
  readonly flags: readonly string[];
  /** The id of its master, for a replica. */
  readonly masterId: string | undefined;
  /** The ranges of slots it holds, ends included; slots being moved (`[slot->-id]`) are left out. */
  readonly slots: readonly (readonly [number, number])[];
}

/** Starts a cluster and waits until every node knows every other, every slot is served and every replica has synced. */
export async function startRedisCluster(options: RedisClusterOptions = {}): Promise<RedisCluster> {
  const masterCount = options.masters ?? 3;
  const replicaCount = masterCount * (options.replicasPerMaster ?? 0);
  const nodeTimeoutMs = options.nodeTimeoutMs ?? 1000;
  const total = masterCount + replicaCount;
  // Bus ports are free ports too: the default (port + 10000) may be taken, or above 65535.
  const ports = await freePorts(2 * total);
  const servers = await startAll(
    Array.from({ length: total }, (_, i) => startNode(ports[i]!, ports[total + i]!, nodeTimeoutMs)),
  );
  try {
    const nodes = await Promise.all(
      servers.map(async (server, i): Promise<ClusterNode> => {
        const id = await redisCommand(server.port, ["CLUSTER", "MYID"]);
        return { port: server.port, clusterPort: ports[total + i]!, id, url: server.url };
      }),
    );
    await form(nodes, masterCount);
    return cluster(nodes, servers);
  } catch (err) {
    await Promise.all(servers.map((server) => server.stop()));
    throw err;
  }
}

function startNode(port: number, clusterPort: number, nodeTimeoutMs: number): Promise<RedisServer> {
  const dir = mkdtempSync(join(tmpdir(), "plate-redis-cluster-"));
  return startRedisAt(port, {
    dir,
    args: [
      "--cluster-enabled",
      "yes",
      "--cluster-config-file",
      join(dir, `nodes-${port}.conf`),
      "--cluster-node-timeout",
      String(nodeTimeoutMs),
      "--cluster-port",
      String(clusterPort),
      "--cluster-require-full-coverage",
      "no",
      // No delay before a diskless sync (default 5 s), so a replica is ready in milliseconds.
      "--repl-diskless-sync-delay",
      "0",
    ],
  });
}

/** Slots to masters, every node met, replicas attached: what `redis-cli --cluster create` does, without its prompts. */
async function form(nodes: readonly ClusterNode[], masterCount: number): Promise<void> {
  const masters = nodes.slice(0, masterCount);
  const replicas = nodes.slice(masterCount);
  // Distinct epochs from the start, as redis-cli sets them: no epoch collision to resolve before a failover.
  await Promise.all(nodes.map((node, i) => redisCommand(node.port, ["CLUSTER", "SET-CONFIG-EPOCH", String(i + 1)])));
  await Promise.all(
    masters.map((node, i) => {
      const first = Math.floor((i * CLUSTER_SLOTS) / masterCount);
      const last = Math.floor(((i + 1) * CLUSTER_SLOTS) / masterCount) - 1;
      return redisCommand(node.port, ["CLUSTER", "ADDSLOTSRANGE", String(first), String(last)]);
    }),
  );
  // All meet the first and learn the rest by gossip, as with redis-cli (every pair meeting measured no faster).
  const [first] = nodes;
  await Promise.all(
    nodes
      .slice(1)
      .map((node) =>
        redisCommand(node.port, ["CLUSTER", "MEET", "127.0.0.1", String(first!.port), String(first!.clusterPort)]),
      ),
  );
  // Most of the ~2 s a cluster takes to start: a master reports `ok` no sooner than 2 s after it started
  // (CLUSTER_WRITABLE_DELAY in Redis' cluster.c), to let the cluster reconfigure a rebooted one first.
  await settle("every node to know every other and every slot", nodes, async (node) => {
    const lines = await clusterNodes(node);
    const info = await clusterInfo(node);
    return (
      lines.length === nodes.length &&
      lines.every((line) => !line.flags.includes("handshake") && !line.flags.includes("noaddr")) &&
      info.cluster_state === "ok" &&
      info.cluster_slots_ok === String(CLUSTER_SLOTS)
    );
  });
  if (replicas.length === 0) return;
  const masterOf = (i: number) => masters[i % masterCount]!;
  await Promise.all(replicas.map((node, i) => redisCommand(node.port, ["CLUSTER", "REPLICATE", masterOf(i).id])));
  await settle("every replica to sync", replicas, async (node) =>
    /master_link_status:up/.test(await redisCommand(node.port, ["INFO", "replication"])),
  );
  // A master votes for a replica's failover only if it knows it as a replica of the failed master.
  await settle("every node to know every replica", nodes, async (node) => {
    const lines = await clusterNodes(node);
    return replicas.every((replica, i) => lines.find((line) => line.id === replica.id)?.masterId === masterOf(i).id);
  });
}

function cluster(nodes: readonly ClusterNode[], servers: readonly RedisServer[]): RedisCluster {
  const serverOf = new Map(nodes.map((node, i) => [node.id, servers[i]!]));
  const byId = new Map(nodes.map((node) => [node.id, node]));
  const running = new Set(nodes);
  const live = () => nodes.filter((node) => running.has(node));
  const view = async () => {
    const asked = live()[0];
    if (asked === undefined) throw new Error("every node of the cluster is down");
    return clusterNodes(asked);
  };
  const known = (line: NodeLine) => {
    const node = byId.get(line.id);
    if (node === undefined) throw new Error(`node ${line.id} (port ${line.port}) is not one of this cluster's`);
    return node;
  };
  const replicasOf = async (master: ClusterNode) => (await view()).filter((line) => line.masterId === master.id).map(known);
  return {
    seeds: nodes.map((node) => `127.0.0.1:${node.port}`),
    nodes,
    async masters() {
      const lines = await view();
      return lines
        .filter((line) => line.flags.includes("master") && !line.flags.includes("fail") && line.slots.length > 0)
        .map(known);
    },
    replicasOf,
    async nodeForSlot(slot) {
      const owner = ownerOf(await view(), slot);
      if (owner === undefined) throw new Error(`no node holds slot ${slot}`);
      return known(owner);
    },
    async waitForReplicas(master) {
      const offset = (info: string, field: string) => Number(new RegExp(`^${field}:(\\d+)`, "m").exec(info)?.[1] ?? "-1");
      const target = offset(await redisCommand(master.port, ["INFO", "replication"]), "master_repl_offset");
      await settle(`the replicas of node ${master.port} to apply its writes`, await replicasOf(master), async (replica) => {
        return offset(await redisCommand(replica.port, ["INFO", "replication"]), "slave_repl_offset") >= target;
      });
    },
    async kill(node) {
      running.delete(node);
      await serverOf.get(node.id)!.kill();
    },
    async restart(node) {
      await serverOf.get(node.id)!.restart();
      running.add(node);
      const agreed = await eventually(async () => {
        const views = await Promise.all(live().map((n) => clusterNodes(n).catch(() => undefined)));
        const owners = new Set<string>();
        for (const lines of views) {
          const line = lines?.find((l) => l.id === node.id);
          if (line === undefined || line.flags.some((flag) => DOWN_FLAGS.has(flag))) return false;
          // Its role too: a view that still takes a replica for a master without slots has not settled.
          owners.add(`${slotOwners(lines!)} ${line.flags.includes("master") ? "master" : `replica of ${line.masterId}`}`);
        }
        return owners.size === 1;
      }, CLUSTER_SETTLE_TIMEOUT_MS);
      if (!agreed) throw new Error(`the cluster did not settle within ${CLUSTER_SETTLE_TIMEOUT_MS} ms after node ${node.port} restarted`);
    },
    async failover(replica) {
      const masterId = (await view()).find((line) => line.id === replica.id)?.masterId;
      if (masterId === undefined) throw new Error(`node ${replica.port} is not a replica`);
      await redisCommand(replica.port, ["CLUSTER", "FAILOVER"]);
      await settle(`node ${replica.port} to take its master's place`, live(), async (node) => {
        const lines = await clusterNodes(node);
        const promoted = lines.find((line) => line.id === replica.id)?.flags.includes("master") === true;
        return promoted && lines.find((line) => line.id === masterId)?.masterId === replica.id;
      });
    },
    async waitForState(state) {
      const runningIds = new Set(live().map((node) => node.id));
      await settle(`cluster_state:${state}`, live(), async (node) => {
        const info = await clusterInfo(node);
        if (info.cluster_state !== state) return false;
        if (state === "fail") return true;
        const held = (await clusterNodes(node))
          .filter((line) => runningIds.has(line.id) && !line.flags.includes("fail"))
          .flatMap((line) => line.slots)
          .reduce((sum, [first, last]) => sum + last - first + 1, 0);
        return held === CLUSTER_SLOTS;
      });
    },
    async migrateSlot(slot, from, to) {
      await redisCommand(to.port, ["CLUSTER", "SETSLOT", String(slot), "IMPORTING", from.id]);
      await redisCommand(from.port, ["CLUSTER", "SETSLOT", String(slot), "MIGRATING", to.id]);
      for (;;) {
        const keys = await redisReply(from.port, [
          "CLUSTER",
          "GETKEYSINSLOT",
          String(slot),
          String(MIGRATE_BATCH_KEYS),
        ]);
        if (!Array.isArray(keys) || keys.length === 0) break;
        const batch = keys as readonly string[];
        await redisCommand(from.port, [
          "MIGRATE",
          "127.0.0.1",
          String(to.port),
          "",
          "0",
          String(MIGRATE_TIMEOUT_MS),
          "KEYS",
          ...batch,
        ]);
      }
      // The target first: once the source lets go, the target must already answer for the slot.
      const masters = (await view()).filter((line) => line.flags.includes("master") && !line.flags.includes("fail"));
      const others = masters.map(known).filter((node) => node !== to && node !== from && running.has(node));
      for (const node of [to, from, ...others]) {
        await redisCommand(node.port, ["CLUSTER", "SETSLOT", String(slot), "NODE", to.id]);
      }
      await settle(
        `slot ${slot} to move to node ${to.port}`,
        live(),
        async (node) => ownerOf(await clusterNodes(node), slot)?.id === to.id,
      );
    },
    clusterInfo,
    async stop() {
      running.clear();
      await Promise.all(servers.map((server) => server.stop()));
    },
  };
}

/** Waits until `check` holds on every one of `nodes` at once; a node that does not answer counts as not yet. */
async function settle(
  what: string,
  nodes: readonly ClusterNode[],
  check: (node: ClusterNode) => Promise<boolean>,
): Promise<void> {
  const settled = await eventually(async () => {
    const answers = await Promise.all(nodes.map((node) => check(node).catch(() => false)));
    return answers.every(Boolean);
  }, CLUSTER_SETTLE_TIMEOUT_MS);
  if (!settled)
    throw new Error(`the cluster did not settle within ${CLUSTER_SETTLE_TIMEOUT_MS} ms, waiting for ${what}`);
}

async function clusterInfo(node: ClusterNode): Promise<Record<string, string>> {
  const text = await redisCommand(node.port, ["CLUSTER", "INFO"]);
  const fields: Record<string, string> = {};
  for (const line of text.split("\r\n")) {
    const colon = line.indexOf(":");
    if (colon > 0) fields[line.slice(0, colon)] = line.slice(colon + 1);
  }
  return fields;
}

async function clusterNodes(node: ClusterNode): Promise<NodeLine[]> {
  const text = await redisCommand(node.port, ["CLUSTER", "NODES"]);
  return text
    .split("\n")
    .filter((line) => line.trim() !== "")
    .map((line) => {
      // <id> <ip:port@cport[,hostname]> <flags> <master> <ping-sent> <pong-recv> <config-epoch> <link-state> <slot>...
      const [id = "", address = "", flags = "", master = "-", , , , , ...slots] = line.trim().split(" ");
      return {
        id,
        port: Number(/:(\d+)@/.exec(address)?.[1] ?? "0"),
        flags: flags.split(","),
        masterId: master === "-" ? undefined : master,
        slots: slots
          .filter((slot) => !slot.startsWith("["))
          .map((slot) => {
            const [first = "", last = first] = slot.split("-");
            return [Number(first), Number(last)] as const;
          }),
      };
    });
}

/** Flags of a node that is not (yet) up in a view of the cluster. */
const DOWN_FLAGS = new Set(["fail", "fail?", "handshake", "noaddr"]);

/** Which master holds which slots in one view, as text to compare views by. */
function slotOwners(lines: readonly NodeLine[]): string {
  return lines
    .filter((line) => line.flags.includes("master") && line.slots.length > 0)
    .map((line) => `${line.id}:${line.slots.map(([first, last]) => `${first}-${last}`).join(",")}`)
    .sort()
    .join(" ");
}

function ownerOf(lines: readonly NodeLine[], slot: number): NodeLine | undefined {
  return lines.find((line) => line.slots.some(([first, last]) => first <= slot && slot <= last));
}
