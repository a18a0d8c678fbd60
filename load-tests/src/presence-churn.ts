import { sampleMachine } from "./machine.js";
import { PresenceClient } from "./presence-client.js";
import { ACCEPTED, CONNECTION_CLOSED } from "./publisher.js";
import { readCounters } from "./redis-counters.js";
import { Latencies } from "./stats.js";
import type { LatencySummary } from "./stats.js";
import type { Target } from "./targets.js";
import { OPEN_CONCURRENCY, inBatches, processCpuSeconds, sourceAddress, startDrainer } from "./workload.js";

/** After setup, how long no presence frame may arrive before counting starts, in ms. */
const QUIET_MS = 500;
/** How long setup's frames may take to stop before the run goes on regardless, in ms. */
const QUIET_TIMEOUT_MS = 30_000;
/** After the last change, how long diffs may take to arrive without progress before the run counts, in ms. */
const SETTLE_MS = 2000;
/** How often the quiet and settle checks look, in ms. */
const POLL_MS = 50;

/** W6, presence churn: one channel, `members` watchers, `churners` joining and leaving it. */
export interface ChurnWorkload {
  readonly target: Target;
  /** Connections subscribed with `presence:true` and tracked: the channel's steady members, each watching. */
  readonly members: number;
  /** Connections subscribed without presence that track and untrack, one request in flight each. */
  readonly churners: number;
  /** Watchers that read every diff (order and latency); the rest are counted in batches. */
  readonly eagerWatchers: number;
  readonly durationMs: number;
  /** The target's Redis, whose CPU is reported beside the node's (none on the embedded default). */
  readonly redisPort?: number;
}

/** What the eager watchers saw of the churners' changes, in the order each churner made them. */
export interface ChurnOrder {
  /** Changes an eager watcher never saw before a later change of the same churner. */
  readonly gaps: number;
  /** Changes seen again, or after a later one of the same churner. */
  readonly repeats: number;
  /** Diffs that named no churner's change (none expected: the steady members stay put). */
  readonly unknown: number;
}

export interface ChurnReport {
  readonly workload: "W6";
  readonly target: string;
  readonly members: number;
  readonly churners: number;
  readonly eagerWatchers: number;
  readonly seconds: number;
  /** Joins and leaves accepted (`ok`): each is one change of the channel's members. */
  readonly changes: number;
  readonly changesPerS: number;
  readonly failed: number;
  /** Refused or failed tracks and untracks by why: the server's error code, `connection_closed`. */
  readonly failures: Readonly<Record<string, number>>;
  /** `changes × members`: each change is one diff frame to every watcher. */
  readonly expectedDeliveries: number;
  readonly delivered: number;
  readonly deliveredPerS: number;
  /** Diffs watchers were short of the changes made (summed), and how many watchers were short. */
  readonly missed: number;
  readonly watchersShort: number;
  /** Diffs past the changes made (summed over watchers). */
  readonly extra: number;
  readonly order: ChurnOrder;
  /** Track or untrack written → an eager watcher read its diff. */
  readonly latencyMs: LatencySummary;
  /** CPU while churning: the node, its Redis, the harness, and each CPU of the machine (everything on it). */
  readonly serverCpuPct: number;
  readonly redisCpuPct: number | undefined;
  readonly harnessCpuPct: number;
  readonly machineCpuPct: readonly number[];
  readonly watchersDropped: number;
  /** Opening, subscribing and tracking the members, and the quiet after, in s. */
  readonly setupS: number;
}

/** A churner's state while tracked: `{"c":<churner>,"k":<its change number>}`. */
function churnState(churner: number, change: number): string {
  return '{"c":' + churner + ',"k":' + change + "}";
}

const JOINS = '"joins":{';
const CHURNER = '"state":{"c":';
const CHANGE = ',"k":';

/**
 * The churner and its change number named by a diff frame's text, or undefined: a join carries its
 * state's change number `k`, a leave the state it leaves with (its join's), so `k + 1`. Churners
 * make one change at a time (never an update), so a frame holds one join or one leave.
 */
export function churnChange(text: string): { churner: number; change: number } | undefined {
  const joins = text.indexOf(JOINS);
  const c = text.indexOf(CHURNER);
  if (joins === -1 || c === -1) return undefined;
  const k = text.indexOf(CHANGE, c);
  if (k === -1) return undefined;
  const churner = parseInt(text.slice(c + CHURNER.length, k), 10);
  const change = parseInt(text.slice(k + CHANGE.length, text.indexOf("}", k)), 10);
  if (!Number.isInteger(churner) || !Number.isInteger(change)) return undefined;
  const isJoin = text.charCodeAt(joins + JOINS.length) !== 0x7d; // "joins":{} is a leave
  return { churner, change: isJoin ? change : change + 1 };
}

/**
 * Runs W6 and reports it. The steady members open, subscribe with `presence:true` and track, then
 * the churners open and subscribe; once no presence frame has come for `QUIET_MS`, every watcher
 * counts diffs from zero and the churners track and untrack in turn, each as soon as its previous
 * answer came, for `durationMs`. A churner's n-th accepted change is change n (tracks even, untracks
 * odd), so an eager watcher can tell, per churner, a change it missed, saw twice or saw late.
 */
export async function runPresenceChurn(workload: ChurnWorkload): Promise<ChurnReport> {
  const { target, members, churners: churnerCount } = workload;
  const channel = `bench.${Math.random().toString(36).slice(2, 8)}.presence`;
  const setupStarted = performance.now();
  const eagerEvery = Math.max(1, Math.floor(members / Math.max(1, workload.eagerWatchers)));
  const isEager = (i: number) => i % eagerEvery === 0;
  const setupFailures: string[] = [];
  const watchers = await inBatches(members, OPEN_CONCURRENCY, async (i) => {
    const client = await PresenceClient.open(target, sourceAddress(), !isEager(i));
    const subscribed = await client.subscribe(channel, true);
    const tracked = subscribed === ACCEPTED ? await client.track(channel, '{"m":' + i + "}") : subscribed;
    if (tracked !== ACCEPTED) setupFailures.push(tracked);
    return client;
  });
  const churners = await inBatches(churnerCount, OPEN_CONCURRENCY, async () => {
    const client = await PresenceClient.open(target, sourceAddress(), false);
    const subscribed = await client.subscribe(channel, false);
    if (subscribed !== ACCEPTED) setupFailures.push(subscribed);
    return client;
  });
  const closeAll = () => {
    for (const c of [...watchers, ...churners]) c.close();
  };
  if (setupFailures.length > 0) {
    closeAll();
    throw new Error(`W6 setup: ${setupFailures.length} subscribe/track refused, e.g. ${setupFailures[0]}`);
  }
  await quiet(watchers);
  const setupS = (performance.now() - setupStarted) / 1000;

  // What each eager watcher expects next of each churner, and when each change was asked for.
  const sentAt = Array.from({ length: churnerCount }, () => [] as number[]);
  const latencies = new Latencies();
  let gaps = 0;
  let repeats = 0;
  let unknown = 0;
  for (const [i, watcher] of watchers.entries()) {
    if (!isEager(i)) {
      watcher.startCounting();
      continue;
    }
    const next = new Int32Array(churnerCount);
    watcher.startCounting((text) => {
      const now = performance.now();
      const seen = churnChange(text);
      if (seen === undefined || seen.churner >= churnerCount) {
        unknown += 1;
        return;
      }
      const expected = next[seen.churner]!;
      if (seen.change < expected) {
        repeats += 1;
        return;
      }
      gaps += seen.change - expected;
      next[seen.churner] = seen.change + 1;
      const sent = sentAt[seen.churner]![seen.change];
      if (sent !== undefined) latencies.add(now - sent);
    });
  }
  const drainer = startDrainer(watchers.filter((_, i) => !isEager(i)));

  let changes = 0;
  const failures = new Map<string, number>();
  const serverCpuBefore = processCpuSeconds(target.pids);
  const redisBefore = workload.redisPort === undefined ? undefined : await readCounters(workload.redisPort);
  const harnessBefore = process.cpuUsage();
  const machine = sampleMachine();
  const started = performance.now();
  const end = started + workload.durationMs;
  let serverCpuPct = 0;
  let redisCpuPct: number | undefined;
  let harnessCpuPct = 0;
  let machineCpuPct: number[] = [];
  try {
    await Promise.all(
      churners.map(async (client, c) => {
        const times = sentAt[c]!;
        for (let change = 0; performance.now() < end; ) {
          // A retry after a refusal asks for the same change again: its time is the last attempt's.
          times[change] = performance.now();
          const outcome = change % 2 === 0 ? await client.track(channel, churnState(c, change)) : await client.untrack(channel);
          if (outcome === ACCEPTED) {
            changes += 1;
            change += 1;
            continue;
          }
          failures.set(outcome, (failures.get(outcome) ?? 0) + 1);
          if (outcome === CONNECTION_CLOSED || outcome.startsWith("closed_")) return;
        }
      }),
    );
    const elapsedS = (performance.now() - started) / 1000;
    machineCpuPct = machine.stop();
    const harness = process.cpuUsage(harnessBefore);
    harnessCpuPct = Math.round(((harness.user + harness.system) / 1e6 / elapsedS) * 100);
    serverCpuPct = Math.round(((processCpuSeconds(target.pids) - serverCpuBefore) / elapsedS) * 100);
    if (redisBefore !== undefined && workload.redisPort !== undefined) {
      redisCpuPct = Math.round((((await readCounters(workload.redisPort)).cpuSeconds - redisBefore.cpuSeconds) / elapsedS) * 100);
    }
    await settle(watchers, changes);
  } finally {
    drainer.stop();
  }
  const dropped = watchers.filter((w) => w.closed).length;
  let delivered = 0;
  let missed = 0;
  let watchersShort = 0;
  let extra = 0;
  for (const w of watchers) {
    delivered += w.diffs;
    if (w.diffs < changes) {
      missed += changes - w.diffs;
      watchersShort += 1;
    } else extra += w.diffs - changes;
  }
  closeAll();

  const seconds = workload.durationMs / 1000;
  return {
    workload: "W6",
    target: target.name,
    members,
    churners: churnerCount,
    eagerWatchers: watchers.filter((_, i) => isEager(i)).length,
    seconds,
    changes,
    changesPerS: Math.round(changes / seconds),
    failed: [...failures.values()].reduce((a, b) => a + b, 0),
    failures: Object.fromEntries(failures),
    expectedDeliveries: changes * members,
    delivered,
    deliveredPerS: Math.round(delivered / seconds),
    missed,
    watchersShort,
    extra,
    order: { gaps, repeats, unknown },
    latencyMs: latencies.summary(),
    serverCpuPct,
    redisCpuPct,
    harnessCpuPct,
    machineCpuPct,
    watchersDropped: dropped,
    setupS: Math.round(setupS * 10) / 10,
  };
}

/** Waits until no presence frame came to any watcher for `QUIET_MS` (setup's joins are all out). */
async function quiet(watchers: readonly PresenceClient[]): Promise<void> {
  const deadline = performance.now() + QUIET_TIMEOUT_MS;
  let last = -1;
  let since = performance.now();
  while (performance.now() < deadline) {
    const now = watchers.reduce((n, w) => n + w.diffs, 0);
    if (now !== last) {
      last = now;
      since = performance.now();
    } else if (performance.now() - since >= QUIET_MS) return;
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

/** Waits until every watcher has a diff per change, or `SETTLE_MS` passed without one arriving. */
async function settle(watchers: readonly PresenceClient[], changes: number): Promise<void> {
  let last = -1;
  let since = performance.now();
  while (performance.now() - since < SETTLE_MS) {
    for (const w of watchers) w.drain();
    const live = watchers.filter((w) => !w.closed);
    const seen = live.reduce((n, w) => n + Math.min(w.diffs, changes), 0);
    if (seen >= live.length * changes) return;
    if (seen !== last) {
      last = seen;
      since = performance.now();
    }
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}
