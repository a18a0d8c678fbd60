import { connect } from "node:net";
import { redisCommand, startRedis, startRedisCluster } from "@plate/testing";
import type { RedisCluster } from "@plate/testing";
import { HttpPublisher } from "./http-publisher.js";
import { encodePayload } from "./payload.js";
import { delta, pinRedis, readCounters } from "./redis-counters.js";
import type { RedisCounters } from "./redis-counters.js";
import { tracked } from "./running.js";
import { startPlate } from "./servers.js";
import type { Started } from "./servers.js";
import { RunStats, WARMUP_PUBLISHER } from "./stats.js";
import type { DeliveryTracker, LatencySummary, Step } from "./stats.js";
import { captureEvalsha, publishScript, saturate } from "./script-replay.js";
import type { Saturation } from "./script-replay.js";
import { Subscriber } from "./subscriber.js";
import { plateTarget } from "./targets.js";
import type { Target } from "./targets.js";
import { processCpuSeconds, sourceAddress } from "./workload.js";

/*
 * Publish throughput on a Redis Cluster, and what each master spends per publish.
 *
 * W3's publishers (keep-alive HTTP, one request in flight each, as fast as answers come) spread
 * over plates chosen so that every master holds as many; each plate has one route-9 SSE subscriber
 * of every publisher's channel, so each publish is delivered once (and checked: lost, duplicates).
 * Each master's `INFO commandstats` and `INFO cpu` before and after give its EVALSHA calls and its
 * CPU per publish it served; the same workload on one standalone Redis is the comparison.
 */

/** Plates per master. */
const PLATES_PER_MASTER = 10;
/** How long the warm-up may take before the run goes on regardless, in ms. */
const WARMUP_TIMEOUT_MS = 20_000;
const WARMUP_EVERY_MS = 200;
/** After the last publish, how long deliveries may take to arrive, in ms (no progress for this long ends the wait). */
const SETTLE_MS = 2000;
/** The idle reading before a run (cron, cluster bus gossip, the edges' probes), in ms. */
export const IDLE_MS = 1000;

export const SETUPS = ["standalone-1-edge", "cluster-1-edge", "cluster-3-edges"] as const;
export type Setup = (typeof SETUPS)[number];

export interface ClusterOptions {
  readonly masters: number;
  readonly publishers: number;
  readonly durationMs: number;
  readonly runs: number;
  /** The CPU every redis-server is pinned to. */
  readonly redisCpu: number;
  /** The CPU the edges are pinned to. */
  readonly edgeCpu: number;
  /** The setups to run, in this order each run. */
  readonly setups: readonly Setup[];
  /** Arguments of `node` for every edge, e.g. `--cpu-prof`. */
  readonly edgeNodeArgs: readonly string[];
  /** More settings of every edge (`--edge-env`), e.g. `KEY_CACHE_MS`. */
  readonly edgeEnv: Readonly<Record<string, string>>;
  /** How long one Redis is saturated with replays of the publish script, in ms. */
  readonly saturationMs: number;
}

/** One master's (or the standalone Redis') share of a run. */
export interface MasterFigures {
  readonly port: number;
  readonly plates: number;
  /** Publishes the harness had accepted for this master's plates. */
  readonly publishes: number;
  readonly evalshaCalls: number;
  readonly evalshaUsPerCall: number;
  /** `spublish` on a cluster, `publish` on one Redis: calls of it per publish (channel and plate-wide channel). */
  readonly pubsubCallsPerPublish: number;
  readonly pubsubUsPerCall: number;
  /** The redis-server's CPU during the run, idle rate taken off, per publish it served, in µs. */
  readonly cpuUsPerPublish: number;
  /** Its CPU during the run, % of one core. */
  readonly cpuPct: number;
  /** Its CPU while idle before the run, % of one core (taken off `cpuUsPerPublish`). */
  readonly idleCpuPct: number;
  /** Every command it ran during the run (INFO and CLUSTER calls of the harness included), calls per publish. */
  readonly commandsPerPublish: Readonly<Record<string, number>>;
}

export interface ClusterRun {
  readonly setup: Setup;
  readonly run: number;
  readonly edges: number;
  readonly plates: number;
  readonly publishers: number;
  readonly seconds: number;
  readonly accepted: number;
  readonly failed: number;
  readonly publishesPerS: number;
  readonly delivered: number;
  readonly lost: number;
  readonly duplicates: number;
  readonly reordered: number;
  readonly subscribersNotWarmed: number;
  readonly latencyMs: LatencySummary;
  /** Every edge's CPU per accepted publish, in µs. */
  readonly edgeCpuUsPerPublish: number;
  /** The edges' CPU, % of one core (all of them together). */
  readonly edgeCpuPct: number;
  /** The same, idle (subscribers connected, nothing published) for `IDLE_MS` before the run. */
  readonly edgeIdleCpuPct: number;
  readonly harnessCpuPct: number;
  readonly masters: readonly MasterFigures[];
}

/** A Redis whose counters a run reads, and the plates whose slots it serves. */
interface Shard {
  readonly port: number;
  readonly plates: readonly string[];
}

/** A secret per plate: one secret names one key, which lives in one plate. */
function secretOf(plate: string): string {
  return `${plate}-secret-0123456789abcdefghij`;
}

/** One Redis saturated with the edge's own publish script (see script-replay.ts). */
export interface SaturationFigures extends Saturation {
  readonly redis: "cluster master" | "standalone";
  readonly run: number;
  /** The pub/sub command the script uses there. */
  readonly pubsub: string;
}

export interface ClusterResults {
  readonly runs: readonly ClusterRun[];
  readonly saturation: readonly SaturationFigures[];
}

/**
 * Runs the standalone comparison and the cluster setups `options.runs` times, in turn; then
 * saturates one master, and one standalone Redis, with replays of the publish script.
 */
export async function runClusterThroughput(
  options: ClusterOptions,
  log: (line: string) => void,
): Promise<ClusterResults> {
  const cluster = tracked(await startRedisCluster({ masters: options.masters, replicasPerMaster: 0 }));
  const runs: ClusterRun[] = [];
  const saturation: SaturationFigures[] = [];
  try {
    for (const node of cluster.nodes) await pinRedis(node.port, options.redisCpu);
    const shards = await platesPerMaster(cluster, PLATES_PER_MASTER);
    const plates = shards.flatMap((s) => s.plates);
    const seeds = { REDIS_URL: "", REDIS_CLUSTER_NODES: cluster.seeds.join(",") };
    for (let run = 1; run <= options.runs; run++) {
      for (const setup of options.setups) {
        if (setup === "standalone-1-edge") {
          const redis = tracked(await startRedis({ fromEnv: false, cpu: options.redisCpu }));
          try {
            runs.push(await measure(setup, run, 1, { REDIS_URL: redis.url }, [{ port: redis.port, plates }], options));
          } finally {
            await redis.stop();
          }
        } else {
          runs.push(await measure(setup, run, setup === "cluster-1-edge" ? 1 : 3, seeds, shards, options));
        }
        log(summary(runs[runs.length - 1]!));
      }
      // A master of each in turn, and a standalone Redis, each saturated once per run.
      const master = shards[(run - 1) % shards.length]!;
      const plate = master.plates[0]!;
      saturation.push({ redis: "cluster master", run, ...(await saturated(seeds, master.port, plate, options)) });
      const redis = tracked(await startRedis({ fromEnv: false, cpu: options.redisCpu }));
      try {
        saturation.push({
          redis: "standalone",
          run,
          ...(await saturated({ REDIS_URL: redis.url }, redis.port, plate, options)),
        });
      } finally {
        await redis.stop();
      }
      for (const s of saturation.slice(-2)) {
        log(
          `run ${run} saturated ${s.redis}: ${s.callsPerS} publishes/s at ${s.cpuPct}% CPU, ${s.cpuUsPerCall.toFixed(1)} µs CPU and ${s.evalshaUsPerCall.toFixed(1)} µs EVALSHA per publish`,
        );
      }
    }
  } finally {
    await cluster.stop();
  }
  return { runs, saturation };
}

/**
 * Captures the EVALSHA an edge sends for one publish of `plate` to the Redis on `port`, stops the
 * edge, and replays it there for `options.saturationMs` with one subscriber connection (the
 * harness') on the message's channel, as an edge with a subscriber would hold.
 */
async function saturated(
  redisEnv: Record<string, string>,
  port: number,
  plate: string,
  options: ClusterOptions,
): Promise<Omit<SaturationFigures, "redis" | "run">> {
  const edge = tracked(
    await startPlate({
      cpu: options.edgeCpu,
      redisUrl: undefined,
      plate,
      key: secretOf(plate),
      env: { ...options.edgeEnv, ...redisEnv },
    }),
  );
  let args: Buffer[];
  try {
    const publisher = new HttpPublisher(platesTarget(edge.port, [edge.pid]), sourceAddress());
    try {
      const publish = async () => {
        const status = await publisher.send(`${plate}/saturation`, encodePayload(0, 0, performance.now()));
        if (status !== 200) throw new Error(`publish to ${plate} answered ${status}`);
      };
      // The first loads the script (a NOSCRIPT EVALSHA, then EVAL) and caches the key.
      await publish();
      args = await captureEvalsha(port, publish, (captured) => publishScript(captured) !== undefined);
    } finally {
      publisher.close();
    }
  } finally {
    await edge.stop();
  }
  const { channel, pubsub, messages } = publishScript(args)!;
  const subscriber = connect({ host: "127.0.0.1", port });
  try {
    const subscribe = pubsub === "SPUBLISH" ? "SSUBSCRIBE" : "SUBSCRIBE";
    subscriber.write(`*2\r\n$${subscribe.length}\r\n${subscribe}\r\n$${Buffer.byteLength(channel)}\r\n${channel}\r\n`);
    subscriber.resume();
    await new Promise((r) => setTimeout(r, 100));
    return { pubsub, ...(await saturate(port, args, options.saturationMs, messages)) };
  } finally {
    subscriber.destroy();
  }
}

function summary(r: ClusterRun): string {
  const masters = r.masters.map((m) => `${m.cpuUsPerPublish.toFixed(1)} µs (${m.cpuPct}% CPU)`).join(", ");
  return `run ${r.run} ${r.setup}: ${r.publishesPerS} publishes/s, lost ${r.lost}, failed ${r.failed}, edge ${r.edgeCpuUsPerPublish.toFixed(1)} µs/publish (${r.edgeCpuPct}% CPU, idle ${r.edgeIdleCpuPct}%), Redis per publish ${masters}`;
}

/** `perMaster` plates for every master, `s0`, `s1`, ... in order, by the hash slot of `{plate}`. */
async function platesPerMaster(cluster: RedisCluster, perMaster: number): Promise<Shard[]> {
  const masters = await cluster.masters();
  const byPort = new Map(masters.map((m) => [m.port, [] as string[]]));
  for (let i = 0; [...byPort.values()].some((plates) => plates.length < perMaster); i++) {
    const plate = `s${i}`;
    const slot = Number(await redisCommand(masters[0]!.port, ["CLUSTER", "KEYSLOT", `{${plate}}`]));
    const owned = byPort.get((await cluster.nodeForSlot(slot)).port)!;
    if (owned.length < perMaster) owned.push(plate);
  }
  return [...byPort].map(([port, plates]) => ({ port, plates }));
}

/**
 * A target for many plates of one edge: `publish` takes `plate/channel` (the harness' publisher
 * knows one target; the plate is part of what it publishes to).
 */
function platesTarget(port: number, pids: readonly number[]): Target {
  const one = (plate: string) => plateTarget({ name: "plate", port, plate, key: secretOf(plate), pids });
  return {
    ...one("unused"),
    publish: (to) => {
      const at = to.indexOf("/");
      return one(to.slice(0, at)).publish(to.slice(at + 1));
    },
  };
}

/** A route-9 SSE subscriber target of `plate`, subscribed to `channels` from the query. */
function realtimeTarget(port: number, plate: string, channels: readonly string[]): Target {
  const base = plateTarget({ name: "plate", port, plate, key: secretOf(plate), pids: [] });
  const query = channels.map((c) => `channel=${encodeURIComponent(c)}`).join("&");
  return { ...base, sse: () => ({ path: `/${plate}/realtime?${query}`, headers: base.sse("unused").headers }) };
}

async function measure(
  setup: Setup,
  run: number,
  edgeCount: number,
  redisEnv: Record<string, string>,
  shards: readonly Shard[],
  options: ClusterOptions,
): Promise<ClusterRun> {
  const plates = shards.flatMap((s) => s.plates);
  const bootstrap = JSON.stringify(Object.fromEntries(plates.map((p) => [p, secretOf(p)])));
  const edges: Started[] = [];
  const subscribers: Subscriber[] = [];
  const publishers: HttpPublisher[] = [];
  try {
    for (let e = 0; e < edgeCount; e++) {
      edges.push(
        tracked(
          await startPlate({
            cpu: options.edgeCpu,
            nodeArgs: options.edgeNodeArgs,
            redisUrl: undefined,
            plate: plates[0]!,
            key: secretOf(plates[0]!),
            env: { ...options.edgeEnv, ...redisEnv, BOOTSTRAP_PLATES: bootstrap },
          }),
        ),
      );
    }
    const edgePids = edges.map((e) => e.pid);
    const channels = Array.from({ length: options.publishers }, (_, p) => `c${p}`);
    const stats = new RunStats();
    const trackers: DeliveryTracker[] = [];
    for (const [i, plate] of plates.entries()) {
      const tracker = stats.tracker(true);
      trackers.push(tracker);
      const edge = edges[i % edgeCount]!;
      subscribers.push(
        await Subscriber.open(realtimeTarget(edge.port, plate, channels), "sse", "", {
          tracker,
          eager: true,
          localAddress: sourceAddress(),
        }),
      );
    }
    for (let p = 0; p < options.publishers; p++) {
      const edge = edges[p % edgeCount]!;
      publishers.push(new HttpPublisher(platesTarget(edge.port, edgePids), sourceAddress()));
    }
    const unwarmed = await warmUp(publishers.slice(0, edgeCount), plates, trackers);

    const idleBefore = await Promise.all(shards.map((s) => readCounters(s.port)));
    const edgeIdleBefore = processCpuSeconds(edgePids);
    const idleStart = performance.now();
    await new Promise((r) => setTimeout(r, IDLE_MS));
    const before = await Promise.all(shards.map((s) => readCounters(s.port)));
    const idleS = (performance.now() - idleStart) / 1000;
    const edgeIdleCpuPct = Math.round(((processCpuSeconds(edgePids) - edgeIdleBefore) / idleS) * 100);

    const edgeCpuBefore = processCpuSeconds(edgePids);
    const harnessBefore = process.cpuUsage();
    const started = performance.now();
    const step = stats.begin(0, started);
    const acceptedPerPlate = new Int32Array(plates.length);
    await publishMax(publishers, plates, channels, options.durationMs, step, acceptedPerPlate);
    const after = await Promise.all(shards.map((s) => readCounters(s.port)));
    const seconds = (performance.now() - started) / 1000;
    const edgeCpuS = processCpuSeconds(edgePids) - edgeCpuBefore;
    const harness = process.cpuUsage(harnessBefore);
    await settle(step);

    const accepted = step.accepted;
    let plateIndex = 0;
    const masters = shards.map((shard, s): MasterFigures => {
      let publishes = 0;
      for (let i = 0; i < shard.plates.length; i++) publishes += acceptedPerPlate[plateIndex++]!;
      return masterFigures(
        shard,
        publishes,
        idleBefore[s]!,
        before[s]!,
        idleS,
        after[s]!,
        seconds,
        redisEnv.REDIS_CLUSTER_NODES !== undefined,
      );
    });
    return {
      setup,
      run,
      edges: edgeCount,
      plates: plates.length,
      publishers: options.publishers,
      seconds: round(seconds, 2),
      accepted,
      failed: step.failed,
      publishesPerS: Math.round(accepted / seconds),
      delivered: step.delivered,
      lost: Math.max(0, accepted - step.delivered),
      duplicates: step.duplicates,
      reordered: step.reordered,
      subscribersNotWarmed: unwarmed,
      latencyMs: step.latencies.summary(),
      edgeCpuUsPerPublish: round((edgeCpuS * 1e6) / accepted, 1),
      edgeCpuPct: Math.round((edgeCpuS / seconds) * 100),
      edgeIdleCpuPct,
      harnessCpuPct: Math.round(((harness.user + harness.system) / 1e6 / seconds) * 100),
      masters,
    };
  } finally {
    for (const p of publishers) p.close();
    for (const s of subscribers) s.close();
    for (const e of edges) await e.stop();
  }
}

function masterFigures(
  shard: Shard,
  publishes: number,
  idleBefore: RedisCounters,
  before: RedisCounters,
  idleS: number,
  after: RedisCounters,
  seconds: number,
  cluster: boolean,
): MasterFigures {
  const idleCpuUsPerS = delta(idleBefore, before).cpuUs / idleS;
  const d = delta(before, after);
  const pubsub = cluster ? "spublish" : "publish";
  return {
    port: shard.port,
    plates: shard.plates.length,
    publishes,
    evalshaCalls: d.calls("evalsha"),
    evalshaUsPerCall: round(d.usecPerCall("evalsha"), 2),
    pubsubCallsPerPublish: round(d.calls(pubsub) / publishes, 3),
    pubsubUsPerCall: round(d.usecPerCall(pubsub), 2),
    cpuUsPerPublish: round((d.cpuUs - idleCpuUsPerS * seconds) / publishes, 2),
    cpuPct: Math.round((d.cpuUs / 1e6 / seconds) * 100),
    idleCpuPct: round((idleCpuUsPerS / 1e6) * 100, 2),
    commandsPerPublish: Object.fromEntries(
      Object.entries(d.allCalls).map(([command, calls]) => [command, round(calls / publishes, 3)]),
    ),
  };
}

/**
 * Every publisher as fast as answers come for `durationMs`: publisher `p` on its channel, its
 * publishes going round the plates from plate `p`, so every plate (and master) gets as many.
 */
async function publishMax(
  publishers: readonly HttpPublisher[],
  plates: readonly string[],
  channels: readonly string[],
  durationMs: number,
  step: Step,
  acceptedPerPlate: Int32Array,
): Promise<void> {
  const end = performance.now() + durationMs;
  await Promise.all(
    publishers.map(async (publisher, p) => {
      for (let seq = 0; performance.now() < end; seq++) {
        const plate = (p + seq) % plates.length;
        const status = await publisher.send(
          `${plates[plate]}/${channels[p]}`,
          encodePayload(seq, p, performance.now()),
        );
        if (status >= 200 && status < 300) {
          step.accepted += 1;
          acceptedPerPlate[plate]! += 1;
        } else {
          step.failed += 1;
        }
      }
    }),
  );
}

/**
 * Publishes warm-up messages to every plate through every edge's first publisher until each
 * plate's subscriber has one: the scripts are loaded, the keys cached, every subscription live.
 * Answers how many subscribers never got one.
 */
async function warmUp(
  publishers: readonly HttpPublisher[],
  plates: readonly string[],
  trackers: readonly DeliveryTracker[],
): Promise<number> {
  const deadline = performance.now() + WARMUP_TIMEOUT_MS;
  for (let seq = 0; performance.now() < deadline; seq++) {
    await Promise.all(
      publishers.map(async (publisher, e) => {
        for (const plate of plates)
          await publisher.send(`${plate}/c${e}`, encodePayload(seq, WARMUP_PUBLISHER, performance.now()));
      }),
    );
    await new Promise((r) => setTimeout(r, WARMUP_EVERY_MS));
    if (trackers.every((t) => t.warmed)) return 0;
  }
  return trackers.filter((t) => !t.warmed).length;
}

/** Waits until every accepted publish was delivered, or `SETTLE_MS` passed without progress. */
async function settle(step: Step): Promise<void> {
  let last = -1;
  let lastChange = performance.now();
  while (performance.now() - lastChange < SETTLE_MS && step.delivered < step.accepted) {
    if (step.delivered !== last) {
      last = step.delivered;
      lastChange = performance.now();
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

function round(value: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}
