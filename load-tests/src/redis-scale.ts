#!/usr/bin/env node
/**
 * Redis at scale: the pattern tax (what pattern subscriptions of one plate cost every publish of
 * another, now and with the PSUBSCRIBE design before) and publish throughput on a Redis Cluster
 * (per master: EVALSHA calls and Redis CPU per publish), with the sizing rule drawn from them.
 * Starts its own redis-servers, cluster and edges (`npm run build` first), Redis and edges pinned
 * to CPU 0, the harness to CPU 1. Prints the tables and the JSON of every run; writes the tables
 * to `docs/redis-scale-figures.md` (notes under "## Reading this run" are kept) and appends the
 * JSON to `load-tests/results/redis-scale.jsonl`. Not a test: never run in CI.
 *
 *   npm run build && node load-tests/dist/redis-scale.js            (about 3.5 minutes)
 *   node load-tests/dist/redis-scale.js --quick --out /tmp/scale.md  (about 40 s)
 */
import { execFileSync } from "node:child_process";
import { appendFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { SETUPS, runClusterThroughput } from "./cluster-throughput.js";
import type { Setup } from "./cluster-throughput.js";
import { keptNotes } from "./notes.js";
import { stopAll } from "./running.js";
import { runPatternTax } from "./pattern-tax.js";
import { markdown } from "./scale-report.js";
import type { ScaleReport } from "./scale-report.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
/** Redis runs here, and by default the edges too (as bench.ts runs servers); the harness on the other core. */
const SERVER_CPU = 0;
const HARNESS_CPU = 1;

/** Sizes: the full run's, or a smoke run's (`--quick`). */
function sizes(quick: boolean) {
  return {
    patternCounts: [0, 1000, 10_000],
    tax: { publishes: quick ? 2000 : 5000, rawMinMs: quick ? 500 : 1000 },
    cluster: {
      masters: 3,
      publishers: 64,
      durationMs: quick ? 3000 : 10_000,
      runs: quick ? 1 : 3,
      saturationMs: quick ? 1000 : 3000,
    },
  };
}

// An interrupted run stops every redis-server and edge it started.
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    void stopAll().finally(() => process.exit(130));
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      quick: { type: "boolean", default: false },
      runs: { type: "string" },
      out: { type: "string", default: `${ROOT}docs/redis-scale-figures.md` },
      jsonl: { type: "string", default: `${ROOT}load-tests/results/redis-scale.jsonl` },
      parts: { type: "string", default: "tax,cluster" },
      // 1: the edges share the harness' core, so Redis has CPU 0 to itself (its figures then
      // carry no preemption by the edges; throughput is then the harness' and edges' core's).
      "edge-cpu": { type: "string", default: String(SERVER_CPU) },
      setups: { type: "string", default: SETUPS.join(",") },
      // Every edge writes a V8 CPU profile into this folder when it stops.
      profile: { type: "string" },
      // Settings of every edge, K=V,K=V (e.g. KEY_CACHE_MS=60000).
      "edge-env": { type: "string" },
      // Measure nothing: write --out again from the last line of --jsonl (after the tables' code changed).
      render: { type: "boolean", default: false },
    },
  });
  if (values.render) {
    const last = readFileSync(values.jsonl, "utf8").trim().split("\n").pop()!;
    const recorded = JSON.parse(last) as ScaleReport;
    const recordedRuns = Math.max(1, ...recorded.cluster.runs.map((r) => r.run), ...recorded.tax.map((c) => c.run));
    writeFileSync(values.out, markdown(recorded, recorded.quick === true, recordedRuns) + keptNotes(values.out));
    process.stderr.write(`wrote ${values.out} from the last run in ${values.jsonl}\n`);
    return;
  }
  const s = sizes(values.quick);
  const runs = values.runs === undefined ? s.cluster.runs : Number(values.runs);
  const parts = values.parts.split(",");
  const edgeEnv = Object.fromEntries((values["edge-env"] ?? "").split(",").filter(Boolean).map(setting));
  const pinning = { redisCpu: SERVER_CPU, edgeCpu: Number(values["edge-cpu"]), edgeEnv };
  const setups = values.setups.split(",") as Setup[];
  for (const setup of setups)
    if (!SETUPS.includes(setup)) throw new Error(`unknown setup "${setup}"; one of ${SETUPS.join(", ")}`);
  const edgeNodeArgs = values.profile === undefined ? [] : ["--cpu-prof", "--cpu-prof-dir", values.profile];
  // The harness on its own core, away from the servers.
  execFileSync("taskset", ["-a", "-p", "-c", String(HARNESS_CPU), String(process.pid)], { stdio: "ignore" });
  const log = (line: string) => process.stderr.write(line + "\n");
  const started = Date.now();

  const tax = parts.includes("tax")
    ? await runPatternTax({ patternCounts: s.patternCounts, ...s.tax, runs, ...pinning }, log)
    : [];
  const cluster = parts.includes("cluster")
    ? await runClusterThroughput({ ...s.cluster, runs, ...pinning, setups, edgeNodeArgs }, log)
    : { runs: [], saturation: [] };

  const command = `node load-tests/dist/redis-scale.js ${process.argv.slice(2).join(" ")}`.trim();
  const report: ScaleReport = {
    date: new Date().toISOString(),
    command,
    quick: values.quick,
    machine: machine(),
    ...pinning,
    harnessCpu: HARNESS_CPU,
    seconds: Math.round((Date.now() - started) / 1000),
    tax,
    cluster,
  };
  const text = markdown(report, values.quick, runs);
  mkdirSync(dirname(values.jsonl), { recursive: true });
  appendFileSync(values.jsonl, JSON.stringify(report) + "\n");
  writeFileSync(values.out, text + keptNotes(values.out));
  process.stdout.write(text + "\n```json\n" + JSON.stringify(report, null, 2) + "\n```\n");
  log(`wrote ${values.out} and ${values.jsonl} (${report.seconds} s)`);
}

/** One `--edge-env` setting, split at its first "=" only: a value may hold one. */
function setting(pair: string): [string, string] {
  const at = pair.indexOf("=");
  if (at < 1) throw new Error(`--edge-env: "${pair}" is not NAME=VALUE`);
  return [pair.slice(0, at), pair.slice(at + 1)];
}

function machine(): string {
  const redis = execFileSync("redis-server", ["--version"], { encoding: "utf8" });
  return `${cpus().length} × ${cpus()[0]?.model ?? "CPU"}, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}, Redis ${/v=(\S+)/.exec(redis)?.[1] ?? "?"}`;
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
