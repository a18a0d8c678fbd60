import { readFileSync } from "node:fs";
import { RunStats } from "./stats.js";
import { Subscriber } from "./subscriber.js";
import type { Transport } from "./subscriber.js";
import type { Target } from "./targets.js";
import { OPEN_CONCURRENCY, inBatches, sourceAddress } from "./workload.js";

/** How long the server may settle (GC, lazy frees) before and after, in ms. */
const SETTLE_MS = 2000;

export interface IdleReport {
  readonly workload: "W4";
  readonly target: string;
  readonly transport: Transport;
  readonly connections: number;
  readonly rssBeforeMb: number;
  readonly rssAfterMb: number;
  /** Server memory (RSS of all its processes) per idle connection, in KB (1000 bytes). */
  readonly kbPerConnection: number;
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
  for (const s of subs) s.close();
  await new Promise((r) => setTimeout(r, SETTLE_MS));
  return {
    workload: "W4",
    target: target.name,
    transport,
    connections: count,
    rssBeforeMb: Math.round(before / 1e5) / 10,
    rssAfterMb: Math.round(after / 1e5) / 10,
    kbPerConnection: Math.round((after - before) / count / 10) / 100,
  };
}
