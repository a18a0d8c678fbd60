import { Redis } from "ioredis";
import { RedisBroker } from "@plate/broker";
import type { HistoryBudget, PublishRate, PublishRequest } from "@plate/broker";
import { startRedis } from "@plate/testing";
import type { MessageId, PlateId, ChannelName } from "@plate/protocol";

/*
 * What a plate's limits cost Redis on publish (issue 17): Plate's own publish script with nothing
 * to enforce, with the plate's rate buckets to take (rates so high that nothing is refused), and
 * with the buckets and the history budget (the defaults: 10,000 channels, 64 MiB), read from
 * Redis' own `INFO commandstats` (µs per EVALSHA), alternating, on a redis-server of its own.
 *
 *   npm run build && node load-tests/dist/rate-cost.js [rounds]
 */

/** Publishes per measurement, sent 100 at a time. */
const PUBLISHES = 20_000;
const IN_FLIGHT = 100;
/** High enough that no publish is refused: the buckets are taken, never empty. */
const RATE: PublishRate = { perS: 1e8, burst: 1e8, bytesPerS: 1e9, bytesBurst: 1e9, count: 1, bytes: 40 };
const RETENTION = { count: 100, ageMs: 120_000, markTtlMs: 86_400_000 };
const BUDGET: HistoryBudget = { channels: 10_000, bytes: 64 * 1024 * 1024 };

const rounds = Number(process.argv[2] ?? 3);
const redis = await startRedis();
const broker = new RedisBroker({
  target: { kind: "standalone", url: redis.url },
  keyPrefix: "plate:",
  commandTimeoutMs: 5000,
  reconnectMaxMs: 200,
  probeIntervalMs: 60_000,
  probeTimeoutMs: 1000,
  nodeId: "rate-cost",
  newMessageId: () => "x" as MessageId,
});
const admin = new Redis(redis.url);
try {
  await new Promise((resolve) => setTimeout(resolve, 300));
  const usPerCall = async (rate: PublishRate | undefined, budget: HistoryBudget | undefined): Promise<number> => {
    await admin.config("RESETSTAT");
    for (let i = 0; i < PUBLISHES; i += IN_FLIGHT) {
      await Promise.all(
        Array.from({ length: IN_FLIGHT }, (_, j) => {
          const request: PublishRequest = {
            plateId: "p" as PlateId,
            channel: `c${(i + j) % 50}` as ChannelName,
            body: `{"n":${i + j},"pad":"xxxxxxxxxxxxxxxxxxxx"}`,
            timestamp: new Date().toISOString(),
            retention: RETENTION,
            ...(rate === undefined ? {} : { rate }),
            ...(budget === undefined ? {} : { budget }),
          };
          return broker.publish(request);
        }),
      );
    }
    const line = (await admin.info("commandstats")).split("\n").find((l) => l.startsWith("cmdstat_evalsha"));
    return Number(/usec_per_call=([\d.]+)/.exec(line ?? "")?.[1] ?? Number.NaN);
  };
  const off: number[] = [];
  const on: number[] = [];
  const all: number[] = [];
  for (let r = 0; r < rounds; r++) {
    off.push(await usPerCall(undefined, undefined));
    on.push(await usPerCall(RATE, undefined));
    all.push(await usPerCall(RATE, BUDGET));
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  console.log(`publish script, µs of Redis per call (${rounds} alternating rounds of ${PUBLISHES}):`);
  console.log(`  without rates: ${off.join(", ")} (median ${median(off)})`);
  console.log(`  with rates:    ${on.join(", ")} (median ${median(on)})`);
  console.log(`  rates, budget: ${all.join(", ")} (median ${median(all)})`);
} finally {
  await broker.close();
  admin.disconnect();
  await redis.stop();
}
