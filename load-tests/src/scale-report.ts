import { IDLE_MS, SETUPS } from "./cluster-throughput.js";
import type { ClusterResults, ClusterRun, MasterFigures, SaturationFigures, Setup } from "./cluster-throughput.js";
import type { PatternTaxCase } from "./pattern-tax.js";
import { fmt, median } from "./table.js";

/*
 * The Markdown of a redis-scale.js run (docs/redis-scale-figures.md): the pattern tax, the cluster
 * runs (medians), one Redis at full CPU, and the sizing rule drawn from them.
 */

/** Share of a master's core the sizing rule lets publishes use: the rest is headroom (bursts, failover, resharding). */
const SIZING_CPU_SHARE = 0.5;
/** Publish rates the sizing table is worked out for, per second. */
const SIZING_RATES = [10_000, 50_000, 100_000, 500_000];

/** Everything one run of redis-scale.js measured, as its JSON line holds it. */
export interface ScaleReport {
  readonly date: string;
  readonly command: string;
  /** Small sizes (`--quick`): a smoke run. Absent in lines written before it was recorded. */
  readonly quick?: boolean;
  readonly machine: string;
  readonly redisCpu: number;
  readonly edgeCpu: number;
  readonly edgeEnv: Readonly<Record<string, string>>;
  readonly harnessCpu: number;
  readonly seconds: number;
  readonly tax: readonly PatternTaxCase[];
  readonly cluster: ClusterResults;
}

const n = (value: number | undefined, digits = 1) =>
  value === undefined || !Number.isFinite(value) ? "—" : value.toFixed(digits);

/** The Markdown of `report`: its tables, medians over `runs`, and the sizing drawn from them. */
export function markdown(report: ScaleReport, quick: boolean, runs: number): string {
  const lines = [
    "# Redis at scale: measured figures",
    "",
    `Measured ${report.date.slice(0, 10)} on ${report.machine}.`,
    `Redis pinned to CPU ${report.redisCpu}, the edges to CPU ${report.edgeCpu}, the harness to CPU ${report.harnessCpu} (\`taskset\`)${quick ? "; quick sizes (a smoke run)" : ""}. The whole run took ${report.seconds} s.`,
    "",
    `Command: \`npm run build && ${report.command}\``,
    ...(Object.keys(report.edgeEnv).length === 0
      ? []
      : [
          "",
          `Edge settings beyond the benchmark's (see load-tests/src/servers.ts): ${Object.entries(report.edgeEnv)
            .map(([k, v]) => `\`${k}=${v}\``)
            .join(", ")}.`,
        ]),
    "",
  ];
  if (report.tax.length > 0) lines.push(...taxSection(report.tax, runs));
  if (report.cluster.runs.length > 0) lines.push(...clusterSection(report.cluster, runs));
  return lines.join("\n");
}

function taxSection(tax: readonly PatternTaxCase[], runs: number): string[] {
  const counts = [...new Set(tax.map((c) => c.plate.patterns))];
  const first = tax[0]!;
  return [
    "## The pattern tax",
    "",
    `One edge on one Redis. Plate \`quiet\` holds N distinct pattern subscriptions (\`p0:*\`, \`p1:*\`, ...; route-9 SSE connections of 200 each); plate \`busy\` gets ${first.plate.publishes} publishes over HTTP from 4 keep-alive publishers (after 200 unmeasured). Figures from Redis' \`INFO commandstats\` and \`INFO cpu\` around the publishes. "Before" is the design this replaced: the same N patterns as raw \`PSUBSCRIBE plate:quiet:p<i>:*\` on one connection, and raw \`PUBLISH\`es of 100 bytes to \`plate:busy:c<k>\` (pipelines of 100), each N on a fresh redis-server. Median of ${runs} run${runs === 1 ? "" : "s"}, each case on a fresh redis-server (and edge).`,
    "",
    "| patterns held (N) | now: EVALSHA µs/call | now: PUBLISH calls per publish | now: PUBLISH µs/call | now: Redis CPU µs per publish | now: `NUMPAT` / `NUMSUB plate:quiet#` | now: last pattern delivers | before: PUBLISH µs/call | before: Redis CPU µs per PUBLISH |",
    "|---|---|---|---|---|---|---|---|---|",
    ...counts.map((count) => {
      const cases = tax.filter((c) => c.plate.patterns === count);
      const m = (pick: (c: PatternTaxCase) => number) => median(cases.map(pick));
      const numpat = Math.max(...cases.map((c) => c.plate.numpat));
      const numsub = Math.max(...cases.map((c) => c.plate.plateWideSubscribers));
      const delivers = count === 0 ? "—" : cases.every((c) => c.plate.lastPatternDelivers) ? "yes" : "**no**";
      return `| ${fmt(count)} | ${n(
        m((c) => c.plate.evalshaUsPerCall),
        2,
      )} | ${n(
        m((c) => c.plate.publishCallsPerPublish),
        2,
      )} | ${n(
        m((c) => c.plate.publishUsPerCall),
        2,
      )} | ${n(
        m((c) => c.plate.redisCpuUsPerPublish),
        1,
      )} | ${numpat} / ${numsub} | ${delivers} | ${n(
        m((c) => c.raw.publishUsPerCall),
        2,
      )} | ${n(
        m((c) => c.raw.redisCpuUsPerPublish),
        2,
      )} |`;
    }),
    "",
    "EVALSHA's time includes the commands the script calls (the two PUBLISHes among them) and is wall time: Redis shares its core with the edge, which may preempt it mid-script. Redis CPU is the whole process' (`used_cpu_user + used_cpu_sys`: reading requests, writing replies, the event loop), per publish.",
    "",
  ];
}

/** The median over runs of one setup, field by field (masters by position). */
function medianRun(runs: readonly ClusterRun[]): ClusterRun | undefined {
  const first = runs[0];
  if (first === undefined) return undefined;
  const m = (pick: (r: ClusterRun) => number) => median(runs.map(pick)) ?? Number.NaN;
  const masters = first.masters.map((master, i): MasterFigures => {
    const mm = (pick: (f: MasterFigures) => number) => m((r) => pick(r.masters[i]!));
    return {
      port: master.port,
      plates: master.plates,
      publishes: mm((f) => f.publishes),
      evalshaCalls: mm((f) => f.evalshaCalls),
      evalshaUsPerCall: mm((f) => f.evalshaUsPerCall),
      pubsubCallsPerPublish: mm((f) => f.pubsubCallsPerPublish),
      pubsubUsPerCall: mm((f) => f.pubsubUsPerCall),
      cpuUsPerPublish: mm((f) => f.cpuUsPerPublish),
      cpuPct: mm((f) => f.cpuPct),
      idleCpuPct: mm((f) => f.idleCpuPct),
      commandsPerPublish: master.commandsPerPublish,
    };
  });
  return {
    ...first,
    run: 0,
    seconds: m((r) => r.seconds),
    accepted: m((r) => r.accepted),
    failed: m((r) => r.failed),
    publishesPerS: m((r) => r.publishesPerS),
    delivered: m((r) => r.delivered),
    lost: Math.max(...runs.map((r) => r.lost)),
    duplicates: Math.max(...runs.map((r) => r.duplicates)),
    reordered: Math.max(...runs.map((r) => r.reordered)),
    subscribersNotWarmed: Math.max(...runs.map((r) => r.subscribersNotWarmed)),
    latencyMs: { ...first.latencyMs, p50: m((r) => r.latencyMs.p50), p99: m((r) => r.latencyMs.p99) },
    edgeCpuUsPerPublish: m((r) => r.edgeCpuUsPerPublish),
    edgeCpuPct: m((r) => r.edgeCpuPct),
    edgeIdleCpuPct: m((r) => r.edgeIdleCpuPct),
    harnessCpuPct: m((r) => r.harnessCpuPct),
    masters,
  };
}

function clusterSection({ runs: all, saturation }: ClusterResults, runs: number): string[] {
  const bySetup = SETUPS.map((setup) => [setup, medianRun(all.filter((r) => r.setup === setup))] as const).filter(
    (entry): entry is readonly [Setup, ClusterRun] => entry[1] !== undefined,
  );
  const first = bySetup[0]?.[1];
  if (first === undefined) return [];
  const totalRedisUs = (r: ClusterRun) =>
    r.masters.reduce((sum, m) => sum + m.cpuUsPerPublish * m.publishes, 0) / r.accepted;
  const lines = [
    "## Publish throughput on a Redis Cluster",
    "",
    `${first.publishers} keep-alive HTTP publishers (W3's, one request in flight each, as fast as answers come) for ${first.seconds.toFixed(0)} s, spread over ${first.plates} plates chosen by hash slot so that every master of a 3-master cluster (no replicas) holds ${first.plates / 3}; a channel per publisher; each plate has one route-9 SSE subscriber of every publisher's channel (on edge i mod edges), so every publish is delivered once. Publisher p publishes through edge p mod edges. The standalone rows are the same workload on one redis-server. Median of ${runs} run${runs === 1 ? "" : "s"} (lost, duplicates: the largest).`,
    "",
    "| setup | publishes/s | lost | dup. | p50 / p99 latency ms | edge CPU µs per publish | edges' CPU % | Redis CPU µs per publish (all masters) | harness CPU % |",
    "|---|---|---|---|---|---|---|---|---|",
    ...bySetup.map(
      ([setup, r]) =>
        `| ${setup} | ${fmt(r.publishesPerS)} | ${r.lost} | ${r.duplicates} | ${n(r.latencyMs.p50)} / ${n(r.latencyMs.p99)} | ${n(r.edgeCpuUsPerPublish)} | ${r.edgeCpuPct} | ${n(totalRedisUs(r))} | ${r.harnessCpuPct} |`,
    ),
    "",
    "Per master (the standalone Redis is one row):",
    "",
    "| setup | master | plates | publishes/s on it | EVALSHA calls per publish | EVALSHA µs/call | (S)PUBLISH calls per publish | (S)PUBLISH µs/call | Redis CPU µs per publish | its CPU % (idle %) |",
    "|---|---|---|---|---|---|---|---|---|---|",
  ];
  for (const [setup, r] of bySetup) {
    for (const [i, m] of r.masters.entries()) {
      lines.push(
        `| ${setup} | ${r.masters.length === 1 ? "standalone" : `master ${i + 1}`} | ${m.plates} | ${fmt(Math.round(m.publishes / r.seconds))} | ${n(m.evalshaCalls / m.publishes, 3)} | ${n(m.evalshaUsPerCall, 2)} | ${n(m.pubsubCallsPerPublish, 2)} | ${n(m.pubsubUsPerCall, 2)} | ${n(m.cpuUsPerPublish, 2)} | ${m.cpuPct} (${n(m.idleCpuPct, 2)}) |`,
      );
    }
  }
  lines.push(
    "",
    `Redis CPU per publish is the redis-server's \`used_cpu_user + used_cpu_sys\` over the run, less its idle rate read for ${IDLE_MS / 1000} s before (cron, cluster bus, the edges' probes), divided by the publishes of its plates.`,
    "",
    ...saturationSection(saturation),
    ...sizing(all, saturation),
  );
  return lines;
}

function saturationSection(saturation: readonly SaturationFigures[]): string[] {
  if (saturation.length === 0) return [];
  return [
    "### One Redis at full CPU",
    "",
    "The edges on this machine need several times Redis' CPU per publish, so they cannot load a master fully. Here the harness replays an edge's own publish `EVALSHA` (captured with MONITOR, the edge then stopped) on one Redis, 4 connections × 32 commands in flight, with one subscriber connection on the channel; Redis alone on its core.",
    "",
    "| run | Redis | script publishes with | publishes/s | its CPU % | Redis CPU µs per publish | EVALSHA µs/call |",
    "|---|---|---|---|---|---|---|",
    ...saturation.map(
      (s) =>
        `| ${s.run} | ${s.redis} | ${s.pubsub} | ${fmt(s.callsPerS)} | ${s.cpuPct} | ${n(s.cpuUsPerCall, 2)} | ${n(s.evalshaUsPerCall, 2)} |`,
    ),
    "",
  ];
}

/** `values`' median, then their range in brackets when there are several, e.g. "7.1 (3.9–12.7)". */
function spread(values: readonly number[], format: (value: number) => string): string {
  if (values.length === 0) return "—";
  const m = format(median([...values])!);
  return values.length === 1 ? m : `${m} (${format(Math.min(...values))}–${format(Math.max(...values))})`;
}

const us2 = (value: number) => n(value, 2);
const one = (value: number) => n(value, 1);
const perS = (value: number) => fmt(Math.round(value));

/**
 * The sizing rule, from each run's own figures (a run's saturated master beside the same run's
 * cluster-1-edge): this machine's speed moves between runs, and a ratio of two figures of one run
 * moves less than either.
 */
function sizing(all: readonly ClusterRun[], saturation: readonly SaturationFigures[]): string[] {
  const perRun = saturation.flatMap((sat) => {
    const oneEdge = all.find((r) => r.setup === "cluster-1-edge" && r.run === sat.run);
    if (sat.redis !== "cluster master" || oneEdge === undefined) return [];
    return [
      {
        saturatedUs: sat.cpuUsPerCall,
        // The dearest master under one edge's load: the rule must hold for the master that costs most.
        loadedUs: Math.max(...oneEdge.masters.map((m) => m.cpuUsPerPublish)),
        edgeUs: oneEdge.edgeCpuUsPerPublish,
        edgePublishesPerS: oneEdge.publishesPerS,
      },
    ];
  });
  if (perRun.length === 0) return [];
  const share = Math.round(SIZING_CPU_SHARE * 100);
  const full = (us: number) => 1e6 / us;
  const planned = (us: number) => full(us) * SIZING_CPU_SHARE;
  const saturatedUs = median(perRun.map((r) => r.saturatedUs))!;
  const loadedUs = median(perRun.map((r) => r.loadedUs))!;
  const masters = (rate: number, us: number) => String(Math.max(1, Math.ceil(rate / planned(us))));
  const saturatedPerRun = perRun.map((r) => r.saturatedUs);
  const loadedPerRun = perRun.map((r) => r.loadedUs);
  const edgePerRun = perRun.map((r) => r.edgeUs);
  return [
    "## Sizing",
    "",
    "Each figure is the median over runs, its range in brackets; ratios are taken within a run.",
    "",
    `- One master at full CPU (saturated, above): ${spread(saturatedPerRun, us2)} µs of Redis CPU per publish, ` +
      `1e6 / ${us2(saturatedUs)} = **${perS(full(saturatedUs))} publishes/s** (runs: ${perS(Math.min(...saturatedPerRun.map(full)))} to ${perS(Math.max(...saturatedPerRun.map(full)))}). ` +
      `Under one edge's load (each master at a few % CPU, in small batches) the dearest master of cluster-1-edge spent ` +
      `${spread(loadedPerRun, us2)} µs per publish: 1e6 / ${us2(loadedUs)} = ${perS(full(loadedUs))} publishes/s, the floor.`,
    `- Planned at ${share}% of a master's core (the rest is headroom: bursts, a failover's replay, resharding): ` +
      `masters = ⌈publishes/s ÷ ${perS(planned(saturatedUs))}⌉, plates spread evenly over the slots; ` +
      `from the floor, ⌈publishes/s ÷ ${perS(planned(loadedUs))}⌉.`,
    "",
    `| publishes/s | masters (saturated figure, ${share}%) | masters (floor, ${share}%) |`,
    "|---|---|---|",
    ...SIZING_RATES.map((rate) => `| ${fmt(rate)} | ${masters(rate, saturatedUs)} | ${masters(rate, loadedUs)} |`),
    "",
    `- One edge at a full core: ${spread(edgePerRun, one)} µs of edge CPU per publish (cluster-1-edge), ` +
      `${spread(edgePerRun.map(full), perS)} publishes/s. One master at full CPU keeps ` +
      `**${spread(
        perRun.map((r) => r.edgeUs / r.saturatedUs),
        one,
      )} edges** (a core each, publishing flat out) busy, ` +
      `${spread(
        perRun.map((r) => r.edgeUs / r.loadedUs),
        one,
      )} by the floor; at ${share}% per master and per edge core alike the ratio is the same.`,
    `- At the throughput measured here (${spread(
      perRun.map((r) => r.edgePublishesPerS),
      perS,
    )} publishes/s from one edge ` +
      `whose core it shares with Redis), one master planned at ${share}% serves ` +
      `${spread(
        perRun.map((r) => planned(r.saturatedUs) / r.edgePublishesPerS),
        one,
      )} such edges.`,
    "",
  ];
}
