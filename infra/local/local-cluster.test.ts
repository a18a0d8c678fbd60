import { createServer } from "node:net";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SseClient, eventually, freePorts, redisCommand, redisReply } from "@plate/testing";
import type { RedisReply } from "@plate/testing";
import { down, up } from "./topology.js";

/**
 * infra/local with REDIS_CLUSTER=1: the three edges behind nginx on a Redis Cluster of six
 * redis-servers (three masters, one replica each) that up.sh forms with `redis-cli --cluster create`.
 */
const ADMIN_TOKEN = "local-admin-token-0123456789abcd";
const PLATE = "local";
const KEY = "local-secret-0123456789abcdefghij";
const AUTH = { Authorization: `Bearer ${KEY}` };
/** The Redis shard channel of the plate's channel `room`, with the edge's default REDIS_KEY_PREFIX. */
const SHARD_CHANNEL = `plate:{${PLATE}}:room`;

/**
 * Where the search for the cluster's ports starts, and for its buses' ports. up.sh takes each as a
 * base and the five ports after it, which `freePort` cannot promise. Below Linux's ephemeral range
 * (32768 and up by default), from which every `freePort` (the other test's ports included) and every
 * outgoing connection draws, and away from up.sh's own defaults (17000, 27000).
 */
const CLUSTER_PORT_SEARCH_FROM = 21000;
const CLUSTER_BUS_PORT_SEARCH_FROM = 22000;
/** How far past its start each search looks: 166 runs of six. */
const PORT_SEARCH_SPAN = 1000;
/** The redis-servers up.sh starts with REDIS_CLUSTER=1: three masters, one replica each. */
const CLUSTER_NODES = 6;

/** Whether nothing listens on `port` of 127.0.0.1 now. */
function isFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}

/** The first port from `from` on that starts `count` ports in a row nothing listens on. */
async function freeRun(count: number, from: number): Promise<number> {
  for (let base = from; base + count <= from + PORT_SEARCH_SPAN; base += count) {
    const free = await Promise.all(Array.from({ length: count }, (_, i) => isFree(base + i)));
    if (free.every(Boolean)) return base;
  }
  throw new Error(`no ${count} free ports in a row between ${from} and ${from + PORT_SEARCH_SPAN}`);
}

/** `CLUSTER INFO` of the node on `port`, as fields. */
async function clusterInfo(port: number): Promise<Record<string, string>> {
  const fields: Record<string, string> = {};
  for (const line of (await redisCommand(port, ["CLUSTER", "INFO"])).split("\r\n")) {
    const colon = line.indexOf(":");
    if (colon > 0) fields[line.slice(0, colon)] = line.slice(colon + 1);
  }
  return fields;
}

/** The port of the master that holds `key`'s hash slot, as the node on `port` sees the cluster. */
async function masterOf(key: string, port: number): Promise<number> {
  const slot = Number(await redisCommand(port, ["CLUSTER", "KEYSLOT", key]));
  // <id> <ip:port@cport> <flags> <master> <ping-sent> <pong-recv> <config-epoch> <link-state> <slot>...
  for (const line of (await redisCommand(port, ["CLUSTER", "NODES"])).trim().split("\n")) {
    const [, address = "", flags = "", , , , , , ...ranges] = line.trim().split(" ");
    const holds = ranges.some((range) => {
      const [first = NaN, last = first] = range.split("-").map(Number);
      return first <= slot && slot <= last;
    });
    if (flags.split(",").includes("master") && holds) return Number(/:(\d+)@/.exec(address)?.[1]);
  }
  throw new Error(`no master holds slot ${slot}`);
}

describe("infra/local with REDIS_CLUSTER=1: the topology on a Redis Cluster", () => {
  let dir: string;
  let lb: string;
  let edges: string[];
  let clusterPorts: number[];
  let env: Record<string, string>;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "plate-local-cluster-"));
    const [lbPort, edge1, edge2, edge3, promPort] = await freePorts(5);
    const clusterBase = await freeRun(CLUSTER_NODES, CLUSTER_PORT_SEARCH_FROM);
    const busBase = await freeRun(CLUSTER_NODES, CLUSTER_BUS_PORT_SEARCH_FROM);
    lb = `http://127.0.0.1:${lbPort}`;
    edges = [edge1, edge2, edge3].map((p) => `http://127.0.0.1:${p}`);
    clusterPorts = Array.from({ length: CLUSTER_NODES }, (_, i) => clusterBase + i);
    env = {
      PLATE_LOCAL_DIR: dir,
      LB_PORT: String(lbPort),
      EDGE_PORTS: [edge1, edge2, edge3].join(" "),
      PROMETHEUS_PORT: String(promPort),
      REDIS_CLUSTER: "1",
      REDIS_CLUSTER_BASE_PORT: String(clusterBase),
      REDIS_CLUSTER_BUS_BASE_PORT: String(busBase),
      ADMIN_TOKEN,
      BOOTSTRAP_PLATES: JSON.stringify({ [PLATE]: KEY }),
    };
    await up(env);
  });

  afterAll(async () => {
    await down(env);
    await rm(dir, { recursive: true, force: true });
  });

  it("forms a cluster of three masters with one replica each, every node at cluster_state:ok", async () => {
    for (const port of clusterPorts) expect((await clusterInfo(port)).cluster_state).toBe("ok");
    // ROLE answers an array whose first element is `master` or `slave`.
    const roles = await Promise.all(
      clusterPorts.map(async (port) => ((await redisReply(port, ["ROLE"])) as readonly RedisReply[])[0]),
    );
    expect(roles.filter((role) => role === "master")).toHaveLength(3);
    expect(roles.filter((role) => role === "slave")).toHaveLength(3);
  });

  it("has every edge ready (/readyz 200)", async () => {
    for (const edge of edges) expect((await fetch(`${edge}/readyz`)).status).toBe(200);
  });

  it("delivers a publish through nginx to SSE subscribers on all three edges, by sharded pub/sub on the plate's master", async () => {
    const owner = await masterOf(SHARD_CHANNEL, clusterPorts[0]!);
    const subscribers = await Promise.all(
      edges.map(async (edge) => {
        const client = await SseClient.open(`${edge}/${PLATE}/pubsub/room/subscribe`, AUTH);
        await client.waitFor("ready", 5000);
        return client;
      }),
    );
    try {
      // Each edge listens to the channel once (SSUBSCRIBE), on the master of its hash slot.
      expect(await redisReply(owner, ["PUBSUB", "SHARDNUMSUB", SHARD_CHANNEL])).toEqual([SHARD_CHANNEL, "3"]);
      // Shard messages the master sent over the cluster bus (the field is absent before the first):
      // an SPUBLISH reaches its replica that way, and no other node (a PUBLISH would reach all six).
      const shardSent = async () => Number((await clusterInfo(owner)).cluster_stats_messages_publishshard_sent ?? "0");
      const before = await shardSent();
      const res = await fetch(`${lb}/${PLATE}/pubsub/room/publish`, {
        method: "POST",
        headers: { ...AUTH, "Content-Type": "application/json" },
        body: JSON.stringify({ message: { via: "nginx", on: "cluster" } }),
      });
      expect(res.status).toBe(200);
      expect(await eventually(() => subscribers.every((s) => s.messages.length === 1), 5000)).toBe(true);
      for (const s of subscribers)
        expect(s.messages[0]).toMatchObject({
          type: "message",
          channel: "room",
          message: { via: "nginx", on: "cluster" },
        });
      expect(await eventually(async () => (await shardSent()) > before, 5000)).toBe(true);
    } finally {
      for (const s of subscribers) s.close();
    }
  });

  // Last: it stops the topology.
  it("is stopped whole by down.sh, the cluster's six redis-servers included", async () => {
    const started = (await readFile(join(dir, "pids"), "utf8"))
      .trim()
      .split("\n")
      .map((line) => line.split(" ") as [string, string]);
    expect(started.filter(([, name]) => name.startsWith("redis-"))).toHaveLength(CLUSTER_NODES);
    await down(env);
    const alive = started.filter(([pid]) => {
      try {
        // Signal 0 only asks whether the process exists.
        process.kill(Number(pid), 0);
        return true;
      } catch {
        return false;
      }
    });
    expect(alive).toEqual([]);
    expect(await Promise.all(clusterPorts.map(isFree))).toEqual(clusterPorts.map(() => true));
  });
});
