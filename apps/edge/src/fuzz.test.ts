import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort, startRedis } from "@plate/testing";
import type { RedisServer } from "@plate/testing";
import { httpCase, rawCase, rssMb, runCase, serverFault, upgradeCase, validCase } from "./test-support/fuzz.js";
import { ADMIN_TOKEN, KEYS } from "./test-support/node.js";
import { EdgeProcess } from "./test-support/process.js";

/**
 * Hostile traffic against a node as users run it (the built process, on each broker): thousands of
 * random and mangled HTTP requests, upgrade requests and WebSocket frames. The node must stay up,
 * answer `/healthz`, never answer a client's mistake with a 5xx (or a WebSocket close 1011), and
 * keep its memory bounded (its heap is capped, so a leak ends the process and fails the test).
 *
 * CI runs `FUZZ_CASES` (default 1600) cases per broker; a longer run:
 * `cd apps/edge && FUZZ_CASES=50000 npx vitest run src/fuzz.test.ts`. A failure prints the seed
 * and the shrunk case; `FUZZ_SEED=<seed>` runs the same cases again, and `FUZZ_LOG=error` prints
 * the node's `request failed` lines (what a 500 was).
 */
const CASES = Number(process.env.FUZZ_CASES ?? "1600");
const SEED = process.env.FUZZ_SEED === undefined ? undefined : Number(process.env.FUZZ_SEED);
/** Cases sent at once: several connections in flight, as real traffic has. */
const BATCH = 32;
/** The node's V8 heap cap for the run, in MB: memory that grows without bound ends the process. */
const HEAP_MB = 192;
/** Resident memory the node may reach by the end of the run, in MB. */
const MAX_RSS_MB = 400;

const anyCase = fc.oneof(
  { weight: 4, arbitrary: httpCase },
  { weight: 2, arbitrary: validCase },
  { weight: 2, arbitrary: rawCase },
  { weight: 3, arbitrary: upgradeCase },
);

describe.each(["embedded", "redis"] as const)("a node on the %s broker under hostile traffic", (broker) => {
  let redis: RedisServer | undefined;
  let node: EdgeProcess;
  let dataDir: string;

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), "plate-fuzz-"));
    if (broker === "redis") redis = await startRedis();
    node = new EdgeProcess(await freePort(), {
      ...(redis === undefined ? { DATA_DIR: dataDir, DEMO_PLATE: "false" } : { REDIS_URL: redis.url }),
      ADMIN_TOKEN,
      BOOTSTRAP_PLATES: JSON.stringify(KEYS),
      LOG_LEVEL: process.env.FUZZ_LOG ?? "silent",
      WS_AUTH_TIMEOUT_MS: "1000",
      NODE_OPTIONS: `--max-old-space-size=${HEAP_MB}`,
    });
    await node.ready();
  });

  afterAll(async () => {
    node?.kill();
    await redis?.stop();
    await rm(dataDir, { recursive: true, force: true });
  });

  it("stays up, answers /healthz, never answers 5xx to a client's mistake, and keeps its memory bounded", { timeout: 600_000 }, async () => {
    const port = node.port;
    const statuses = new Set<number>();
    await fc.assert(
      fc.asyncProperty(fc.array(anyCase, { minLength: BATCH, maxLength: BATCH }), async (cases) => {
        const outcomes = await Promise.all(cases.map((c) => runCase(port, c)));
        for (const result of outcomes) statuses.add(result.status);
        expect(node.alive, `the node exited: ${node.stderr.slice(-2000)}`).toBe(true);
        if (process.env.FUZZ_LOG !== undefined && node.stdout.includes("request failed")) console.log(node.stdout.split("\n").filter((l) => l.includes("request failed")).slice(0, 3).join("\n"));
        for (const [i, result] of outcomes.entries()) {
          const fault = serverFault(result);
          expect(fault, `case ${i} of the batch (${cases[i]!.kind})`).toBeUndefined();
        }
      }),
      { numRuns: Math.ceil(CASES / BATCH), ...(SEED === undefined ? {} : { seed: SEED }), endOnFailure: true },
    );
    expect(node.alive, node.stderr.slice(-2000)).toBe(true);
    // The traffic reached every layer: the HTTP parser, routing, keys, publishes, streams, WebSockets.
    for (const status of [101, 200, 400, 401, 404]) expect(statuses, `no case was answered ${status} (answers: ${[...statuses].sort().join(", ")})`).toContain(status);
    const health = await fetch(`${node.url}/healthz`);
    expect(health.status).toBe(200);
    // A valid publish still works after all of it.
    const publish = await fetch(`${node.url}/acme/pubsub/after-fuzz/publish`, {
      method: "POST",
      headers: { Authorization: `Bearer ${KEYS.acme}`, "Content-Type": "application/json" },
      body: JSON.stringify({ message: "still here" }),
    });
    expect(publish.status).toBe(200);
    expect(await rssMb(node.child.pid!)).toBeLessThan(MAX_RSS_MB);
  });
});
