#!/usr/bin/env node
/**
 * The side-by-side benchmark: Plate (embedded default and Redis) and Nchan (memory and Redis) on
 * this machine, the same workloads in one run, servers and Redis pinned to one CPU and the harness
 * to the other. Writes JSON lines of every run and a Markdown table of medians and Plate/Nchan
 * ratios (`docs/performance.md`).
 *
 *   npm run build && bash load-tests/nchan/install.sh && node load-tests/dist/bench.js
 *   node load-tests/dist/bench.js --quick --runs 1 --targets plate-embedded   (a smoke run)
 *   node load-tests/dist/bench.js --runs 1 --targets plate-embedded --workloads w2-ramp --profile /tmp/prof
 *     (each Plate node, and the bare node, writes a .cpuprofile into /tmp/prof when it stops)
 *   node load-tests/dist/bench.js --runs 3 --targets plate-embedded,plate-redis --workloads w3,w5
 *     (publish over HTTP beside publish over route 9's WebSocket; Plate only)
 *   node load-tests/dist/bench.js --runs 3 --targets plate-embedded,plate-redis --workloads w6
 *     (presence churn: joins + leaves/s with 1,000 members watching; Plate only)
 *   node load-tests/dist/bench.js --runs 3 --targets plate-embedded,plate-redis --workloads w1,w1-filtered
 *     (1,000 subscribers each with its own filter, CPU per message beside W1's; Plate only)
 *   node load-tests/dist/bench.js --targets plate-embedded,plate-redis --plate-env HISTORY_COUNT=0 ...
 *     (settings for every Plate node; compare two runs with load-tests/dist/compare.js)
 *   node load-tests/dist/bench.js --runs 1 --targets plate-embedded --workloads w1 --trace /tmp/w1.trace
 *     (when each sampled message was sent and read, to line up with `perf sched record -k mono`)
 */
import { execFileSync } from "node:child_process";
import { appendFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { GC_LOG_ENV } from "./gc-log.js";
import { runIdle } from "./idle.js";
import { keptNotes } from "./notes.js";
import { startNchan } from "./nchan.js";
import { freePort, startRedis } from "@plate/testing";
import { runPresenceChurn } from "./presence-churn.js";
import type { ChurnReport } from "./presence-churn.js";
import { startBareNode, startPlate } from "./servers.js";
import type { Started } from "./servers.js";
import { bareTarget, nchanTarget, plateTarget } from "./targets.js";
import type { Target } from "./targets.js";
import { FILTERED, FILTERED_FAST, ROWS, churnTable, filterTable, fmt, median, publishTable, ratio } from "./table.js";
import type { Report, Row } from "./table.js";
import { runFanout } from "./workload.js";
import type { FanoutWorkload } from "./workload.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const PLATE = "bench";
const KEY = "bench-secret-0123456789abcdefghij";
/** Servers and Redis run here; the harness on the other core. */
const SERVER_CPU = 0;
const HARNESS_CPU = 1;

const TARGETS = ["plate-embedded", "plate-redis", "nchan", "nchan-redis", "bare-node"] as const;
type TargetName = (typeof TARGETS)[number];
const WORKLOADS = ["w1", "w1-ramp", "w1-filtered", "w2", "w2-ramp", "w3", "w3-batch", "w4", "w5", "w6"] as const;
type WorkloadName = (typeof WORKLOADS)[number];

/** Workload sizes: the issue's, or small ones for a smoke run (`--quick`). */
function sizes(quick: boolean) {
  return {
    w1Subscribers: quick ? 200 : 1000,
    w1Rate: 100,
    /** Publishes every fixed-rate run's lead-in lasts for at least (`FanoutWorkload.leadInPublishes`): 30 s at W1's rate. */
    leadInPublishes: quick ? 0 : 3000,
    w1DurationMs: quick ? 3000 : 10_000,
    // W1-filtered runs at w1Rate (its CPU per message beside W1's) and at this rate, where each of
    // the w1Subscribers, whose filters each match 1 message in w1Subscribers, gets 1 msg/s.
    w1FilteredRate: quick ? 200 : 1000,
    w2Channels: quick ? 100 : 1000,
    w2PerChannel: 10,
    w2Rate: quick ? 200 : 1000,
    w2DurationMs: quick ? 3000 : 10_000,
    rampStepMs: 3000,
    rampMaxSteps: quick ? 6 : 30,
    w1RampStart: 100,
    w2RampStart: 500,
    w3Publishers: 64,
    /** Messages in each of W3-batch's requests (route 12 takes up to 100). */
    w3BatchMessages: 10,
    w3DurationMs: quick ? 3000 : 10_000,
    w5Publishers: quick ? 200 : 1000,
    w4Connections: quick ? 1000 : 10_000,
    w6Members: quick ? 200 : 1000,
    // One change keeps the node busy for its fan-out to every member: ten in flight saturate it,
    // and more would only add queueing to the latency (Little's law: in flight / rate).
    w6Churners: 10,
    w6DurationMs: quick ? 3000 : 10_000,
    eagerSubscribers: 50,
    pacedPublishers: 32,
  };
}

interface Running {
  readonly target: Target;
  /** The target's Redis, when it has one of its own. */
  readonly redisPort: number | undefined;
  readonly stop: () => Promise<void>;
}

/** What is running now, stopped on SIGINT/SIGTERM so an interrupted run leaves no server behind. */
const live = new Set<Running>();
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    void Promise.all([...live].map((r) => r.stop())).finally(() => process.exit(130));
  });
}

/** `--profile DIR`: Plate nodes and the bare node write a V8 CPU profile there when they stop (`node --cpu-prof`). */
let plateNodeArgs: readonly string[] = [];
/**
 * `--plate-node-args=LIST`: more of Node's flags for Plate nodes only, after the project's own
 * (`EDGE_NODE_FLAGS`), so a V8 flag given again wins (`--plate-node-args=--max-semi-space-size=8`).
 */
let plateOnlyNodeArgs: readonly string[] = [];
/** `--plate-env K=V,K=V`: settings of every Plate node (e.g. `HISTORY_COUNT=0`). */
let plateEnv: Record<string, string> = {};
/** `--trace FILE`: every fan-out step's sampled messages go there (`FanoutWorkload.traceFile`). */
let traceFile: string | undefined;
/** `--gc-log FILE`: every Plate node's collections go there (gc-log.ts). */
let gcLogFile: string | undefined;
/** `--plate-log FILE`: every Plate node's log (its standard output) is appended there. */
let plateLogFile: string | undefined;
/** The module a Plate node imports for `--gc-log`. */
const GC_LOG_HOOK = new URL("./gc-log-hook.js", import.meta.url).href;

/** Starts target `name` (and its Redis); `env` adds settings of this workload's Plate node. */
async function start(name: TargetName, env: Record<string, string> = {}): Promise<Running> {
  const redis = name.endsWith("redis") ? await startRedis({ cpu: SERVER_CPU, fromEnv: false }) : undefined;
  let server: Started | undefined;
  let target: Target;
  try {
    if (name === "bare-node") {
      server = await startBareNode(SERVER_CPU, plateNodeArgs);
      target = bareTarget({ name, port: server.port, pids: [server.pid] });
    } else if (name.startsWith("plate")) {
      const gcLog: { args: string[]; env: Record<string, string> } =
        gcLogFile === undefined ? { args: [], env: {} } : { args: ["--import", GC_LOG_HOOK], env: { [GC_LOG_ENV]: gcLogFile } };
      const plate = await startPlate({
        cpu: SERVER_CPU,
        redisUrl: redis?.url,
        plate: PLATE,
        key: KEY,
        nodeArgs: [...plateNodeArgs, ...gcLog.args, ...plateOnlyNodeArgs],
        // Its log at `info` (auto's switches of TCP_NODELAY, say) unless --plate-env sets LOG_LEVEL.
        env: { ...(plateLogFile === undefined ? {} : { LOG_LEVEL: "info" }), ...env, ...plateEnv, ...gcLog.env },
        ...(plateLogFile === undefined ? {} : { logFile: plateLogFile }),
      });
      server = plate;
      target = plateTarget({ name, port: plate.port, plate: PLATE, key: KEY, pids: [plate.pid] });
    } else {
      const nchan = await startNchan({ port: await freePort(), cpu: SERVER_CPU, ...(redis === undefined ? {} : { redisUrl: redis.url }) });
      server = { port: 0, pid: nchan.pid, stop: () => nchan.stop() };
      target = nchanTarget({ name, port: Number(new URL(nchan.url).port), pids: nchanPids(nchan.pid) });
    }
  } catch (err) {
    // A server that did not start must not leave its Redis running behind the failed run.
    await redis?.stop();
    throw err;
  }
  const running: Running = {
    target,
    redisPort: redis?.port,
    stop: async () => {
      live.delete(running);
      await server?.stop();
      await redis?.stop();
    },
  };
  live.add(running);
  return running;
}

/** Nchan's master and its worker (memory and CPU are the worker's). */
function nchanPids(master: number): number[] {
  const children = readFileSync(`/proc/${master}/task/${master}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number);
  return [master, ...children];
}

/**
 * Runs one workload, each transport on a server started fresh for it: what one workload leaves
 * behind (Nchan's message buffers, a heap grown for 10,000 connections and not given back) must
 * not flatter or burden the next; W4 read no growth at all on an Nchan that W2 had already grown.
 */
async function runWorkload(name: WorkloadName, fresh: (env?: Record<string, string>) => Promise<Running>, quick: boolean): Promise<Report[]> {
  const s = sizes(quick);
  const out: Report[] = [];
  for (const transport of ["sse", "ws"] as const) {
    // Publish throughput does not depend on the subscriber's transport: W3 and W5 are measured
    // once, with a WebSocket subscriber.
    // W6 speaks route 9's WebSocket only.
    if ((name === "w3" || name === "w3-batch" || name === "w5" || name === "w6") && transport === "sse") continue;
    if (name === "w1-filtered") {
      // Each rate on a server of its own, as every workload. Every subscriber reads eagerly: it gets
      // one message in w1Subscribers, so the harness reads no more than with W1's 50 eager ones,
      // and the latency has as many samples as deliveries.
      for (const [workload, rate] of [[FILTERED, s.w1Rate], [FILTERED_FAST, s.w1FilteredRate]] as const) {
        const running = await fresh();
        try {
          out.push(
            await runFanout({
              name: workload,
              target: running.target,
              transport,
              channels: 1,
              subscribersPerChannel: s.w1Subscribers,
              eagerSubscribers: s.w1Subscribers,
              publishers: s.pacedPublishers,
              filtered: true,
              leadInPublishes: s.leadInPublishes,
              ...(traceFile === undefined ? {} : { traceFile }),
              mode: { kind: "fixed", rate, durationMs: s.w1DurationMs },
            }),
          );
        } finally {
          await running.stop();
        }
      }
      continue;
    }
    // W6's channel holds its steady members and every churner at once.
    const running = await fresh(name === "w6" ? { PRESENCE_MAX_MEMBERS: String(s.w6Members + s.w6Churners) } : {});
    const target = running.target;
    const fanout = (w: Omit<FanoutWorkload, "target" | "transport" | "eagerSubscribers" | "leadInPublishes">) =>
      runFanout({
        ...w,
        target,
        transport,
        eagerSubscribers: s.eagerSubscribers,
        leadInPublishes: s.leadInPublishes,
        ...(running.redisPort === undefined ? {} : { redisPort: running.redisPort }),
        ...(traceFile === undefined ? {} : { traceFile }),
      });
    try {
      switch (name) {
        case "w1":
          out.push(await fanout({ name: "W1", channels: 1, subscribersPerChannel: s.w1Subscribers, publishers: s.pacedPublishers, mode: { kind: "fixed", rate: s.w1Rate, durationMs: s.w1DurationMs } }));
          break;
        case "w1-ramp":
          out.push(await fanout({ name: "W1-ramp", channels: 1, subscribersPerChannel: s.w1Subscribers, publishers: s.pacedPublishers, mode: { kind: "ramp", startRate: s.w1RampStart, factor: 1.25, stepMs: s.rampStepMs, maxSteps: s.rampMaxSteps } }));
          break;
        case "w2":
          out.push(await fanout({ name: "W2", channels: s.w2Channels, subscribersPerChannel: s.w2PerChannel, publishers: s.pacedPublishers, mode: { kind: "fixed", rate: s.w2Rate, durationMs: s.w2DurationMs } }));
          break;
        case "w2-ramp":
          out.push(await fanout({ name: "W2-ramp", channels: s.w2Channels, subscribersPerChannel: s.w2PerChannel, publishers: s.pacedPublishers, mode: { kind: "ramp", startRate: s.w2RampStart, factor: 1.25, stepMs: s.rampStepMs, maxSteps: s.rampMaxSteps } }));
          break;
        case "w3":
          // The bare node takes publishes only: it has no subscriber to deliver to.
          out.push(await fanout({ name: "W3", channels: 1, subscribersPerChannel: target.name === "bare-node" ? 0 : 1, publishers: s.w3Publishers, mode: { kind: "max", durationMs: s.w3DurationMs } }));
          break;
        case "w3-batch":
          // W3 with route 12's batches: each request publishes `w3BatchMessages` to the channel, in order.
          out.push(await fanout({ name: "W3-batch", channels: 1, subscribersPerChannel: 1, publishers: s.w3Publishers, batch: s.w3BatchMessages, mode: { kind: "max", durationMs: s.w3DurationMs } }));
          break;
        case "w4":
          out.push(await runIdle(target, transport, s.w4Connections));
          break;
        case "w5":
          // W3's duration and single subscriber; publishers are route 9 WebSockets, one publish
          // in flight each (the server carries out a connection's requests one at a time).
          out.push(await fanout({ name: "W5", channels: 1, subscribersPerChannel: 1, publishers: s.w5Publishers, publishVia: "ws", mode: { kind: "max", durationMs: s.w3DurationMs } }));
          break;
        case "w6":
          out.push(
            await runPresenceChurn({
              target,
              members: s.w6Members,
              churners: s.w6Churners,
              eagerWatchers: s.eagerSubscribers,
              durationMs: s.w6DurationMs,
              ...(running.redisPort === undefined ? {} : { redisPort: running.redisPort }),
            }),
          );
          break;
      }
    } finally {
      await running.stop();
    }
  }
  return out;
}

function markdown(results: Map<TargetName, Report[][]>, command: string, runs: number, quick: boolean): string {
  const cell = (name: TargetName, row: Row) => median((results.get(name) ?? []).map((run) => row.pick(run)).filter((v): v is number => v !== undefined));
  const lines = [
    "# Performance: Plate and Nchan side by side",
    "",
    `Measured ${new Date().toISOString().slice(0, 10)} on ${cpus().length} × ${cpus()[0]?.model ?? "CPU"}, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}.`,
    `Servers and their Redis pinned to CPU ${SERVER_CPU} (\`taskset -c ${SERVER_CPU}\`), the harness to CPU ${HARNESS_CPU}. Median of ${runs} run${runs === 1 ? "" : "s"}${quick ? " (quick sizes: a smoke run, not the issue's workloads)" : ""}.`,
    "",
    `Command: \`${command}\``,
    "",
    "| workload | unit | Plate embedded | Nchan memory | ratio | Plate Redis | Nchan Redis | ratio | target |",
    "|---|---|---|---|---|---|---|---|---|",
  ];
  for (const row of ROWS) {
    const pe = cell("plate-embedded", row);
    const nm = cell("nchan", row);
    const pr = cell("plate-redis", row);
    const nr = cell("nchan-redis", row);
    const nchan = (v: number | undefined) => row.nchan ?? fmt(v);
    lines.push(`| ${row.label} | ${row.unit} | ${fmt(pe)} | ${nchan(nm)} | ${ratio(pe, nm)} | ${fmt(pr)} | ${nchan(nr)} | ${ratio(pr, nr)} | ${row.target} |`);
  }
  lines.push(
    "",
    "Ratios are Plate / Nchan: above 1 is better for Plate on throughput rows, below 1 on latency and memory rows.",
    "A ramp step is sustained when its p99 latency is at most 100 ms, nothing was lost, no publish failed and the publishers achieved 95% of its rate.",
    "Every run's full report (each step, loss, duplicates, reordering, latency percentiles, server and harness CPU) is in the JSON lines file next to this table's command output.",
    "",
    ...publishTable(results),
    ...churnTable(results),
    ...filterTable(results),
  );
  return lines.join("\n");
}

const USAGE = `usage: node load-tests/dist/bench.js [options]
  --targets LIST      comma-separated, of ${TARGETS.join(", ")} (default: all)
  --workloads LIST    comma-separated, of ${WORKLOADS.join(", ")} (default: all)
  --runs N            runs of each target and workload, N >= 1 (default 3); the table gives medians
  --quick             small sizes: a smoke run, not the issue's workloads
  --out FILE          the Markdown table (default docs/performance.md; the notes below its table are kept)
  --jsonl FILE        every run's report, appended (default load-tests/results/bench.jsonl)
  --profile DIR       Plate nodes and the bare node write a V8 CPU profile there when they stop
  --plate-env K=V,... settings of every Plate node
  --plate-node-args=LIST  comma-separated flags for Node in every Plate node, after the project's
                      own (--max-semi-space-size=4): --plate-node-args=--max-semi-space-size=8
  --trace FILE        each fan-out step's sampled messages, a JSON line a step, appended: send time on
                      CLOCK_MONOTONIC, first and last read (to line up with perf record -k mono)
  --gc-log FILE       every Plate node's collections, a JSON line each, appended: start on
                      CLOCK_MONOTONIC, pause and kind (to line up with --trace)
  --plate-log FILE    every Plate node's log (its standard output, JSON lines at LOG_LEVEL info
                      unless --plate-env sets it), appended
  -h, --help          this text
`;

/** A command line the benchmark cannot run: told in one line with the usage, before anything starts. */
class UsageError extends Error {}

function parseCommandLine() {
  try {
    return parseArgs({
      options: {
        targets: { type: "string", default: TARGETS.join(",") },
        workloads: { type: "string", default: WORKLOADS.join(",") },
        runs: { type: "string", default: "3" },
        quick: { type: "boolean", default: false },
        out: { type: "string", default: `${ROOT}docs/performance.md` },
        jsonl: { type: "string", default: `${ROOT}load-tests/results/bench.jsonl` },
        profile: { type: "string" },
        "plate-env": { type: "string" },
        "plate-node-args": { type: "string" },
        trace: { type: "string" },
        "gc-log": { type: "string" },
        "plate-log": { type: "string" },
        help: { type: "boolean", short: "h", default: false },
      },
    }).values;
  } catch (err) {
    throw new UsageError(err instanceof Error ? err.message : String(err));
  }
}

async function main(): Promise<void> {
  const values = parseCommandLine();
  if (values.help) {
    process.stdout.write(USAGE);
    return;
  }
  if (values["plate-env"] !== undefined) {
    plateEnv = Object.fromEntries(values["plate-env"].split(",").map(setting));
  }
  if (values.profile !== undefined) plateNodeArgs = ["--cpu-prof", "--cpu-prof-dir", values.profile];
  if (values["plate-node-args"] !== undefined) plateOnlyNodeArgs = values["plate-node-args"].split(",");
  traceFile = values.trace;
  gcLogFile = values["gc-log"];
  plateLogFile = values["plate-log"];
  const targets = values.targets.split(",") as TargetName[];
  const workloads = values.workloads.split(",") as WorkloadName[];
  for (const t of targets) if (!TARGETS.includes(t)) throw new UsageError(`unknown target ${t}; one of ${TARGETS.join(", ")}`);
  for (const w of workloads) if (!WORKLOADS.includes(w)) throw new UsageError(`unknown workload ${w}; one of ${WORKLOADS.join(", ")}`);
  const runs = Number(values.runs);
  // Anything else ran nothing and wrote an empty table over --out (docs/performance.md by default).
  if (!Number.isInteger(runs) || runs < 1) throw new UsageError(`--runs ${values.runs}: a whole number of at least 1`);
  if (workloads.includes("w1-filtered") && !workloads.includes("w1")) {
    process.stdout.write("W1-filtered's CPU per message is compared with W1's of the same invocation: add w1 to --workloads for that column\n");
  }
  // The harness on its own core, away from the servers.
  execFileSync("taskset", ["-a", "-p", "-c", String(HARNESS_CPU), String(process.pid)], { stdio: "ignore" });
  mkdirSync(dirname(values.jsonl), { recursive: true });

  const results = new Map<TargetName, Report[][]>();
  for (let run = 1; run <= runs; run++) {
    for (const name of targets) {
      const reports: Report[] = [];
      for (const workload of workloads) {
        if (name === "bare-node" && workload !== "w3") {
          process.stdout.write(`run ${run} ${name} ${workload.toUpperCase()}: not measured (the bare node is W3's reference only)\n`);
          continue;
        }
        if (workload === "w5" && !name.startsWith("plate")) {
          process.stdout.write(`run ${run} ${name} W5: skipped (the harness publishes to Nchan over HTTP only)\n`);
          continue;
        }
        if (workload === "w3-batch" && !name.startsWith("plate")) {
          process.stdout.write(`run ${run} ${name} W3-batch: not measured (no batch publish route)\n`);
          continue;
        }
        if (workload === "w6" && !name.startsWith("plate")) {
          process.stdout.write(`run ${run} ${name} W6: not measured (Nchan has no presence)\n`);
          continue;
        }
        if (workload === "w1-filtered" && !name.startsWith("plate")) {
          process.stdout.write(`run ${run} ${name} W1-filtered: not measured (Nchan has no filters)\n`);
          continue;
        }
        for (const report of await runWorkload(workload, (env) => start(name, env), values.quick)) {
          reports.push(report);
          appendFileSync(values.jsonl, JSON.stringify({ run, ...report }) + "\n");
          process.stdout.write(summaryLine(report, run) + "\n");
        }
      }
      results.set(name, [...(results.get(name) ?? []), reports]);
    }
  }
  const command = `node load-tests/dist/bench.js ${process.argv.slice(2).join(" ")}`.trim();
  writeFileSync(values.out, markdown(results, command, runs, values.quick) + keptNotes(values.out));
  process.stdout.write(`wrote ${values.out} and ${values.jsonl}\n`);
}

/** One `--plate-env` setting, split at its first "=" only: a value may hold one (NODE_OPTIONS=--flag=value). */
function setting(pair: string): [string, string] {
  const at = pair.indexOf("=");
  if (at < 1) throw new UsageError(`--plate-env: "${pair}" is not NAME=VALUE`);
  return [pair.slice(0, at), pair.slice(at + 1)];
}

function summaryLine(report: Report, run: number): string {
  if ("changesPerS" in report) return churnLine(report, run);
  if (!("steps" in report)) {
    return `run ${run} ${report.target} W4 ${report.transport}: ${report.connections} idle, ${report.kbPerConnection} KB each after 2 s, ${report.kbPerConnectionAtRest} KB at rest`;
  }
  const b = report.best;
  const best =
    b === undefined
      ? "no sustained step"
      : `${b.publishedPerS} msg/s, ${b.deliveredPerS} deliveries/s, p99 ${b.latencyMs.p99} ms ` +
        `(first read p50 ${b.firstReadMs.p50} p99 ${b.firstReadMs.p99}, spread p99 ${b.spreadMs.p99}), lost ${b.lost}`;
  const filtered = report.filtered ? `, wrong ${report.wrongDeliveries}` : "";
  const failures = Object.entries(b?.publishFailures ?? {}).map(([why, n]) => `${why} ${n}`).join(", ");
  const redis = report.redis === undefined ? "" : `, Redis ${report.redis.cpuUsPerPublish} µs CPU and ${report.redis.scriptUsPerPublish} µs of publish script per publish, ${report.redis.publishesPerScript} publishes per script`;
  const waited = report.waitMs === undefined ? "" : `, run-queue wait server ${report.waitMs.server} ms, harness ${report.waitMs.harness} ms`;
  const stolen = report.stealPct === undefined ? "" : `, steal ${report.stealPct.map((pct, cpu) => `CPU ${cpu} ${pct}%`).join(" ")}`;
  return `run ${run} ${report.target} ${report.workload} ${report.transport}: ${best}${filtered}${failures === "" ? "" : `, failed: ${failures}`} (steps ${report.steps.length}, server CPU ${report.serverCpuPct}% = ${report.serverCpuS} s${redis}, harness CPU ${report.harnessCpuPct}%${waited}${stolen}, dropped ${report.subscribersDropped})`;
}

function churnLine(r: ChurnReport, run: number): string {
  const failures = Object.entries(r.failures).map(([why, n]) => `${why} ${n}`).join(", ");
  const redis = r.redisCpuPct === undefined ? "" : `, Redis CPU ${r.redisCpuPct}%`;
  return (
    `run ${run} ${r.target} W6: ${r.changesPerS} changes/s, ${r.deliveredPerS} diffs/s, p50 ${r.latencyMs.p50} ms, p99 ${r.latencyMs.p99} ms, ` +
    `missed ${r.missed} (${r.watchersShort} watchers), extra ${r.extra}, order gaps ${r.order.gaps} repeats ${r.order.repeats} unknown ${r.order.unknown}` +
    `${failures === "" ? "" : `, failed: ${failures}`} (server CPU ${r.serverCpuPct}%${redis}, harness CPU ${r.harnessCpuPct}%, CPUs ${r.machineCpuPct.join("/")}% busy, dropped ${r.watchersDropped}, setup ${r.setupS} s)`
  );
}

main().catch((err: unknown) => {
  if (err instanceof UsageError) {
    process.stderr.write(`bench: ${err.message}\n${USAGE}`);
    process.exit(2);
  }
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
