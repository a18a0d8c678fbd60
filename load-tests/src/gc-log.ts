/**
 * bench.js's `--gc-log FILE`: every Plate node imports gc-log-hook.js (`node --import`), which
 * appends each of the node's collections to the file `PLATE_BENCH_GC_LOG` names, a JSON line each:
 * `{"pid","mono","ms","kind"}`, its start on `CLOCK_MONOTONIC` (ms; the clock of `--trace`'s send
 * times and of `perf record -k mono`), how long it paused the node (ms) and which it was. A late
 * message of `--trace` can so be laid over the collections that ran while it was on its way, with
 * no throwaway import (load-tests/README.md, "Tracing late messages").
 */
import { appendFileSync } from "node:fs";
import { PerformanceObserver, constants } from "node:perf_hooks";
import type { PerformanceEntry } from "node:perf_hooks";
import { monotonicMs } from "./stats.js";

/** The environment variable that names the file. */
export const GC_LOG_ENV = "PLATE_BENCH_GC_LOG";

const KINDS: Record<number, string> = {
  [constants.NODE_PERFORMANCE_GC_MINOR]: "scavenge",
  [constants.NODE_PERFORMANCE_GC_MAJOR]: "mark-compact",
  [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: "incremental",
  [constants.NODE_PERFORMANCE_GC_WEAKCB]: "weak-callbacks",
};

/** One collection as its line (without the newline). */
export function gcLine(pid: number, entry: Pick<PerformanceEntry, "startTime" | "duration"> & { readonly detail?: unknown }): string {
  const kind = (entry.detail as { kind?: number } | undefined)?.kind ?? 0;
  const round = (ms: number) => Math.round(ms * 1000) / 1000;
  return JSON.stringify({ pid, mono: round(monotonicMs(entry.startTime)), ms: round(entry.duration), kind: KINDS[kind] ?? String(kind) });
}

/** Appends each collection of this process to `file` from now on. */
export function startGcLog(file: string): void {
  // Node hands the observer its entries in a later turn (a setImmediate), a few at a time: one append each time.
  new PerformanceObserver((list) => {
    const lines = list.getEntries().map((entry) => gcLine(process.pid, entry));
    if (lines.length > 0) appendFileSync(file, lines.join("\n") + "\n");
  }).observe({ entryTypes: ["gc"] });
}
