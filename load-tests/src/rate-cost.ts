import { Redis } from "ioredis";
import { RedisBroker } from "@plate/broker";
import type { HistoryBudget, PublishRate, PublishRequest } from "@plate/broker";
import { startRedis } from "@plate/testing";
import type { MessageId, PlateId, ChannelName } from "@plate/protocol";

/*
 * What a publish costs Redis (issues 17 and 18): Plate's own publish script with nothing to
 * enforce, with the plate's rate buckets to take (rates so high that nothing is refused), and with
 * the buckets and the history budget (the defaults: 10,000 channels, 64 MiB), read from Redis' own
 * `INFO commandstats` (µs inside EVALSHA, divided by the publishes), alternating, on a
 * redis-server of its own. Publishes go 100 at a time to 50 channels in turn, so the broker sends
 * them in scripts of up to 64 (group commit, as under load) but no two in a row share a channel;
 * the last lines send them all to one channel (as W3 does), and one at a time (one per script,
 * as when a plate is quiet).
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
  const usPerPublish = async (rate: PublishRate | undefined, budget: HistoryBudget | undefined, inFlight = IN_FLIGHT, channels = 50): Promise<number> => {
    await admin.config("RESETSTAT");
    const publishes = inFlight === 1 ? PUBLISHES / 4 : PUBLISHES;
    for (let i = 0; i < publishes; i += inFlight) {
      await Promise.all(
        Array.from({ length: inFlight }, (_, j) => {
          const request: PublishRequest = {
            plateId: "p" as PlateId,
            channel: `c${(i + j) % channels}` as ChannelName,
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
    return Math.round((Number(/usec=(\d+)/.exec(line ?? "")?.[1] ?? Number.NaN) / publishes) * 10) / 10;
  };
  const off: number[] = [];
  const on: number[] = [];
  const all: number[] = [];
  const alone: number[] = [];
  const oneChannel: number[] = [];
  for (let r = 0; r < rounds; r++) {
    off.push(await usPerPublish(undefined, undefined));
    on.push(await usPerPublish(RATE, undefined));
    all.push(await usPerPublish(RATE, BUDGET));
    alone.push(await usPerPublish(RATE, BUDGET, 1));
    oneChannel.push(await usPerPublish(RATE, BUDGET, IN_FLIGHT, 1));
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  console.log(`publish script, µs of Redis per publish (${rounds} alternating rounds of ${PUBLISHES}, ${IN_FLIGHT} in flight):`);
  console.log(`  without rates: ${off.join(", ")} (median ${median(off)})`);
  console.log(`  with rates:    ${on.join(", ")} (median ${median(on)})`);
  console.log(`  rates, budget: ${all.join(", ")} (median ${median(all)})`);
  console.log(`  rates, budget, all to one channel (as W3): ${oneChannel.join(", ")} (median ${median(oneChannel)})`);
  console.log(`  rates, budget, one at a time (${PUBLISHES / 4}): ${alone.join(", ")} (median ${median(alone)})`);
} finally {
  await broker.close();
  admin.disconnect();
  await redis.stop();
}
