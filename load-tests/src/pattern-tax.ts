import { Redis } from "ioredis";
import { redisReply, startRedis } from "@plate/testing";
import { HttpPublisher } from "./http-publisher.js";
import { encodePayload } from "./payload.js";
import { delta, readCounters } from "./redis-counters.js";
import { tracked } from "./running.js";
import { startPlate } from "./servers.js";
import { RunStats } from "./stats.js";
import type { Step } from "./stats.js";
import { Subscriber } from "./subscriber.js";
import { plateTarget } from "./targets.js";
import type { Target } from "./targets.js";
import { inBatches, sourceAddress } from "./workload.js";

/*
 * The pattern tax: what pattern subscriptions of one plate cost Redis on every publish of another.
 *
 * Plate now: a node with pattern subscribers of a plate SUBSCRIBEs that plate's plate-wide channel
 * and matches the patterns itself, so the patterns of `quiet` should cost `busy`'s publishes
 * nothing. Before: each distinct pattern was a PSUBSCRIBE, and Redis matches every PUBLISH's
 * channel against every pattern any client holds. The "before" figures come from raw PSUBSCRIBE
 * connections and raw PUBLISHes on a Redis of their own: the tax stays in a Redis that has held
 * patterns until it restarts, so each case gets a fresh redis-server.
 */

const BUSY = "busy";
const QUIET = "quiet";
const KEYS = { [BUSY]: "busy-secret-0123456789abcdefghij", [QUIET]: "quiet-secret-0123456789abcdefghij" };
/** Patterns per route-9 connection: `MAX_SUBSCRIPTIONS_PER_CONNECTION`'s default, so no setting changes. */
const PATTERNS_PER_CONNECTION = 200;
/** Route-9 connections opened at once. */
const OPEN_CONCURRENCY = 10;
/** Concurrent publishers to `busy`. */
const PUBLISHERS = 4;
/** Publishes to `busy` before measuring: the script loaded, the key cached. */
const WARM_PUBLISHES = 200;
/** Raw PUBLISHes per pipeline in the "before" reference. */
const RAW_PIPELINE = 100;
/** Raw PUBLISH payload, in bytes. */
const RAW_PAYLOAD_BYTES = 100;
/** Patterns per PSUBSCRIBE command in the "before" reference. */
const RAW_PSUBSCRIBE_BATCH = 1000;

export interface PatternTaxOptions {
  /** Pattern subscriptions held, one case each, e.g. [0, 1000, 10000]. */
  readonly patternCounts: readonly number[];
  /** Times every case is run. */
  readonly runs: number;
  /** Publishes of `busy` measured per case. */
  readonly publishes: number;
  /** How long the raw PUBLISH loop runs at least, in ms (and at least `publishes` PUBLISHes). */
  readonly rawMinMs: number;
  /** The CPU every redis-server is pinned to. */
  readonly redisCpu: number;
  /** The CPU the edge is pinned to. */
  readonly edgeCpu: number;
  /** More settings of the edge (`--edge-env`). */
  readonly edgeEnv: Readonly<Record<string, string>>;
}

/** Plate now: `busy`'s publishes while `quiet` holds the patterns, on one edge and one Redis. */
export interface PlateCase {
  readonly patterns: number;
  readonly publishes: number;
  readonly failed: number;
  readonly evalshaCalls: number;
  readonly evalshaUsPerCall: number;
  /** PUBLISH calls per publish (the script PUBLISHes the channel and the plate-wide channel). */
  readonly publishCallsPerPublish: number;
  readonly publishUsPerCall: number;
  /** CPU of the redis-server process per publish (`INFO cpu` delta / publishes), in µs. */
  readonly redisCpuUsPerPublish: number;
  /** `PUBSUB NUMPAT` while the patterns were held: 0 when no PSUBSCRIBE is used. */
  readonly numpat: number;
  /** `PUBSUB NUMSUB` of `quiet`'s plate-wide channel: 1 (the edge) while it holds patterns. */
  readonly plateWideSubscribers: number;
  /** How long opening the pattern subscriptions took, in s. */
  readonly setupS: number;
  /** Whether a message of `quiet` on a channel only the last pattern matches reached its subscriber. */
  readonly lastPatternDelivers: boolean;
  /** Every command Redis ran meanwhile (the harness' INFO included), calls per publish. */
  readonly commandsPerPublish: Readonly<Record<string, number>>;
}

/** Before: raw PUBLISHes of 100 bytes while one connection holds `patterns` PSUBSCRIBE patterns. */
export interface RawCase {
  readonly patterns: number;
  readonly publishes: number;
  readonly publishUsPerCall: number;
  readonly redisCpuUsPerPublish: number;
  readonly numpat: number;
}

export interface PatternTaxCase {
  readonly run: number;
  readonly plate: PlateCase;
  readonly raw: RawCase;
}

/** Runs every case, each on a fresh redis-server (and edge). */
export async function runPatternTax(
  options: PatternTaxOptions,
  log: (line: string) => void,
): Promise<PatternTaxCase[]> {
  const cases: PatternTaxCase[] = [];
  for (let run = 1; run <= options.runs; run++) {
    for (const patterns of options.patternCounts) {
      const plate = await plateCase(patterns, options);
      log(
        `run ${run} pattern tax, Plate now, ${patterns} patterns: EVALSHA ${plate.evalshaUsPerCall.toFixed(1)} µs/call, Redis CPU ${plate.redisCpuUsPerPublish.toFixed(1)} µs/publish, NUMPAT ${plate.numpat}, last pattern delivers: ${plate.lastPatternDelivers}`,
      );
      const raw = await rawCase(patterns, options);
      log(
        `run ${run} pattern tax, raw PSUBSCRIBE, ${patterns} patterns: PUBLISH ${raw.publishUsPerCall.toFixed(2)} µs/call, Redis CPU ${raw.redisCpuUsPerPublish.toFixed(2)} µs/publish`,
      );
      cases.push({ run, plate, raw });
    }
  }
  return cases;
}

async function plateCase(patterns: number, options: PatternTaxOptions): Promise<PlateCase> {
  const redis = tracked(await startRedis({ fromEnv: false, cpu: options.redisCpu }));
  const subscribers: Subscriber[] = [];
  const publishers: HttpPublisher[] = [];
  try {
    const edge = tracked(
      await startPlate({
        cpu: options.edgeCpu,
        redisUrl: redis.url,
        plate: BUSY,
        key: KEYS[BUSY],
        env: { ...options.edgeEnv, BOOTSTRAP_PLATES: JSON.stringify(KEYS) },
      }),
    );
    try {
      const target = (plate: typeof BUSY | typeof QUIET) => plateTarget({ name: "plate-redis", port: edge.port, plate, key: KEYS[plate], pids: [edge.pid] });
      const busy = target(BUSY);
      const quiet = target(QUIET);
      const started = performance.now();
      const stats = new RunStats();
      const step = stats.begin(0, started);
      subscribers.push(...(await holdPatterns(quiet, patterns, stats)));
      const setupS = (performance.now() - started) / 1000;
      const lastPatternDelivers =
        patterns === 0 || (await delivers(quiet, `p${patterns - 1}:check`, subscribers, step));
      const numpat = Number(await redisReply(redis.port, ["PUBSUB", "NUMPAT"]));
      const numsub = (await redisReply(redis.port, ["PUBSUB", "NUMSUB", `plate:${QUIET}#`])) as readonly string[];

      publishers.push(...Array.from({ length: PUBLISHERS }, () => new HttpPublisher(busy, sourceAddress())));
      await publishSpread(publishers, WARM_PUBLISHES);
      const before = await readCounters(redis.port);
      const { accepted, failed } = await publishSpread(publishers, options.publishes);
      const d = delta(before, await readCounters(redis.port));
      return {
        patterns,
        publishes: accepted,
        failed,
        evalshaCalls: d.calls("evalsha"),
        evalshaUsPerCall: d.usecPerCall("evalsha"),
        publishCallsPerPublish: d.calls("publish") / accepted,
        publishUsPerCall: d.usecPerCall("publish"),
        redisCpuUsPerPublish: d.cpuUs / accepted,
        numpat,
        plateWideSubscribers: Number(numsub[1] ?? 0),
        setupS,
        lastPatternDelivers,
        commandsPerPublish: Object.fromEntries(
          Object.entries(d.allCalls).map(([command, calls]) => [command, calls / accepted]),
        ),
      };
    } finally {
      for (const p of publishers) p.close();
      for (const s of subscribers) s.close();
      await edge.stop();
    }
  } finally {
    await redis.stop();
  }
}

/**
 * Holds `count` distinct pattern subscriptions of `target`'s plate (`p0:*`, `p1:*`, ...) on
 * route-9 SSE connections of `PATTERNS_PER_CONNECTION` each, opened with the patterns in the query;
 * resolves once every connection's `ready` came (every subscription is live).
 */
async function holdPatterns(target: Target, count: number, stats: RunStats): Promise<Subscriber[]> {
  const connections = Math.ceil(count / PATTERNS_PER_CONNECTION);
  return inBatches(connections, OPEN_CONCURRENCY, (c) => {
    const from = c * PATTERNS_PER_CONNECTION;
    const to = Math.min(count, from + PATTERNS_PER_CONNECTION);
    const query = Array.from({ length: to - from }, (_, i) => `pattern=${encodeURIComponent(`p${from + i}:*`)}`).join(
      "&",
    );
    const { headers } = target.sse("unused");
    const realtime: Target = { ...target, sse: () => ({ path: `/${QUIET}/realtime?${query}`, headers }) };
    return Subscriber.open(realtime, "sse", "", {
      tracker: stats.tracker(false),
      eager: false,
      localAddress: sourceAddress(),
    });
  });
}

/** How long a check message may take to reach its pattern subscriber, in ms. */
const CHECK_TIMEOUT_MS = 5000;

/** Publishes one message to `channel` of `target`'s plate and answers whether `subscribers` received it. */
async function delivers(
  target: Target,
  channel: string,
  subscribers: readonly Subscriber[],
  step: Step,
): Promise<boolean> {
  const publisher = new HttpPublisher(target, sourceAddress());
  try {
    const status = await publisher.send(channel, encodePayload(0, 0, performance.now()));
    if (status !== 200) throw new Error(`publish to ${channel} answered ${status}`);
  } finally {
    publisher.close();
  }
  const deadline = performance.now() + CHECK_TIMEOUT_MS;
  while (step.delivered === 0 && performance.now() < deadline) {
    for (const s of subscribers) s.drain();
    await new Promise((r) => setTimeout(r, 20));
  }
  return step.delivered === 1;
}

/** Sends `count` publishes over `publishers`, each with one in flight, a channel per publisher. */
async function publishSpread(
  publishers: readonly HttpPublisher[],
  count: number,
): Promise<{ accepted: number; failed: number }> {
  let next = 0;
  let accepted = 0;
  let failed = 0;
  await Promise.all(
    publishers.map(async (publisher, p) => {
      while (next < count) {
        const seq = next++;
        const status = await publisher.send(`c${p}`, encodePayload(seq, p, performance.now()));
        if (status >= 200 && status < 300) accepted += 1;
        else failed += 1;
      }
    }),
  );
  return { accepted, failed };
}

async function rawCase(patterns: number, options: PatternTaxOptions): Promise<RawCase> {
  const redis = tracked(await startRedis({ fromEnv: false, cpu: options.redisCpu }));
  const subscriber = new Redis(redis.url, { lazyConnect: true });
  const publisher = new Redis(redis.url, { lazyConnect: true });
  try {
    await subscriber.connect();
    await publisher.connect();
    // As the old design PSUBSCRIBEd them: the prefix, the plate, the pattern.
    for (let from = 0; from < patterns; from += RAW_PSUBSCRIBE_BATCH) {
      const batch = Array.from(
        { length: Math.min(RAW_PSUBSCRIBE_BATCH, patterns - from) },
        (_, i) => `plate:${QUIET}:p${from + i}:*`,
      );
      await subscriber.psubscribe(...batch);
    }
    const numpat = Number(await redisReply(redis.port, ["PUBSUB", "NUMPAT"]));
    const payload = "x".repeat(RAW_PAYLOAD_BYTES);
    const publishBatch = async () => {
      const pipeline = publisher.pipeline();
      for (let i = 0; i < RAW_PIPELINE; i++) pipeline.publish(`plate:${BUSY}:c${i % PUBLISHERS}`, payload);
      await pipeline.exec();
    };
    await publishBatch();
    const before = await readCounters(redis.port);
    const started = performance.now();
    let sent = 0;
    while (sent < options.publishes || performance.now() - started < options.rawMinMs) {
      await publishBatch();
      sent += RAW_PIPELINE;
    }
    const d = delta(before, await readCounters(redis.port));
    return {
      patterns,
      publishes: d.calls("publish"),
      publishUsPerCall: d.usecPerCall("publish"),
      redisCpuUsPerPublish: d.cpuUs / d.calls("publish"),
      numpat,
    };
  } finally {
    subscriber.disconnect();
    publisher.disconnect();
    await redis.stop();
  }
}
