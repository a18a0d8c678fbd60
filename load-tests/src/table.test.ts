import { describe, expect, it } from "vitest";
import {
  FILTERED,
  FILTERED_FAST,
  ROWS,
  cpuPerDeliveryUs,
  cpuPerMessageUs,
  filterTable,
  marginalCpuUs,
} from "./table.js";
import type { Report } from "./table.js";
import type { FanoutReport, StepReport } from "./workload.js";

/** A fixed-rate report of 10 s: `published` messages, `delivered` deliveries, `cpuS` server CPU seconds. */
function fanout(
  workload: string,
  rate: number,
  published: number,
  delivered: number,
  cpuS: number,
  filtered: boolean,
): FanoutReport {
  const step: StepReport = {
    rate,
    seconds: 10,
    published,
    publishFailed: 0,
    publishFailures: {},
    publishedPerS: published / 10,
    expected: delivered,
    delivered,
    deliveredPerS: delivered / 10,
    lost: 0,
    duplicates: 0,
    reordered: 0,
    latencyMs: { samples: 1, p50: 1, p90: 2, p99: 3, p999: 4, max: 5 },
    firstReadMs: { samples: 1, p50: 1, p90: 1, p99: 1, p999: 1, max: 1 },
    spreadMs: { samples: 1, p50: 0, p90: 0, p99: 0, p999: 0, max: 0 },
    sustained: true,
  };
  return {
    workload,
    target: "plate-embedded",
    transport: "ws",
    channels: 1,
    subscribers: 1000,
    publishers: 32,
    publishVia: "http",
    filtered,
    mode: "fixed",
    steps: [step],
    best: step,
    serverCpuPct: Math.round((cpuS / 10) * 100),
    serverCpuS: cpuS,
    harnessCpuPct: 10,
    subscribersDropped: 0,
    wrongDeliveries: 0,
    subscribersNotWarmed: 0,
  };
}

// W1: 1,000 messages, each to 1,000 subscribers, for 5 CPU seconds; filtered: one delivery each.
const run: Report[] = [
  fanout("W1", 100, 1000, 1_000_000, 5, false),
  fanout(FILTERED, 100, 1000, 1000, 0.2, true),
  fanout(FILTERED_FAST, 1000, 10_000, 10_000, 1.1, true),
];

describe("CPU per message, filtered against unfiltered", () => {
  it("divides the server's CPU by accepted messages and by deliveries, in µs", () => {
    expect(cpuPerMessageUs(run[0] as FanoutReport)).toBe(5000);
    expect(cpuPerDeliveryUs(run[0] as FanoutReport)).toBe(5);
    expect(cpuPerMessageUs(run[1] as FanoutReport)).toBe(200);
  });

  it("leaves out what the node spends whatever the rate, between the two filtered rates", () => {
    // (1.1 − 0.2) s over 9,000 more messages.
    expect(marginalCpuUs(run, "ws")).toBeCloseTo(100);
    expect(marginalCpuUs(run, "sse")).toBeUndefined();
  });

  it("has a row for each of issue 18's W1 latency targets, p50 and p99, of W1's own step", () => {
    const p50 = ROWS.find((r) => r.label.startsWith("W1 100 msg/s") && r.label.includes("p50") && r.label.endsWith("(WS)"))!;
    const p99 = ROWS.find((r) => r.label.startsWith("W1 100 msg/s") && r.label.includes("p99") && r.label.endsWith("(WS)"))!;
    expect([p50.pick(run), p50.target]).toEqual([1, "≤ 1×"]);
    expect([p99.pick(run), p99.target]).toEqual([3, "≤ 1×"]);
    expect(p50.pick(run.slice(1))).toBeUndefined();
  });

  it("sets the higher rate's CPU per message against W1's of the same run", () => {
    const row = ROWS.find(
      (r) => r.label.startsWith("W1-filtered") && r.label.includes("÷") && r.label.endsWith("(WS)"),
    )!;
    expect(row.pick(run)).toBeCloseTo(110 / 5000);
    expect(row.pick(run.slice(1))).toBeUndefined();
  });

  it("writes a line per workload beside W1's, and none for a target that did not run it", () => {
    const lines = filterTable(
      new Map([
        ["plate-embedded", [run]],
        ["nchan", [[fanout("W1", 100, 1000, 1_000_000, 3, false)]]],
      ]),
    );
    const rows = lines.filter((l) => l.startsWith("| plate"));
    expect(rows).toHaveLength(3);
    expect(rows[0]).toContain("| W1 | none | 100 | 100 | 100,000 | 1,000 |");
    expect(rows[1]).toContain(`| ${FILTERED} | 1,000, one each | 100 | 100 | 100 | 1 |`);
    expect(rows[1]).toContain("| 0.04 | — |");
    expect(rows[2]).toContain("| 110 | 110 | 0.02 | 100 |");
    expect(lines.some((l) => l.startsWith("| nchan"))).toBe(false);
  });

  it("writes nothing when W1-filtered did not run", () => {
    expect(filterTable(new Map([["plate-embedded", [[run[0]!]]]]))).toEqual([]);
  });
});
