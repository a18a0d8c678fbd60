import { randomBytes } from "node:crypto";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { ChannelName, PlateId } from "@plate/protocol";
import { startRedisSentinel } from "@plate/testing";
import type { RedisSentinelSetup } from "@plate/testing";
import { RETENTION, exact, message, runBrokerContract } from "./broker.contract.js";
import { redisBrokers, until } from "./test-support/redis-brokers.js";

/** How long a primary, its replica and three sentinels may take to start and see each other. */
const SENTINEL_START_TIMEOUT_MS = 30_000;

let setup: RedisSentinelSetup;
beforeAll(async () => {
  setup = await startRedisSentinel();
}, SENTINEL_START_TIMEOUT_MS);
afterAll(async () => {
  await setup.stop();
});

const brokers = redisBrokers(() => ({ kind: "sentinel", sentinels: setup.sentinels, masterName: setup.masterName }));
afterEach(() => brokers.closeAll());
const readyBroker = brokers.ready;

runBrokerContract("redis sentinel", () => {
  const keyPrefix = `t${randomBytes(4).toString("hex")}:`;
  return Promise.resolve({ node: () => readyBroker({ keyPrefix }), close: () => Promise.resolve() });
});

describe("RedisBroker through Sentinel", () => {
  it("follows a failover: publishes reach the new primary, subscribers are told of the gap and the history holds what they missed", async () => {
    const publisher = await readyBroker();
    const subscriber = await readyBroker();
    const phases: string[] = [];
    subscriber.onGap((phase) => phases.push(phase));
    const got: string[] = [];
    await subscriber.subscribe(exact("acme", "alerts"), (m) => got.push(m.body));
    const { message: before } = await publisher.publish(message("acme", "alerts", "before"));
    expect(await until(() => got.includes("before"))).toBe(true);
    const old = await setup.primary();

    await setup.failover();
    const now = await setup.primary();
    expect(now.port).not.toBe(old.port);
    // Publishing goes on on the new primary (a publish refused meanwhile answers broker_unavailable).
    await retried(() => publisher.publish(message("acme", "alerts", "after")));
    expect(await until(() => phases.includes("restored"), 10_000)).toBe(true);
    // Each sentinel announces the switch: the subscriber may reconnect more than once, each cut
    // followed by its restore (and each restore filled from the history).
    expect(phases).toEqual(Array.from({ length: phases.length }, (_, i) => (i % 2 === 0 ? "cut" : "restored")));
    // The subscriber's command connection reconnects on its own, and may do so again after its
    // delivery was restored (a later sentinel's announcement): a read meanwhile is refused the same way.
    const replay = await retried(() => subscriber.history("acme" as PlateId, "alerts" as ChannelName, before.id, RETENTION));
    expect(replay.complete && replay.messages.map((m) => m.body)).toEqual(["after"]);
    await publisher.publish(message("acme", "alerts", "later"));
    expect(await until(() => got.includes("later"))).toBe(true);
  }, 30_000);
});

/** `call`'s answer, called again every 50 ms while it is refused with `broker_unavailable`, for at most 10 s. */
async function retried<T>(call: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const outcome = await call().catch((e: unknown) => e);
    if (!(outcome instanceof Error)) return outcome as T;
    expect((outcome as { code?: string }).code).toBe("broker_unavailable");
    expect(Date.now()).toBeLessThan(deadline);
    await new Promise((r) => setTimeout(r, 50));
  }
}
