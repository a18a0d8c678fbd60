import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort, startRedis } from "@plate/testing";
import type { RedisServer } from "@plate/testing";
import { KEYS, eventually, publish } from "./test-support/node.js";
import { EdgeProcess, redisNodeEnv } from "./test-support/process.js";

/**
 * `BOOTSTRAP_PLATES` on a Redis that loses everything: a node process (`node dist/main.js`) on a
 * private redis-server without persistence, which is restarted empty.
 */

/** How soon after Redis is back the bootstrapped key must work again. */
const BACK_WITHIN_MS = 5000;
/** How often the node is sampled while it comes back. */
const SAMPLE_MS = 20;
/** How long the node is watched after the key works again: it must keep working. */
const STAYS_MS = 1500;

let redis: RedisServer;
let node: EdgeProcess;

async function readyz(): Promise<number> {
  return (await fetch(`${node.url}/readyz`)).status;
}

describe.skipIf((process.env.REDIS_URL ?? "") !== "")("BOOTSTRAP_PLATES on a Redis restarted empty", () => {
  beforeAll(async () => {
    redis = await startRedis();
    // No key cache: every publish asks the store whether the key exists.
    node = new EdgeProcess(await freePort(), { ...redisNodeEnv(redis.url), KEY_CACHE_MS: "0" });
    await node.ready();
    expect(await eventually(async () => (await readyz()) === 200, 5000)).toBe(true);
  }, 20_000);

  afterAll(async () => {
    node?.kill();
    await redis?.stop();
  });

  for (const attempt of [1, 2, 3]) {
    it(`provisions them again within seconds, and is not ready while the key does not work (restart ${attempt})`, async () => {
      expect((await publish(node.url, "acme", "boot", "before")).status).toBe(200);
      await redis.restart();
      const back = Date.now();
      // Sample readiness, then a publish with the bootstrapped key: once /readyz says 200 the key
      // works (a 200 followed by a 401 means the node said ready while it was not).
      const samples: [ready: number, publish: number][] = [];
      let workedAt: number | undefined;
      while (Date.now() - back < BACK_WITHIN_MS && (workedAt === undefined || Date.now() - workedAt < STAYS_MS)) {
        const ready = await readyz();
        const status = (await publish(node.url, "acme", "boot", "after", KEYS.acme)).status;
        samples.push([ready, status]);
        if (status === 200) workedAt ??= Date.now();
        await new Promise((r) => setTimeout(r, SAMPLE_MS));
      }
      const report = `samples [readyz, publish]: ${JSON.stringify(samples)}`;
      expect(workedAt, report).toBeDefined();
      expect(samples.filter(([ready, status]) => ready === 200 && status !== 200), report).toEqual([]);
      // Once it worked, it kept working.
      expect(samples.slice(samples.findIndex(([, status]) => status === 200)).every(([, status]) => status === 200), report).toBe(true);
      expect(await readyz()).toBe(200);
      expect((await publish(node.url, "globex", "boot", "after", KEYS.globex)).status).toBe(200);
    }, 20_000);
  }
});
