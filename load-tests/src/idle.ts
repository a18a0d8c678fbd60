import { readFileSync } from "node:fs";
import { RunStats } from "./stats.js";
import { Subscriber } from "./subscriber.js";
import type { Transport } from "./subscriber.js";
import type { Target } from "./targets.js";
import { OPEN_CONCURRENCY, inBatches, sourceAddress } from "./workload.js";

/** How long the server may settle (GC, lazy frees) before and after, in ms. */
const SETTLE_MS = 2000;
/**
 * How long the connections are then left idle while the server's RSS is read every
 * `IDLE_SAMPLE_MS`, in ms; the lowest reading counts as what they hold at rest. A garbage-collected
 * server holds the garbage of its connection setup until its collector gets to it: Plate on Redis
 * read 172 MB 2 s after opening 10,000 WebSockets and 121 MB 48 s later, with the same connections
 * and no traffic (V8's memory reducer runs after some 30 s of low allocation). Nchan's RSS stays flat.
 */
const IDLE_SETTLE_MS = 50_000;
const IDLE_SAMPLE_MS = 2000;

export interface IdleReport {
  readonly workload: "W4";
  readonly target: string;
  readonly transport: Transport;
  readonly connections: number;
  readonly rssBeforeMb: number;
  /** RSS `SETTLE_MS` after the last connection opened. */
  readonly rssAfterMb: number;
  /** The lowest RSS while the connections stayed idle for `IDLE_SETTLE_MS`. */
  readonly rssAtRestMb: number;
  /** Server memory (RSS of all its processes) per idle connection `SETTLE_MS` after opening them, in KB (1000 bytes). */
  readonly kbPerConnection: number;
  /** The same, from the lowest RSS within `IDLE_SETTLE_MS` of idleness: what they hold at rest. */
  readonly kbPerConnectionAtRest: number;
}

/** Resident memory of the processes `pids`, in bytes (VmRSS). */
export function rssBytes(pids: readonly number[]): number {
  let kb = 0;
  for (const pid of pids) {
    const match = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    kb += Number(match?.[1] ?? 0);
  }
  return kb * 1024;
}

/** W4: opens `count` idle subscriptions and reads how much server memory they hold. */
export async function runIdle(target: Target, transport: Transport, count: number): Promise<IdleReport> {
  const stats = new RunStats();
  stats.begin(0, performance.now());
  await new Promise((r) => setTimeout(r, SETTLE_MS));
  const before = rssBytes(target.pids);
  const subs = await inBatches(count, OPEN_CONCURRENCY, (i) =>
    Subscriber.open(target, transport, `idle.${i % 100}`, { tracker: stats.tracker(false), eager: false, localAddress: sourceAddress() }),
  );
  await new Promise((r) => setTimeout(r, SETTLE_MS));
  const after = rssBytes(target.pids);
  let atRest = after;
  for (let waited = 0; waited < IDLE_SETTLE_MS; waited += IDLE_SAMPLE_MS) {
    await new Promise((r) => setTimeout(r, IDLE_SAMPLE_MS));
    atRest = Math.min(atRest, rssBytes(target.pids));
  }
  for (const s of subs) s.close();
  await new Promise((r) => setTimeout(r, SETTLE_MS));
  return {
    workload: "W4",
    target: target.name,
    transport,
    connections: count,
    rssBeforeMb: Math.round(before / 1e5) / 10,
    rssAfterMb: Math.round(after / 1e5) / 10,
    rssAtRestMb: Math.round(atRest / 1e5) / 10,
    kbPerConnection: Math.round((after - before) / count / 10) / 100,
    kbPerConnectionAtRest: Math.round((atRest - before) / count / 10) / 100,
  };
}
