import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { startRedis, startRedisPair, startTcpProxy, whileOutOfMemory } from "@plate/testing";
import { loadConfig } from "./config.js";
import { createLogger } from "./log.js";
import { startEdge } from "./node.js";
import type { EdgeNode } from "./node.js";
import { ADMIN_TOKEN, KEYS, eventually, publish } from "./test-support/node.js";
import { SseClient } from "./test-support/sse.js";

/**
 * Redis reachable but refusing commands: out of memory, or demoted to a replica by a failover. A
 * node says what happened, logs it at warn, and works again without a restart once Redis does.
 */

/** How soon a node publishes again once Redis takes writes. */
const BACK_WITHIN_MS = 5000;

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** A node on `redisUrl`, its log lines collected. */
async function startNode(redisUrl: string): Promise<{ node: EdgeNode; logs: any[] }> {
  const dataDir = await mkdtemp(join(tmpdir(), "plate-test-"));
  const logs: any[] = [];
  const config = loadConfig({
    PORT: "0",
    HOST: "127.0.0.1",
    DATA_DIR: dataDir,
    REDIS_URL: redisUrl,
    REDIS_RECONNECT_MAX_MS: "100",
    ADMIN_TOKEN,
    BOOTSTRAP_PLATES: JSON.stringify(KEYS),
  });
  const node = await startEdge(config, { log: createLogger("warn", (line) => logs.push(JSON.parse(line))) });
  cleanups.push(async () => {
    await node.close();
    await rm(dataDir, { recursive: true, force: true });
  });
  expect(await eventually(async () => (await fetch(`${node.url}/readyz`)).status === 200, 5000)).toBe(true);
  return { node, logs };
}

async function publishesWithin(url: string, timeoutMs: number): Promise<boolean> {
  return eventually(async () => (await publish(url, "acme", "refusals", "again")).status === 200, timeoutMs);
}

describe.skipIf((process.env.REDIS_URL ?? "") !== "")("a node whose Redis refuses commands", () => {
  it("answers a publish with 503 broker_unavailable naming OOM while Redis is out of memory, warns naming it, and publishes again once memory is freed", async () => {
    const redis = await startRedis();
    cleanups.push(() => redis.stop());
    const { node, logs } = await startNode(redis.url);

    const { res, body } = await whileOutOfMemory(redis.port, async () => {
      const res = await fetch(`${node.url}/acme/pubsub/refusals/publish`, {
        method: "POST",
        headers: { Authorization: `Bearer ${KEYS.acme}`, "Content-Type": "application/json" },
        body: '{"message":"too much"}',
      });
      return { res, body: (await res.json()) as any };
    });
    expect(res.status).toBe(503);
    expect(res.headers.get("retry-after")).toBe("1");
    expect(body.error.code).toBe("broker_unavailable");
    expect(body.error.message).toMatch(/OOM/);
    expect(logs.some((line) => line.level === "warn" && line.redisError === "OOM")).toBe(true);
    expect(await publishesWithin(node.url, BACK_WITHIN_MS)).toBe(true);
  });

  it("publishes again without a restart after a failover demoted its Redis to a replica (READONLY), and its subscribers receive", async () => {
    const pair = await startRedisPair();
    cleanups.push(() => pair.stop());
    const proxy = await startTcpProxy(pair.a.port);
    cleanups.push(() => proxy.close());
    const { node, logs } = await startNode(`redis://127.0.0.1:${proxy.port}`);
    const sse = await SseClient.open(`${node.url}/acme/pubsub/refusals/subscribe`, { Authorization: `Bearer ${KEYS.acme}` });
    cleanups.push(() => Promise.resolve(sse.close()));
    await sse.waitFor("ready");
    expect((await publish(node.url, "acme", "refusals", "before")).status).toBe(200);

    // The address the node uses now names the new primary; its connections stay with the old one.
    await pair.failover();
    proxy.retarget(pair.b.port);
    const refused = await publish(node.url, "acme", "refusals", "refused");
    expect(refused.status).toBe(503);
    expect(refused.body.error.code).toBe("broker_unavailable");
    // The broker's script meets READONLY, unless the node's store met it first (its connection
    // report writes every second) and is reconnecting to the new primary when the publish reads
    // the plate's settings: then the store is briefly unreachable. Either is a 503 to retry.
    expect(refused.body.error.message).toMatch(/READONLY|unreachable/);
    expect(await eventually(() => logs.some((line) => line.level === "warn" && line.redisError === "READONLY"), BACK_WITHIN_MS)).toBe(true);

    expect(await publishesWithin(node.url, BACK_WITHIN_MS)).toBe(true);
    // The store writes again too (minting a client token writes it; its first write may still meet READONLY).
    const mint = async () =>
      (await fetch(`${node.url}/acme/pubsub/refusals/client`, { headers: { Authorization: `Bearer ${KEYS.acme}` } })).status;
    expect(await eventually(async () => (await mint()) === 200, BACK_WITHIN_MS)).toBe(true);
    expect((await publish(node.url, "acme", "refusals", "after")).status).toBe(200);
    expect(await eventually(() => sse.messages.some((m) => m.message === "after"), BACK_WITHIN_MS)).toBe(true);
  }, 20_000);
});
