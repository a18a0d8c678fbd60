import type { IdleReport } from "./idle.js";
import type { ChurnReport } from "./presence-churn.js";
import type { Transport } from "./subscriber.js";
import type { FanoutReport } from "./workload.js";

/** What one workload of one run reports. */
export type Report = FanoutReport | IdleReport | ChurnReport;

/** One row of the Markdown table: a figure read from the reports of one target. */
export interface Row {
  readonly label: string;
  readonly unit: string;
  /** `lower` when smaller is better (latency, memory). */
  readonly better: "higher" | "lower";
  readonly target: string;
  /** What the Nchan columns say instead of a figure, where Nchan is not measured. */
  readonly nchan?: string;
  readonly pick: (reports: readonly Report[]) => number | undefined;
}

export function fanoutOf(reports: readonly Report[], workload: string, transport: Transport): FanoutReport | undefined {
  return reports.find((r): r is FanoutReport => r.workload === workload && "steps" in r && r.transport === transport);
}

function churnOf(reports: readonly Report[]): ChurnReport | undefined {
  return reports.find((r): r is ChurnReport => "changesPerS" in r);
}

function idleOf(reports: readonly Report[], transport: Transport): IdleReport | undefined {
  return reports.find((r): r is IdleReport => r.workload === "W4" && r.transport === transport);
}

export const ROWS: Row[] = [
  ...(["sse", "ws"] as const).map((t): Row => ({ label: `W1 100 msg/s × 1,000 subs, p99 latency (${t.toUpperCase()})`, unit: "ms", better: "lower", target: "≤ 1×", pick: (r) => fanoutOf(r, "W1", t)?.best?.latencyMs.p99 })),
  ...(["sse", "ws"] as const).map((t): Row => ({ label: `W1 ramp, highest sustained deliveries/s (${t.toUpperCase()})`, unit: "/s", better: "higher", target: "≥ 1.5× (Redis)", pick: (r) => fanoutOf(r, "W1-ramp", t)?.best?.deliveredPerS })),
  ...(["sse", "ws"] as const).map((t): Row => ({ label: `W2 ramp, highest sustained msg/s (${t.toUpperCase()})`, unit: "/s", better: "higher", target: "≥ 1.5× (Redis)", pick: (r) => fanoutOf(r, "W2-ramp", t)?.best?.publishedPerS })),
  ...(["sse", "ws"] as const).map((t): Row => ({ label: `W2 1,000 msg/s over 1,000 channels × 10, p99 latency (${t.toUpperCase()})`, unit: "ms", better: "lower", target: "—", pick: (r) => fanoutOf(r, "W2", t)?.best?.latencyMs.p99 })),
  { label: "W3 publish req/s, 64 publishers", unit: "/s", better: "higher", target: "≥ 1.5× (Redis)", pick: (r) => fanoutOf(r, "W3", "ws")?.steps[0]?.publishedPerS },
  { label: "W3 messages lost", unit: "", better: "lower", target: "0 (embedded)", pick: (r) => fanoutOf(r, "W3", "ws")?.steps[0]?.lost },
  { label: "W5 publish msg/s over route 9's WebSocket, 1,000 clients", unit: "/s", better: "higher", target: "—", nchan: "not measured", pick: (r) => fanoutOf(r, "W5", "ws")?.steps[0]?.publishedPerS },
  { label: "W5 messages lost", unit: "", better: "lower", target: "0", nchan: "not measured", pick: (r) => fanoutOf(r, "W5", "ws")?.steps[0]?.lost },
  { label: "W6 presence churn, joins + leaves/s accepted, 1,000 members watching", unit: "/s", better: "higher", target: "—", nchan: "n/a (no presence)", pick: (r) => churnOf(r)?.changesPerS },
  { label: "W6 presence diffs delivered/s (each change to every watcher)", unit: "/s", better: "higher", target: "—", nchan: "n/a (no presence)", pick: (r) => churnOf(r)?.deliveredPerS },
  ...(["sse", "ws"] as const).map((t): Row => ({ label: `W4 memory per idle connection, 2 s after opening (${t.toUpperCase()})`, unit: "KB", better: "lower", target: "—", pick: (r) => idleOf(r, t)?.kbPerConnection })),
  ...(["sse", "ws"] as const).map((t): Row => ({ label: `W4 memory per idle connection, at rest (${t.toUpperCase()})`, unit: "KB", better: "lower", target: "≤ 0.7×", pick: (r) => idleOf(r, t)?.kbPerConnectionAtRest })),
];

export function median(values: number[]): number | undefined {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor((sorted.length - 1) / 2)];
}

export function fmt(value: number | undefined): string {
  if (value === undefined) return "—";
  return Math.abs(value) >= 1000 ? Math.round(value).toLocaleString("en-US") : String(Math.round(value * 100) / 100);
}

export function ratio(plate: number | undefined, nchan: number | undefined): string {
  if (plate === undefined || nchan === undefined || nchan === 0) return "—";
  return `${(plate / nchan).toFixed(2)}×`;
}


/** The publish workloads compared line by line: W3 over HTTP, W5 over route 9's WebSocket. */
const PUBLISH_WORKLOADS = [
  { workload: "W3", how: "HTTP POST, keep-alive" },
  { workload: "W5", how: "route 9 WebSocket `publish` frames" },
] as const;

/**
 * W3 and W5 of every target that ran them, one line each: medians over the runs of accepted
 * publishes/s, deliveries/s, latency (publish sent → subscriber received), loss, server and
 * harness CPU; failed publishes by why, summed over the runs. No lines when neither ran.
 */
export function publishTable(results: ReadonlyMap<string, readonly (readonly Report[])[]>): string[] {
  const lines: string[] = [];
  for (const { workload, how } of PUBLISH_WORKLOADS) {
    for (const [target, runs] of results) {
      const reports = runs.map((run) => fanoutOf(run, workload, "ws")).filter((r): r is FanoutReport => r?.steps[0] !== undefined);
      if (reports.length === 0) continue;
      const steps = reports.map((r) => r.steps[0]!);
      const m = (values: number[]) => fmt(median(values));
      const failures = new Map<string, number>();
      for (const step of steps) for (const [why, n] of Object.entries(step.publishFailures ?? {})) failures.set(why, (failures.get(why) ?? 0) + n);
      lines.push(
        `| ${workload} | ${how} | ${reports[0]!.publishers} | ${target} | ${m(steps.map((s) => s.publishedPerS))} | ${m(steps.map((s) => s.deliveredPerS))} | ` +
          `${m(steps.map((s) => s.latencyMs.p50))} | ${m(steps.map((s) => s.latencyMs.p99))} | ${m(steps.map((s) => s.lost))} | ` +
          `${m(reports.map((r) => r.serverCpuPct))} | ${m(reports.map((r) => r.harnessCpuPct))} | ` +
          `${failures.size === 0 ? "none" : [...failures].map(([why, n]) => `${why} ${fmt(n)}`).join(", ")} |`,
      );
    }
  }
  if (lines.length === 0) return [];
  return [
    "Publish over HTTP (W3) and over route 9's WebSocket (W5). Nchan has no W5 line: its publisher location can take WebSocket frames too, but this harness configures and speaks only its HTTP publish. Medians of the runs; failed publishes summed over them.",
    "",
    "| workload | publishes by | publishers | target | accepted msg/s | delivered/s | p50 ms | p99 ms | lost | server CPU % | harness CPU % | failed publishes |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ...lines,
    "",
  ];
}

/**
 * W6 of every target that ran it, one line each: medians over the runs of changes/s, diffs
 * delivered/s, latency (track or untrack written → an eager watcher read the diff), server, Redis
 * and harness CPU, and each CPU of the machine; diffs missed, order faults and failures summed over
 * the runs. No lines when W6 did not run.
 */
export function churnTable(results: ReadonlyMap<string, readonly (readonly Report[])[]>): string[] {
  const lines: string[] = [];
  for (const [target, runs] of results) {
    const reports = runs.map(churnOf).filter((r): r is ChurnReport => r !== undefined);
    if (reports.length === 0) continue;
    const m = (pick: (r: ChurnReport) => number | undefined) => fmt(median(reports.map(pick).filter((v): v is number => v !== undefined)));
    const sum = (pick: (r: ChurnReport) => number) => fmt(reports.reduce((n, r) => n + pick(r), 0));
    const failures = new Map<string, number>();
    for (const r of reports) for (const [why, n] of Object.entries(r.failures)) failures.set(why, (failures.get(why) ?? 0) + n);
    const cpus = reports[0]!.machineCpuPct.map((_, i) => m((r) => r.machineCpuPct[i])).join(" / ");
    lines.push(
      `| ${target} | ${fmt(reports[0]!.members)} + ${reports[0]!.churners} | ${m((r) => r.changesPerS)} | ${m((r) => r.deliveredPerS)} | ` +
        `${m((r) => r.latencyMs.p50)} | ${m((r) => r.latencyMs.p99)} | ${sum((r) => r.missed)} | ${sum((r) => r.extra)} | ${sum((r) => r.order.gaps + r.order.repeats + r.order.unknown)} | ` +
        `${m((r) => r.serverCpuPct)} | ${m((r) => r.redisCpuPct)} | ${m((r) => r.harnessCpuPct)} | ${cpus} | ` +
        `${failures.size === 0 ? "none" : [...failures].map(([why, n]) => `${why} ${fmt(n)}`).join(", ")} |`,
    );
  }
  if (lines.length === 0) return [];
  return [
    "Presence churn (W6): one channel whose members all watch it (`presence:true`), churners tracking and untracking as fast as answers come; each change is one diff frame to every watcher. Nchan has no presence: not measured. Medians of the runs; diffs missed or extra, order faults (seen by the eager watchers) and failures summed over them.",
    "",
    "| target | members + churners | changes/s | diffs delivered/s | p50 ms | p99 ms | missed | extra | order faults | server CPU % | Redis CPU % | harness CPU % | machine CPU busy % (CPU 0 / 1 / …) | failed |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ...lines,
    "",
  ];
}
