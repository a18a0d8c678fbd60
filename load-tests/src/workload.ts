import { appendFileSync, readFileSync } from "node:fs";
import { HttpPublisher } from "./http-publisher.js";
import { runQueueWaitMs, sampleSteal } from "./machine.js";
import { NO_USER, encodePayload, userFilter } from "./payload.js";
import { ACCEPTED } from "./publisher.js";
import type { Publisher } from "./publisher.js";
import { RunStats, WARMUP_PUBLISHER } from "./stats.js";
import type { DeliveryTracker, LatencySummary, Step } from "./stats.js";
import { Subscriber } from "./subscriber.js";
import type { Transport } from "./subscriber.js";
import type { Target } from "./targets.js";
import { WsPublisher } from "./ws-publisher.js";
import { delta, readCounters } from "./redis-counters.js";
import type { CountersDelta } from "./redis-counters.js";

/** Loopback source addresses the sockets are spread over (127.0.0.2 on), against port exhaustion. */
const SOURCE_ADDRESSES = 16;
/** How often paused (batch) subscribers are drained, in ms. */
const BATCH_DRAIN_MS = 100;
/**
 * Batch subscribers drained per slice before the harness yields to its event loop, so the eager
 * (latency-sampling) subscribers' reads are not held up behind a drain of thousands of sockets: a
 * drain starts a socket reading, and the loop's next poll reads the slice's sockets beside any
 * eager one that is ready.
 */
const DRAIN_SLICE = 32;
/**
 * How long a fixed-rate run publishes at its rate before the measured part, in ms; nothing of it
 * is counted (its messages' deliveries are left out by their send time). Every transport runs on
 * a server started fresh for it, and a fresh server spends its first second finding its steady
 * state: at W1 Plate's fan-out still ran unoptimised code then (its JIT) and its p99 over that
 * second was 115-245 ms against 9-30 ms over each of the next nine; Nchan's first second showed a
 * spike too. W1 measures the steady state, which a node serving for days is in. At a low rate the
 * lead-in lasts longer, for the per-publish code's sake (`FanoutWorkload.leadInPublishes`).
 */
const LEAD_IN_MS = 2000;
/** How often the rate pacer sends what is due, in ms. */
const PACE_TICK_MS = 2;
/** After the last publish, how long deliveries may take to arrive before the run counts, in ms. */
const SETTLE_MS = 2000;
/** How often warm-up messages go to every channel until every subscriber has one, in ms. */
const WARMUP_EVERY_MS = 200;
/** How long the warm-up may take before the run goes on regardless (and reports it), in ms. */
const WARMUP_TIMEOUT_MS = 20_000;
/** Subscriptions opened at once while setting up (more queue). */
export const OPEN_CONCURRENCY = 200;
/** A ramp step counts as sustained when p99 is within this, in ms (the bar). */
export const RAMP_P99_LIMIT_MS = 100;
/** A ramp stops once a finished step's p99 passes this many times the limit: the server is drowning. */
const RAMP_ABORT_FACTOR = 10;
/** A step is sustained only if the publishers achieved at least this share of its target rate. */
const RAMP_MIN_ACHIEVED = 0.95;

/** How messages are published. */
export type PublishMode =
  /** `rate` messages/s for `durationMs`. */
  | { readonly kind: "fixed"; readonly rate: number; readonly durationMs: number }
  /** From `startRate`, ×`factor` every `stepMs`, until the server cannot keep up or `maxSteps`. */
  | { readonly kind: "ramp"; readonly startRate: number; readonly factor: number; readonly stepMs: number; readonly maxSteps: number }
  /** Every publisher connection as fast as answers come, for `durationMs`. */
  | { readonly kind: "max"; readonly durationMs: number };

export interface FanoutWorkload {
  readonly name: string;
  readonly target: Target;
  readonly transport: Transport;
  readonly channels: number;
  readonly subscribersPerChannel: number;
  /** Subscribers that read eagerly and report latency; the rest read in batches. */
  readonly eagerSubscribers: number;
  /** Publisher connections, one request in flight each. */
  readonly publishers: number;
  /** How they publish: keep-alive HTTP (the default), or `publish` frames on route 9's WebSocket. */
  readonly publishVia?: PublishVia;
  /** Messages a request carries over HTTP (route 12's batch when more than 1; default 1). */
  readonly batch?: number;
  /**
   * Each subscriber holds a filter of its own (subscriber i: `userFilter(i)`, an equality on the
   * message's `user`), and the messages name the subscribers in turn: each matches exactly one
   * subscriber, so a message is due one delivery instead of `subscribersPerChannel`. Plate only.
   */
  readonly filtered?: boolean;
  readonly mode: PublishMode;
  /**
   * A fixed-rate run's lead-in lasts at least long enough for this many publishes (beyond
   * `LEAD_IN_MS`): a server's per-publish code runs once a publish, so at a low rate it takes
   * that long to reach the code it runs for days. V8 (Node 20) optimises a function once it has
   * run `--interrupt-budget` (67,584) bytes of its bytecode 3 + (bytecode length / 150) times:
   * about 1,100 calls of a 300-byte function. At W1's 100 publishes/s, 15 s after a Plate node
   * started, 62% of the CPU samples of its publish path (an HTTP request read to the script
   * written to Redis) were still in baseline (unoptimised) code and that path took 0.51 ms (median);
   * 60 s after, 2% and 0.33 ms (`perf record`, docs/performance.md, 2026-12-05). After a lead-in of
   * 1,200 publishes V8 still compiled per-publish functions (the broker's publish, the fast lane's
   * answer, 1-20 ms of compiler time each, 10-30 ms a second) on the node's one core all through
   * W1's measured 10 s (`--trace-opt`, docs/performance.md, 2026-12-06): 3,000 publishes are the
   * lead-in now. 0 or absent: `LEAD_IN_MS` alone.
   */
  readonly leadInPublishes?: number;
  /** The port of the target's Redis, whose own counters are then read around the run (Plate on Redis). */
  readonly redisPort?: number;
  /**
   * A file each step's sampled messages are appended to, a JSON line a step (`traceLine`): their
   * send times on `CLOCK_MONOTONIC`, first and last reads. Absent: none kept.
   */
  readonly traceFile?: string;
}

export type PublishVia = "http" | "ws";

/** One step's outcome, as reported. */
export interface StepReport {
  readonly rate: number;
  readonly seconds: number;
  readonly published: number;
  readonly publishFailed: number;
  /** The failed publishes by why: the server's error code, `http_<status>`, `connection_closed`. */
  readonly publishFailures: Readonly<Record<string, number>>;
  readonly publishedPerS: number;
  readonly expected: number;
  readonly delivered: number;
  readonly deliveredPerS: number;
  readonly lost: number;
  readonly duplicates: number;
  readonly reordered: number;
  readonly latencyMs: LatencySummary;
  /** Over the messages the eager subscribers read: publish to the first read, and first read to last (`Step.readsSummary`). */
  readonly firstReadMs: LatencySummary;
  readonly spreadMs: LatencySummary;
  readonly sustained: boolean;
}

export interface FanoutReport {
  readonly workload: string;
  readonly target: string;
  readonly transport: Transport;
  readonly channels: number;
  readonly subscribers: number;
  readonly publishers: number;
  readonly publishVia: PublishVia;
  /** Whether each subscriber held its own filter (`FanoutWorkload.filtered`). */
  readonly filtered: boolean;
  readonly mode: PublishMode["kind"];
  readonly steps: readonly StepReport[];
  /** Ramp: the highest sustained step (p99 ≤ 100 ms, no loss, rate achieved). */
  readonly best: StepReport | undefined;
  readonly serverCpuPct: number;
  /** CPU seconds (user + system) the server used from the first publish until every delivery arrived (in 1/100 s). */
  readonly serverCpuS: number;
  readonly harnessCpuPct: number;
  readonly subscribersDropped: number;
  /** Deliveries of a message its subscriber's filter does not match (warm-up included): must be 0. */
  readonly wrongDeliveries: number;
  /** Subscribers no warm-up message reached (their losses are the server's too). */
  readonly subscribersNotWarmed: number;
  /**
   * What the target's Redis did per accepted publish over the same span as `serverCpuS`, from its
   * own counters (`INFO cpu`, `INFO commandstats`): all its CPU (user + system, network included),
   * the time inside the publish script (EVALSHA), and how many publishes one script carried.
   */
  readonly redis?: { readonly cpuUsPerPublish: number; readonly scriptUsPerPublish: number; readonly publishesPerScript: number };
  /**
   * How long, over the same span as `serverCpuS`, the server's main thread (summed over its
   * processes, `target.pids`) and the harness's were ready to run while their CPU ran something
   * else, in ms (`runQueueWaitMs`). A run whose server waited tens of ms measured the machine as
   * much as the server: whatever took its core held every message in flight (docs/performance.md,
   * 2026-12-06, twenty-fourth session).
   */
  readonly waitMs?: { readonly server: number; readonly harness: number };
  /** Of each CPU's time over the same span, the % the hypervisor gave to other guests (`sampleSteal`). */
  readonly stealPct?: readonly number[];
}

/** Channel names of a run: distinct per run so runs never see each other's messages. */
function channelNames(count: number): string[] {
  const run = Math.random().toString(36).slice(2, 8);
  return Array.from({ length: count }, (_, i) => `bench.${run}.${i}`);
}

let nextSource = 0;
/** The next loopback source address, round robin. */
export function sourceAddress(): string {
  nextSource = (nextSource % SOURCE_ADDRESSES) + 1;
  return `127.0.0.${1 + nextSource}`;
}

/** Runs `tasks` with at most `limit` in flight. */
export async function inBatches<T>(count: number, limit: number, task: (i: number) => Promise<T>): Promise<T[]> {
  const results: T[] = new Array<T>(count);
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const i = next++;
      results[i] = await task(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, count) }, worker));
  return results;
}

/** CPU seconds (user + system) used so far by the processes `pids`. */
export function processCpuSeconds(pids: readonly number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    try {
      const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
      ticks += Number(fields[11]) + Number(fields[12]);
    } catch {
      // gone
    }
  }
  // Linux reports in clock ticks of 1/100 s (USER_HZ) on every architecture Node runs on here.
  return ticks / 100;
}

/** The run-queue waits so far (`runQueueWaitMs`) of the server's main threads, summed, and of the harness's. */
function runQueueWaits(pids: readonly number[]): { server: number; harness: number } {
  return { server: runQueueWaitMs(pids).reduce((a, b) => a + b, 0), harness: runQueueWaitMs([process.pid])[0]! };
}

/** Runs a fan-out workload (W1, W2, W3, W5) and reports it. */
export async function runFanout(workload: FanoutWorkload): Promise<FanoutReport> {
  const { target } = workload;
  const stats = new RunStats();
  const channels = channelNames(workload.channels);
  const total = workload.channels * workload.subscribersPerChannel;
  const filtered = workload.filtered === true;
  // Deliveries each accepted message is due: one per subscriber of its channel, or with filters
  // the one subscriber its `user` names.
  const perMessage = filtered ? 1 : workload.subscribersPerChannel;
  const eagerEvery = Math.max(1, Math.floor(total / Math.max(1, workload.eagerSubscribers)));
  const trackers = Array.from({ length: total }, (_, i) => stats.tracker(i % eagerEvery === 0, filtered ? i : NO_USER));
  const subscribers = await inBatches(total, OPEN_CONCURRENCY, (i) =>
    Subscriber.open(target, workload.transport, channels[i % channels.length]!, {
      tracker: trackers[i]!,
      eager: i % eagerEvery === 0,
      localAddress: sourceAddress(),
      ...(filtered ? { filter: userFilter(i) } : {}),
    }),
  );
  const drainer = startDrainer(subscribers.filter((s) => !s.eager));
  const publishVia = workload.publishVia ?? "http";
  const publishers: Publisher[] =
    publishVia === "ws"
      ? await inBatches(workload.publishers, OPEN_CONCURRENCY, () => WsPublisher.open(target, sourceAddress()))
      : Array.from({ length: workload.publishers }, () => new HttpPublisher(target, sourceAddress()));
  const unwarmed = await warmUp(publishers[0]!, channels, trackers, filtered);
  const seqs = publishers.map(() => new Int32Array(channels.length));
  const batch = workload.batch ?? 1;
  if (batch > 1 && (publishVia !== "http" || filtered || target.publishBatch === undefined)) throw new Error(`${workload.name}: batches are published over HTTP, unfiltered, to a server with route 12`);

  // Messages go to each channel in turn or, filtered, to each subscriber in turn (subscriber k is
  // on channel k mod channels and its filter names user k).
  const turns = filtered ? total : channels.length;
  let cursor = 0;
  /** Sends one message on publisher `p`, counted into `step`. */
  const sendOne = async (p: number, step: Step): Promise<void> => {
    const k = cursor;
    cursor = (cursor + 1) % turns;
    const c = k % channels.length;
    const publisher = publishers[p]!;
    if (batch > 1) {
      const sentMs = performance.now();
      const payloads = Array.from({ length: batch }, () => encodePayload(seqs[p]![c]!++, p, sentMs, NO_USER));
      const outcome = await publisher.publishBatch!(channels[c]!, payloads);
      if (outcome === ACCEPTED) step.accepted += batch;
      else for (let i = 0; i < batch; i++) step.refused(outcome);
      return;
    }
    const seq = seqs[p]![c]!++;
    const outcome = await publisher.publish(channels[c]!, encodePayload(seq, p, performance.now(), filtered ? k : NO_USER));
    if (outcome === ACCEPTED) step.accepted += 1;
    else step.refused(outcome);
  };

  // Published like the run and counted nowhere (LEAD_IN_MS, leadInPublishes): `stats` has no step yet when they
  // are sent, so their deliveries are left out.
  if (workload.mode.kind === "fixed") {
    const leadIn = new RunStats();
    const durationMs = Math.max(LEAD_IN_MS, Math.ceil(((workload.leadInPublishes ?? 0) / workload.mode.rate) * 1000));
    await publishPaced({ kind: "fixed", rate: workload.mode.rate, durationMs }, publishers, leadIn, sendOne, perMessage);
  }
  const redisBefore = workload.redisPort === undefined ? undefined : await readCounters(workload.redisPort);
  const serverCpuBefore = processCpuSeconds(target.pids);
  const harnessCpuBefore = process.cpuUsage();
  const waitBefore = runQueueWaits(target.pids);
  const steal = sampleSteal();
  const started = performance.now();
  try {
    if (workload.mode.kind === "max") await publishMax(workload.mode.durationMs, publishers.length, stats, sendOne);
    else await publishPaced(workload.mode, publishers, stats, sendOne, perMessage);
    await settle(subscribers, stats, perMessage);
  } finally {
    drainer.stop();
  }
  const elapsedS = (performance.now() - started) / 1000;
  const harnessCpu = process.cpuUsage(harnessCpuBefore);
  const serverCpuS = processCpuSeconds(target.pids) - serverCpuBefore;
  const waitAfter = runQueueWaits(target.pids);
  const stealPct = steal.stop();
  const redisDelta = redisBefore === undefined ? undefined : delta(redisBefore, await readCounters(workload.redisPort!));
  const dropped = subscribers.filter((s) => s.closed).length;
  for (const p of publishers) p.close();
  for (const s of subscribers) s.close();

  const stepMs = workload.mode.kind === "ramp" ? workload.mode.stepMs : workload.mode.durationMs;
  const steps = stats.steps.map((step) => reportStep(step, stepMs, perMessage));
  if (workload.traceFile !== undefined) {
    for (const step of stats.steps) appendFileSync(workload.traceFile, traceLine(workload, step) + "\n");
  }
  const sustained = steps.filter((s) => s.sustained);
  return {
    workload: workload.name,
    target: target.name,
    transport: workload.transport,
    channels: workload.channels,
    subscribers: total,
    publishers: workload.publishers,
    publishVia,
    filtered,
    mode: workload.mode.kind,
    steps,
    best: workload.mode.kind === "ramp" ? sustained[sustained.length - 1] : steps[0],
    serverCpuPct: Math.round((serverCpuS / elapsedS) * 100),
    serverCpuS: Math.round(serverCpuS * 100) / 100,
    harnessCpuPct: Math.round(((harnessCpu.user + harnessCpu.system) / 1e6 / elapsedS) * 100),
    subscribersDropped: dropped,
    wrongDeliveries: stats.wrong,
    subscribersNotWarmed: unwarmed,
    ...(redisDelta === undefined ? {} : { redis: redisPerPublish(redisDelta, stats.steps.reduce((sum, step) => sum + step.accepted, 0)) }),
    waitMs: { server: Math.round((waitAfter.server - waitBefore.server) * 10) / 10, harness: Math.round((waitAfter.harness - waitBefore.harness) * 10) / 10 },
    stealPct,
  };
}

/** A Redis's work per accepted publish (see `FanoutReport.redis`). */
function redisPerPublish(d: CountersDelta, accepted: number): NonNullable<FanoutReport["redis"]> {
  const scripts = d.calls("evalsha");
  const per = (x: number) => Math.round((x / Math.max(1, accepted)) * 10) / 10;
  return {
    cpuUsPerPublish: per(d.cpuUs),
    scriptUsPerPublish: per(d.usecPerCall("evalsha") * scripts),
    publishesPerScript: Math.round((accepted / Math.max(1, scripts)) * 10) / 10,
  };
}

/**
 * Publishes warm-up messages to every channel until every subscriber has received one (or
 * `WARMUP_TIMEOUT_MS`), so measuring starts with every subscription live end to end. A server may
 * answer the subscribe before it is subscribed in its broker: Nchan on Redis sends its headers
 * first and then lost the first message for over half of 200 new subscribers. With `filtered`
 * subscribers (`FanoutWorkload.filtered`) a message reaches one only, so each round sends one to
 * each subscriber not warmed yet. Answers how many subscribers never got one.
 */
async function warmUp(publisher: Publisher, channels: readonly string[], trackers: readonly DeliveryTracker[], filtered: boolean): Promise<number> {
  const deadline = performance.now() + WARMUP_TIMEOUT_MS;
  let seq = 0;
  while (performance.now() < deadline) {
    const round = filtered
      ? trackers.flatMap((t, i) => (t.warmed ? [] : [{ channel: channels[i % channels.length]!, user: i }]))
      : channels.map((channel) => ({ channel, user: NO_USER }));
    for (const { channel, user } of round) await publisher.publish(channel, encodePayload(seq, WARMUP_PUBLISHER, performance.now(), user));
    seq += 1;
    await new Promise((r) => setTimeout(r, WARMUP_EVERY_MS));
    if (trackers.every((t) => t.warmed)) return 0;
  }
  return trackers.filter((t) => !t.warmed).length;
}

/**
 * One step's trace (`FanoutWorkload.traceFile`): which run it was, and `messages`, each
 * `[sent, first, last]` in ms to the µs (`Step.readsTrace`), in send order.
 */
export function traceLine(workload: Pick<FanoutWorkload, "name" | "target" | "transport">, step: Step): string {
  const micros = (ms: number) => Math.round(ms * 1000) / 1000;
  return JSON.stringify({
    workload: workload.name,
    target: workload.target.name,
    transport: workload.transport,
    step: step.index,
    rate: step.rate,
    clock: "CLOCK_MONOTONIC",
    messages: step.readsTrace().map(([sent, first, last]) => [micros(sent), micros(first), micros(last)]),
  });
}

/** Drains batch subscribers (or watchers) every `BATCH_DRAIN_MS`, `DRAIN_SLICE` at a time between event-loop turns. */
export function startDrainer(batch: readonly { drain(): void }[]): { stop(): void } {
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  const pass = (from: number) => {
    if (stopped) return;
    const to = Math.min(batch.length, from + DRAIN_SLICE);
    for (let i = from; i < to; i++) batch[i]!.drain();
    if (to < batch.length) setImmediate(pass, to);
    else timer = setTimeout(pass, BATCH_DRAIN_MS, 0);
  };
  pass(0);
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}

/** Publishers each send as soon as their previous answer came, for `durationMs`. */
async function publishMax(
  durationMs: number,
  count: number,
  stats: RunStats,
  sendOne: (p: number, step: Step) => Promise<void>,
): Promise<void> {
  const step = stats.begin(0, performance.now());
  const end = performance.now() + durationMs;
  await Promise.all(
    Array.from({ length: count }, async (_, p) => {
      while (performance.now() < end) await sendOne(p, step);
    }),
  );
}

/** Sends at a paced rate (fixed, or ramping step by step) over the idle publisher connections. */
async function publishPaced(
  mode: Extract<PublishMode, { kind: "fixed" | "ramp" }>,
  publishers: readonly Publisher[],
  stats: RunStats,
  sendOne: (p: number, step: Step) => Promise<void>,
  fanout: number,
): Promise<void> {
  const plan =
    mode.kind === "fixed"
      ? [{ rate: mode.rate, ms: mode.durationMs }]
      : Array.from({ length: mode.maxSteps }, (_, i) => ({ rate: Math.round(mode.startRate * mode.factor ** i), ms: mode.stepMs }));
  const inFlight = new Set<Promise<void>>();
  for (const [i, { rate, ms }] of plan.entries()) {
    const step = stats.begin(rate, performance.now());
    const stepStart = step.startMs;
    let sent = 0;
    while (performance.now() - stepStart < ms) {
      const due = Math.floor(((performance.now() - stepStart) / 1000) * rate) - sent;
      for (let k = 0, p = 0; k < due && p < publishers.length; p++) {
        if (publishers[p]!.busy) continue;
        const sending = sendOne(p, step);
        inFlight.add(sending);
        void sending.finally(() => inFlight.delete(sending));
        sent += 1;
        k += 1;
      }
      await new Promise((r) => setTimeout(r, PACE_TICK_MS));
    }
    // A ramp stops once an earlier step shows the server drowning (its p99 far past the bar, or
    // messages still missing a step later), so it does not pile up work it cannot finish.
    const previous = i > 0 ? stats.steps[i - 1] : undefined;
    if (mode.kind === "ramp" && previous !== undefined) {
      const report = reportStep(previous, mode.stepMs, fanout);
      if (report.latencyMs.p99 > RAMP_P99_LIMIT_MS * RAMP_ABORT_FACTOR || report.publishedPerS < previous.rate * RAMP_MIN_ACHIEVED) break;
    }
  }
  await Promise.all(inFlight);
}

/** Waits until every expected delivery arrived, or `SETTLE_MS` passed without progress. */
async function settle(subscribers: readonly Subscriber[], stats: RunStats, fanout: number): Promise<void> {
  const expected = () => stats.steps.reduce((n, s) => n + s.accepted * fanout, 0);
  const delivered = () => stats.steps.reduce((n, s) => n + s.delivered, 0);
  let last = -1;
  let lastChange = performance.now();
  while (performance.now() - lastChange < SETTLE_MS) {
    for (const sub of subscribers) sub.drain();
    const now = delivered();
    if (now >= expected()) return;
    if (now !== last) {
      last = now;
      lastChange = performance.now();
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

function reportStep(step: Step, stepMs: number, fanout: number): StepReport {
  const seconds = stepMs / 1000;
  const published = step.accepted;
  const expected = published * fanout;
  const lost = Math.max(0, expected - step.delivered);
  const latencyMs = step.latencies.summary();
  const publishedPerS = Math.round(published / seconds);
  return {
    rate: step.rate,
    seconds,
    published,
    publishFailed: step.failed,
    publishFailures: Object.fromEntries(step.failures),
    publishedPerS,
    expected,
    delivered: step.delivered,
    deliveredPerS: Math.round(step.delivered / seconds),
    lost,
    duplicates: step.duplicates,
    reordered: step.reordered,
    latencyMs,
    ...step.readsSummary(),
    sustained:
      lost === 0 &&
      step.failed === 0 &&
      latencyMs.p99 <= RAMP_P99_LIMIT_MS &&
      (step.rate === 0 || publishedPerS >= step.rate * RAMP_MIN_ACHIEVED),
  };
}
