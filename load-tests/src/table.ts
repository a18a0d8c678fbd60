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

/** W1-filtered's two runs: at W1's rate (CPU per message comparable with W1's), and at its own higher rate. */
export const FILTERED = "W1-filtered";
export const FILTERED_FAST = "W1-filtered-fast";

/** Server CPU per accepted message, in µs (undefined without messages, or for a report written before `serverCpuS` existed). */
export function cpuPerMessageUs(r: FanoutReport): number | undefined {
  const published = r.steps.reduce((n, s) => n + s.published, 0);
  return published === 0 || typeof r.serverCpuS !== "number" ? undefined : (r.serverCpuS * 1e6) / published;
}

/** Server CPU per delivery, in µs (undefined as `cpuPerMessageUs`). */
export function cpuPerDeliveryUs(r: FanoutReport): number | undefined {
  const delivered = r.steps.reduce((n, s) => n + s.delivered, 0);
  return delivered === 0 || typeof r.serverCpuS !== "number" ? undefined : (r.serverCpuS * 1e6) / delivered;
}

/** Server CPU per message of `workload` ÷ W1's (unfiltered), both of one run's `reports`. */
function cpuAgainstW1(reports: readonly Report[], workload: string, transport: Transport): number | undefined {
  const w1 = fanoutOf(reports, "W1", transport);
  const other = fanoutOf(reports, workload, transport);
  const base = w1 === undefined ? undefined : cpuPerMessageUs(w1);
  const mine = other === undefined ? undefined : cpuPerMessageUs(other);
  return base === undefined || mine === undefined || base === 0 ? undefined : mine / base;
}

/**
 * Server CPU per message between W1-filtered's two rates, in µs: (CPU at the higher rate − CPU at
 * W1's) ÷ (messages at the higher rate − at W1's), of one run. Both runs last as long, so what the
 * node spends whatever the rate (timers, idle connections) cancels out: the cost of one more
 * filtered message.
 */
export function marginalCpuUs(reports: readonly Report[], transport: Transport): number | undefined {
  const slow = fanoutOf(reports, FILTERED, transport);
  const fast = fanoutOf(reports, FILTERED_FAST, transport);
  if (slow === undefined || fast === undefined) return undefined;
  const messages = (r: FanoutReport) => r.steps.reduce((n, s) => n + s.published, 0);
  const more = messages(fast) - messages(slow);
  return more <= 0 ? undefined : ((fast.serverCpuS - slow.serverCpuS) * 1e6) / more;
}

function churnOf(reports: readonly Report[]): ChurnReport | undefined {
  return reports.find((r): r is ChurnReport => "changesPerS" in r);
}

function idleOf(reports: readonly Report[], transport: Transport): IdleReport | undefined {
  return reports.find((r): r is IdleReport => r.workload === "W4" && r.transport === transport);
}

export const ROWS: Row[] = [
  // Issue 18: W1's p50 and p99 each at most Nchan's.
  ...(["sse", "ws"] as const).map((t): Row => ({ label: `W1 100 msg/s × 1,000 subs, p50 latency (${t.toUpperCase()})`, unit: "ms", better: "lower", target: "≤ 1×", pick: (r) => fanoutOf(r, "W1", t)?.best?.latencyMs.p50 })),
  ...(["sse", "ws"] as const).map((t): Row => ({ label: `W1 100 msg/s × 1,000 subs, p99 latency (${t.toUpperCase()})`, unit: "ms", better: "lower", target: "≤ 1×", pick: (r) => fanoutOf(r, "W1", t)?.best?.latencyMs.p99 })),
  // Issue 18: the figure that decides how many nodes a deployment needs.
  ...(["sse", "ws"] as const).map((t): Row => ({ label: `W1 100 msg/s × 1,000 subs, server CPU per delivery (${t.toUpperCase()})`, unit: "µs", better: "lower", target: "≤ 1×", pick: (r) => { const w1 = fanoutOf(r, "W1", t); return w1 === undefined ? undefined : cpuPerDeliveryUs(w1); } })),
  ...(["sse", "ws"] as const).map((t): Row => ({ label: `W1 ramp, highest sustained deliveries/s (${t.toUpperCase()})`, unit: "/s", better: "higher", target: "≥ 1.5× (Redis)", pick: (r) => fanoutOf(r, "W1-ramp", t)?.best?.deliveredPerS })),
  ...(["sse", "ws"] as const).map((t): Row => ({ label: `W2 ramp, highest sustained msg/s (${t.toUpperCase()})`, unit: "/s", better: "higher", target: "≥ 1.5× (Redis)", pick: (r) => fanoutOf(r, "W2-ramp", t)?.best?.publishedPerS })),
  ...(["sse", "ws"] as const).map((t): Row => ({ label: `W2 1,000 msg/s over 1,000 channels × 10, p99 latency (${t.toUpperCase()})`, unit: "ms", better: "lower", target: "—", pick: (r) => fanoutOf(r, "W2", t)?.best?.latencyMs.p99 })),
  { label: "W3 publish req/s, 64 publishers", unit: "/s", better: "higher", target: "≥ 1.5× (Redis)", pick: (r) => fanoutOf(r, "W3", "ws")?.steps[0]?.publishedPerS },
  { label: "W3 messages lost", unit: "", better: "lower", target: "0 (embedded)", pick: (r) => fanoutOf(r, "W3", "ws")?.steps[0]?.lost },
  // Issue 18: route 12's batches, W3's publishers, 10 messages a request.
  { label: "W3-batch publish msg/s, route 12, 10 messages a request, 64 publishers", unit: "/s", better: "higher", target: "—", nchan: "n/a (no batch route)", pick: (r) => fanoutOf(r, "W3-batch", "ws")?.steps[0]?.publishedPerS },
  { label: "W3-batch messages lost", unit: "", better: "lower", target: "0", nchan: "n/a (no batch route)", pick: (r) => fanoutOf(r, "W3-batch", "ws")?.steps[0]?.lost },
  { label: "W5 publish msg/s over route 9's WebSocket, 1,000 clients", unit: "/s", better: "higher", target: "—", nchan: "not measured", pick: (r) => fanoutOf(r, "W5", "ws")?.steps[0]?.publishedPerS },
  { label: "W5 messages lost", unit: "", better: "lower", target: "0", nchan: "not measured", pick: (r) => fanoutOf(r, "W5", "ws")?.steps[0]?.lost },
  ...(["sse", "ws"] as const).map((t): Row => ({ label: `W1-filtered 1,000 msg/s × 1,000 subs, one filter each, p99 latency (${t.toUpperCase()})`, unit: "ms", better: "lower", target: "—", nchan: "n/a (no filters)", pick: (r) => fanoutOf(r, FILTERED_FAST, t)?.best?.latencyMs.p99 })),
  ...(["sse", "ws"] as const).map((t): Row => ({ label: `W1-filtered 1,000 msg/s, server CPU per published message ÷ W1's at 100 msg/s (${t.toUpperCase()})`, unit: "×", better: "lower", target: "—", nchan: "n/a (no filters)", pick: (r) => cpuAgainstW1(r, FILTERED_FAST, t) })),
  { label: "W6 presence churn, joins + leaves/s accepted, 1,000 members watching", unit: "/s", better: "higher", target: "—", nchan: "n/a (no presence)", pick: (r) => churnOf(r)?.changesPerS },
  { label: "W6 presence diffs delivered/s (each change to every watcher)", unit: "/s", better: "higher", target: "—", nchan: "n/a (no presence)", pick: (r) => churnOf(r)?.deliveredPerS },
  ...(["sse", "ws"] as const).map((t): Row => ({ label: `W4 memory per idle connection, 2 s after opening (${t.toUpperCase()})`, unit: "KB", better: "lower", target: "≤ 0.7×", pick: (r) => idleOf(r, t)?.kbPerConnection })),
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


/** The publish workloads compared line by line: W3 over HTTP (one message a request, or route 12's batches), W5 over route 9's WebSocket. */
const PUBLISH_WORKLOADS = [
  { workload: "W3", how: "HTTP POST, keep-alive" },
  { workload: "W3-batch", how: "HTTP POST to route 12, 10 messages a request" },
  { workload: "W5", how: "route 9 WebSocket `publish` frames" },
] as const;

/**
 * W3, W3-batch and W5 of every target that ran them, one line each: medians over the runs of accepted
 * publishes/s, deliveries/s, latency (publish sent → subscriber received), loss, server and
 * harness CPU; failed publishes by why, summed over the runs. No lines when neither ran.
 */
export function publishTable(results: ReadonlyMap<string, readonly (readonly Report[])[]>): string[] {
  const lines: string[] = [];
  const accepted = (target: string, workload: string): number | undefined =>
    median(
      (results.get(target) ?? [])
        .map((run) => fanoutOf(run, workload, "ws")?.steps[0]?.publishedPerS)
        .filter((v): v is number => v !== undefined),
    );
  for (const { workload, how } of PUBLISH_WORKLOADS) {
    // W3's reference: the bare node's publishes a second (issue 18's targets: 0.8× embedded, 0.6× Redis).
    const bare = accepted("bare-node", "W3");
    for (const [target, runs] of results) {
      const reports = runs.map((run) => fanoutOf(run, workload, "ws")).filter((r): r is FanoutReport => r?.steps[0] !== undefined);
      if (reports.length === 0) continue;
      const steps = reports.map((r) => r.steps[0]!);
      const m = (values: number[]) => fmt(median(values));
      const ofBare = bare === undefined ? "—" : ratio(median(steps.map((s) => s.publishedPerS)), bare);
      const failures = new Map<string, number>();
      for (const step of steps) for (const [why, n] of Object.entries(step.publishFailures ?? {})) failures.set(why, (failures.get(why) ?? 0) + n);
      lines.push(
        `| ${workload} | ${how} | ${reports[0]!.publishers} | ${target} | ${m(steps.map((s) => s.publishedPerS))} | ${ofBare} | ${m(steps.map((s) => s.deliveredPerS))} | ` +
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
    "| workload | publishes by | publishers | target | accepted msg/s | ÷ bare node's W3 | delivered/s | p50 ms | p99 ms | lost | server CPU % | harness CPU % | failed publishes |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
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

/**
 * W1-filtered beside W1 (no filters) of every Plate target that ran it, a line per transport and
 * workload: medians over the runs of the publish rate, accepted msg/s, deliveries/s and per message,
 * latency, server CPU (% and µs per message and per delivery, per message ÷ W1's of the same run),
 * and on the higher rate's line the marginal CPU per filtered message (`marginalCpuUs`); loss and
 * wrong deliveries summed over the runs. No lines when W1-filtered did not run.
 */
export function filterTable(results: ReadonlyMap<string, readonly (readonly Report[])[]>): string[] {
  const lines: string[] = [];
  for (const [target, runs] of results) {
    if (!runs.some((run) => run.some((r) => r.workload === FILTERED))) continue;
    for (const transport of ["sse", "ws"] as const) {
      for (const workload of ["W1", FILTERED, FILTERED_FAST]) {
        const pairs = runs.map((run) => ({ run, report: fanoutOf(run, workload, transport) })).filter((p) => p.report?.steps[0] !== undefined);
        if (pairs.length === 0) continue;
        const m = (pick: (r: FanoutReport, run: readonly Report[]) => number | undefined) =>
          fmt(median(pairs.map((p) => pick(p.report!, p.run)).filter((v): v is number => v !== undefined)));
        const sum = (pick: (r: FanoutReport) => number) => fmt(pairs.reduce((n, p) => n + pick(p.report!), 0));
        const step = (r: FanoutReport) => r.steps[0]!;
        const first = pairs[0]!.report!;
        lines.push(
          `| ${target} | ${transport.toUpperCase()} | ${workload} | ${first.filtered ? `${fmt(first.subscribers)}, one each` : "none"} | ` +
            `${m((r) => step(r).rate)} | ${m((r) => step(r).publishedPerS)} | ${m((r) => step(r).deliveredPerS)} | ${m((r) => (step(r).published === 0 ? undefined : step(r).delivered / step(r).published))} | ` +
            `${m((r) => step(r).latencyMs.p50)} | ${m((r) => step(r).latencyMs.p99)} | ${sum((r) => step(r).lost)} | ${first.filtered ? sum((r) => r.wrongDeliveries) : "—"} | ` +
            `${m((r) => r.serverCpuPct)} | ${m(cpuPerMessageUs)} | ${m(cpuPerDeliveryUs)} | ${workload === "W1" ? "1" : m((_, run) => cpuAgainstW1(run, workload, transport))} | ` +
            `${workload === FILTERED_FAST ? m((_, run) => marginalCpuUs(run, transport)) : "—"} |`,
        );
      }
    }
  }
  if (lines.length === 0) return [];
  return [
    "Filtered subscriptions (W1-filtered): W1's channel and subscribers, each subscriber with a filter of its own (`{\"equals\":{\"user\":\"u<i>\"}}`, in the subscribe URL's `filter`), and messages naming the subscribers in turn (`\"user\":\"u<i>\"`): each message is due exactly one delivery. At W1's rate (CPU per message against W1's, which is due a delivery to every subscriber) and at a higher rate (every subscriber gets 1 msg/s); W1 from the same invocation, when it ran. Nchan has no filters: not measured. Server CPU is the Plate node's (not its Redis') from the first publish until the last delivery, divided by accepted messages and by deliveries, so it includes what the node spends whatever the rate; the marginal figure leaves that out. Medians of the runs; loss and wrong deliveries (a message its subscriber's filter does not match) summed over them.",
    "",
    "| target | transport | workload | filters | rate msg/s | accepted msg/s | delivered/s | deliveries per message | p50 ms | p99 ms | lost | wrong deliveries | server CPU % | CPU µs per message | CPU µs per delivery | per message ÷ W1's | marginal µs per filtered message |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ...lines,
    "",
  ];
}
