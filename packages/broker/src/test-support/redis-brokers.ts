import { randomBytes } from "node:crypto";
import { expect } from "vitest";
import type { MessageId } from "@plate/protocol";
import type { RedisTarget } from "@plate/redis";
import { RedisBroker } from "../redis-broker.js";
import type { RedisBrokerOptions } from "../redis-broker.js";

/** Polls `check` every 10 ms until it holds; false if it did not within `timeoutMs`. */
export async function until(check: () => boolean, timeoutMs = 5000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 10));
  }
  return true;
}

let ids = 0;

/**
 * Redis brokers of one test file on the Redis `target()` names (read when each is made: the
 * server starts in `beforeAll`): quick reconnects, probes off unless asked, ids for foreign
 * payloads counted. `closeAll` (in `afterEach`) closes what was made.
 */
export function redisBrokers(target: () => RedisTarget) {
  const made: RedisBroker[] = [];
  const make = (overrides: Partial<RedisBrokerOptions> = {}): RedisBroker => {
    const broker = new RedisBroker({
      target: target(),
      keyPrefix: "plate:",
      commandTimeoutMs: 1000,
      reconnectMaxMs: 200,
      probeIntervalMs: 60_000,
      probeTimeoutMs: 1000,
      clusterRefreshMs: 500,
      nodeId: randomBytes(6).toString("hex"),
      newMessageId: () => `f${++ids}` as MessageId,
      ...overrides,
    });
    made.push(broker);
    return broker;
  };
  return {
    /** A broker, ready or not. */
    make,
    /** A broker once it is ready (fails the test if it is not within 5 s). */
    ready: async (overrides: Partial<RedisBrokerOptions> = {}): Promise<RedisBroker> => {
      const broker = make(overrides);
      expect(await until(() => broker.isReady())).toBe(true);
      return broker;
    },
    closeAll: async (): Promise<void> => {
      for (const broker of made.splice(0)) await broker.close();
    },
  };
}
