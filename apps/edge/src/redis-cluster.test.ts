import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { keySlot } from "@plate/redis";
import { freePort, startRedisCluster } from "@plate/testing";
import type { ClusterNode, RedisCluster } from "@plate/testing";
import { adminCall } from "./test-support/admin.js";
import { mintToken } from "./test-support/calls.js";
import { eventually, publish } from "./test-support/node.js";
import { EdgeProcess, redisNodeEnv } from "./test-support/process.js";
import { SseClient } from "./test-support/sse.js";
import { WsClient } from "./test-support/ws.js";

/**
 * Three edge node processes (`node dist/main.js`, as users run them) on a real Redis Cluster of
 * three masters, each with a replica: they must behave as one service, publish through sharded
 * pub/sub only, and lose nothing silently when a master dies or a slot moves.
 */

/** Messages each publisher sends per plate in the delivery test. */
const MESSAGES_PER_PUBLISHER = 200;
/** How long a cluster of six servers may take to form. */
const CLUSTER_START_TIMEOUT_MS = 30_000;

let cluster: RedisCluster;
const nodes: EdgeProcess[] = [];
/** A plate on each master (its secret), made through the admin API. */
const plates = new Map<string, string>();

beforeAll(async () => {
  cluster = await startRedisCluster({ masters: 3, replicasPerMaster: 1 });
  const env: Record<string, string> = redisNodeEnv("");
  delete env.REDIS_URL;
  for (let i = 0; i < 3; i++) {
    const node = new EdgeProcess(await freePort(), {
      ...env,
      REDIS_CLUSTER_NODES: cluster.seeds.join(","),
      REDIS_CLUSTER_REFRESH_MS: "500",
      // Probes publish too: long, so the bus counters below count only what the tests publish.
      REDIS_PROBE_INTERVAL_MS: "600000",
    });
    nodes.push(node);
    await node.ready();
  }
  for (const node of nodes) expect(await eventually(async () => (await fetch(`${node.url}/readyz`)).status === 200, 10_000)).toBe(true);
  const owners = new Set<string>();
  for (let i = 0; owners.size < 3; i++) {
    const id = `shard${i}`;
    const owner = (await cluster.nodeForSlot(keySlot(id))).id;
    if (owners.has(owner)) continue;
    owners.add(owner);
    const made = await adminCall(nodes[i % 3]!.url, "POST", "/admin/plates", { body: { id } });
    expect(made.status, made.text).toBe(201);
    plates.set(id, made.body.data.key.secret as string);
  }
}, CLUSTER_START_TIMEOUT_MS + 30_000);

afterAll(async () => {
  for (const node of nodes) node.kill();
  await cluster?.stop();
});

function auth(key: string): Record<string, string> {
  return { Authorization: `Bearer ${key}` };
}

function sseMessages(client: SseClient): any[] {
  return client.events.filter((e) => e.event === "message").map((e) => JSON.parse(e.data));
}

/** Classic PUBLISH messages the cluster bus carried, summed over the masters. */
async function classicBusPublishes(): Promise<number> {
  let sum = 0;
  for (const node of await cluster.masters()) sum += Number((await cluster.clusterInfo(node)).cluster_stats_messages_publish_sent ?? 0);
  return sum;
}

/** The plate held by the master `node`, with its secret. */
async function plateOn(node: ClusterNode): Promise<[string, string]> {
  for (const [id, secret] of plates) if ((await cluster.nodeForSlot(keySlot(id))).id === node.id) return [id, secret];
  throw new Error(`no plate on ${node.port}`);
}

/**
 * Publishes `body` until one is accepted, through `node`: a master that died answers 503 until
 * its replica is promoted. Answers the accepted message's id.
 */
async function publishUntilAccepted(url: string, plate: string, key: string, channel: string, body: unknown): Promise<string> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const res = await publish(url, plate, channel, body, key);
    if (res.status === 200) return res.body.data.id as string;
    expect(res.status, JSON.stringify(res.body)).toBe(503);
    expect(res.body.error.code).toBe("broker_unavailable");
    if (Date.now() > deadline) throw new Error("no publish accepted within 20 s");
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe("three edge nodes on a three-master Redis Cluster", () => {
  it("delivers every message exactly once, in each publisher's order, exact and pattern, SSE and WebSocket, for plates on every master, with no classic PUBLISH on the cluster bus", async () => {
    const sse: SseClient[] = [];
    const ws: WsClient[] = [];
    const byPlate = new Map<string, (SseClient | WsClient)[]>();
    for (const [plate, key] of plates) {
      const clients: (SseClient | WsClient)[] = [];
      for (const n of nodes) {
        for (const path of [`/${plate}/pubsub/feed/subscribe`, `/${plate}/pubsub/f*/subscribe?pattern=true`]) {
          const client = await SseClient.open(n.url + path, auth(key));
          await client.waitFor("ready");
          sse.push(client);
          clients.push(client);
        }
        const client = await WsClient.connect(`${n.url.replace("http", "ws")}/${plate}/pubsub/feed/ws`, { auth: key });
        await client.waitFor("ready");
        ws.push(client);
        clients.push(client);
      }
      byPlate.set(plate, clients);
    }
    try {
      const busBefore = await classicBusPublishes();
      await Promise.all(
        [...plates].flatMap(([plate, key]) =>
          nodes.map(async (n, p) => {
            for (let seq = 0; seq < MESSAGES_PER_PUBLISHER; seq++) {
              const res = await publish(n.url, plate, "feed", { p, seq }, key);
              if (res.status !== 200) throw new Error(`publish ${plate} ${p}/${seq}: ${res.status} ${JSON.stringify(res.body)}`);
            }
          }),
        ),
      );
      const total = nodes.length * MESSAGES_PER_PUBLISHER;
      const count = (c: SseClient | WsClient) => (c instanceof WsClient ? c.messages.length : sseMessages(c).length);
      expect(await eventually(() => [...sse, ...ws].every((c) => count(c) >= total), 20_000)).toBe(true);
      await new Promise((r) => setTimeout(r, 200));
      for (const [plate, clients] of byPlate) {
        for (const client of clients) {
          const received = client instanceof WsClient ? client.messages : sseMessages(client);
          expect(received).toHaveLength(total);
          expect(new Set(received.map((m: any) => m.id)).size).toBe(total);
          for (let p = 0; p < nodes.length; p++) {
            const seqs = received.filter((m: any) => m.message.p === p).map((m: any) => m.message.seq);
            expect(seqs, plate).toEqual(Array.from({ length: MESSAGES_PER_PUBLISHER }, (_, i) => i));
          }
        }
      }
      expect(await classicBusPublishes()).toBe(busBefore);
    } finally {
      for (const c of sse) c.close();
      for (const c of ws) c.close();
    }
  }, 90_000);

  it("lets exactly 3 of 60 concurrent connects over 3 nodes use a max_uses=3 token, for a plate on each master", async () => {
    for (const [plate, key] of plates) {
      const minted = await mintToken(nodes[0]!.url, plate, "tokens", { max_uses: "3" }, key);
      expect(minted.status).toBe(200);
      const path: string = minted.body.data.path;
      const clients = await Promise.all(Array.from({ length: 60 }, (_, i) => SseClient.open(nodes[i % 3]!.url + path)));
      try {
        const statuses = clients.map((c) => c.status);
        expect(statuses.filter((s) => s === 200)).toHaveLength(3);
        expect(statuses.filter((s) => s === 410)).toHaveLength(57);
      } finally {
        for (const c of clients) c.close();
      }
    }
  });

  it("moves a plate's slot to another master under publish: a subscriber on another node misses nothing, duplicates nothing", async () => {
    const masters = await cluster.masters();
    // Not the first seed's master: the store's revocation subscriber may sit there.
    const from = masters.find((m) => m.port !== cluster.nodes[0]!.port)!;
    const to = masters.find((m) => m.id !== from.id)!;
    const [plate, key] = await plateOn(from);
    const sub = await SseClient.open(`${nodes[2]!.url}/${plate}/pubsub/moving/subscribe`, auth(key));
    await sub.waitFor("ready");
    try {
      const accepted: string[] = [];
      let publishing = true;
      const publisher = (async () => {
        for (let seq = 0; publishing; seq++) accepted.push(await publishUntilAccepted(nodes[1]!.url, plate, key, "moving", seq));
      })();
      await eventually(() => accepted.length >= 50, 5000);
      await cluster.migrateSlot(keySlot(plate), from, to);
      const moved = accepted.length;
      await eventually(() => accepted.length >= moved + 100, 10_000);
      publishing = false;
      await publisher;
      const received = await eventually(() => sseMessages(sub).length >= accepted.length, 10_000);
      // On a miss, which ids, what the stream said besides messages and what the subscriber's node
      // warned of (a rare failure seen twice under CI load: a reset "gap" after the move).
      const got = new Set(sseMessages(sub).map((m) => m.id as string));
      const missed = accepted.filter((id) => !got.has(id));
      const others = sub.events.filter((e) => e.event !== "message").map((e) => `${e.event}: ${e.data}`);
      const warned = nodes[2]!.stdout.split("\n").filter((line) => line.includes('"level":"warn"'));
      expect(received, JSON.stringify({ accepted: accepted.length, moved, missed: missed.slice(0, 20), others, warned: warned.slice(-10) })).toBe(true);
      await new Promise((r) => setTimeout(r, 200));
      expect(sub.events.filter((e) => e.event === "reset")).toEqual([]);
      expect(sseMessages(sub).map((m) => m.id)).toEqual(accepted);
      expect((await cluster.nodeForSlot(keySlot(plate))).id).toBe(to.id);
    } finally {
      sub.close();
    }
  }, 60_000);

  it("answers 503 only for the plates of a master that died, stays ready, and fills its subscribers once a replica took over", async () => {
    // A plate whose master is not the first seed (the store's revocation subscriber may sit there),
    // and one on another master.
    let doomed: ClusterNode | undefined;
    let doomedPlate: [string, string] | undefined;
    let other: [string, string] | undefined;
    for (const entry of plates) {
      const owner = await cluster.nodeForSlot(keySlot(entry[0]));
      if (doomed === undefined && owner.port !== cluster.nodes[0]!.port) [doomed, doomedPlate] = [owner, entry];
    }
    for (const entry of plates) if ((await cluster.nodeForSlot(keySlot(entry[0]))).id !== doomed!.id) other = entry;
    const [plate, key] = doomedPlate!;
    const [otherPlate, otherKey] = other!;
    const subs = await Promise.all(nodes.map((n) => SseClient.open(`${n.url}/${plate}/pubsub/alerts/subscribe`, auth(key))));
    for (const s of subs) await s.waitFor("ready");
    try {
      const accepted = [await publishUntilAccepted(nodes[0]!.url, plate, key, "alerts", "before")];
      // Its replica has it (replication is asynchronous: else the history may not survive).
      await cluster.waitForReplicas(doomed!);
      await cluster.kill(doomed!);
      const refused = await publish(nodes[1]!.url, plate, "alerts", "refused", key);
      expect(refused.status).toBe(503);
      expect(refused.body.error.code).toBe("broker_unavailable");
      // The other masters' plates publish and every node stays ready.
      const fine = await publish(nodes[1]!.url, otherPlate, "alerts", "fine", otherKey);
      expect(fine.status, JSON.stringify(fine.body)).toBe(200);
      for (const n of nodes) expect((await fetch(`${n.url}/readyz`)).status).toBe(200);
      // Publishing goes on as soon as the replica is promoted; every subscriber gets each accepted
      // message once, in order: those its node missed while resubscribing come from the history.
      for (let i = 0; i < 20; i++) accepted.push(await publishUntilAccepted(nodes[i % 3]!.url, plate, key, "alerts", i));
      await cluster.waitForState("ok");
      for (const s of subs) {
        expect(await eventually(() => sseMessages(s).length >= accepted.length, 10_000)).toBe(true);
        expect(s.events.filter((e) => e.event === "reset")).toEqual([]);
        expect(sseMessages(s).map((m) => m.id)).toEqual(accepted);
      }
    } finally {
      for (const s of subs) s.close();
      await cluster.restart(doomed!);
    }
  }, 60_000);
});
