import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";

/** The built benchmark, as the README runs it (`test` builds first, see turbo.json). */
const BENCH = fileURLToPath(new URL("../dist/bench.js", import.meta.url));
const dir = mkdtempSync(join(tmpdir(), "bench-cli-"));
/** Where each refused command line was told to write its table: it must never be written. */
const OUT = join(dir, "performance.md");

function bench(...args: string[]) {
  const run = spawnSync(process.execPath, [BENCH, "--out", OUT, "--jsonl", join(dir, "bench.jsonl"), ...args], { encoding: "utf8", timeout: 30_000 });
  return { status: run.status, stdout: run.stdout, stderr: run.stderr };
}

describe("bench.js's command line", () => {
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("prints its usage for --help, with every target and workload, and runs nothing", () => {
    const run = bench("--help");
    expect(run.status).toBe(0);
    expect(run.stdout).toMatch(/^usage: node load-tests\/dist\/bench\.js/);
    for (const name of ["plate-embedded", "plate-redis", "nchan", "nchan-redis", "bare-node", "w1-filtered", "w3-batch", "w6", "--trace", "--gc-log", "--plate-log"]) expect(run.stdout).toContain(name);
    expect(existsSync(OUT)).toBe(false);
  });

  it.each([
    [["--nope"], /Unknown option '--nope'/],
    [["--targets", "nginx"], /unknown target nginx; one of plate-embedded/],
    [["--workloads", "w9"], /unknown workload w9; one of w1/],
    [["--runs", "0"], /--runs 0: a whole number of at least 1/],
    [["--runs", "three"], /--runs three: a whole number of at least 1/],
    [["--plate-env", "HISTORY_COUNT"], /--plate-env: "HISTORY_COUNT" is not NAME=VALUE/],
  ])("refuses %j in one line with the usage, no stack trace, and writes no table", (args, message) => {
    const run = bench(...args);
    expect(run.status).toBe(2);
    const [first, ...rest] = run.stderr.split("\n");
    expect(first).toMatch(/^bench: /);
    expect(first).toMatch(message);
    expect(rest.join("\n")).toMatch(/^usage: /);
    expect(run.stderr).not.toMatch(/^\s+at /m);
    expect(existsSync(OUT)).toBe(false);
  });

  it("gives every Plate node the Node flags of --plate-node-args", () => {
    const profiles = join(dir, "profiles");
    const run = spawnSync(process.execPath, [BENCH, "--quick", "--runs", "1", "--targets", "plate-embedded", "--workloads", "w3", "--out", join(dir, "flags.md"), "--jsonl", join(dir, "flags.jsonl"), `--plate-node-args=--cpu-prof,--cpu-prof-dir,${profiles}`], {
      encoding: "utf8",
      timeout: 90_000,
    });
    expect(run.stderr).toBe("");
    expect(run.status).toBe(0);
    // The node wrote its CPU profile when it stopped: it was started with the flags.
    expect(readdirSync(profiles).filter((name) => name.endsWith(".cpuprofile"))).toHaveLength(1);
  }, 120_000);

  it("writes each fan-out step's sampled messages with --trace: every message once, in send order, on the clock perf stamps with; and with --gc-log each Plate node's collections on the same clock; and with --plate-log each node's log", () => {
    const trace = join(dir, "w1.trace");
    const gcLog = join(dir, "w1.gc");
    const plateLog = join(dir, "w1.log");
    const before = Number(process.hrtime.bigint()) / 1e6;
    const run = spawnSync(process.execPath, [BENCH, "--quick", "--runs", "1", "--targets", "plate-embedded", "--workloads", "w1", "--out", join(dir, "quick.md"), "--jsonl", join(dir, "quick.jsonl"), "--trace", trace, "--gc-log", gcLog, "--plate-log", plateLog], {
      encoding: "utf8",
      timeout: 90_000,
    });
    const after = Number(process.hrtime.bigint()) / 1e6;
    expect(run.stderr).toBe("");
    expect(run.status).toBe(0);
    const lines = readFileSync(trace, "utf8").trim().split("\n").map((line) => JSON.parse(line) as { workload: string; target: string; transport: string; clock: string; messages: [number, number, number][] });
    expect(lines.map((l) => [l.workload, l.target, l.transport, l.clock])).toEqual([
      ["W1", "plate-embedded", "sse", "CLOCK_MONOTONIC"],
      ["W1", "plate-embedded", "ws", "CLOCK_MONOTONIC"],
    ]);
    const reports = readFileSync(join(dir, "quick.jsonl"), "utf8").trim().split("\n").map((line) => JSON.parse(line) as { best: { firstReadMs: { samples: number } }; waitMs: { server: number; harness: number }; stealPct: number[] });
    // Each run says how long the node's and the harness's main threads waited for their CPU, and
    // how much of each CPU the host took (a share of each of the machine's CPUs).
    for (const r of reports) expect([r.waitMs.server >= 0, r.waitMs.harness >= 0]).toEqual([true, true]);
    for (const r of reports) expect(r.stealPct.map((pct) => pct >= 0 && pct <= 100)).toEqual(cpus().map(() => true));
    expect(run.stdout).toMatch(/, steal CPU 0 [\d.]+% CPU 1 [\d.]+%/);
    for (const [i, { messages }] of lines.entries()) {
      // As many as the report's first reads summarise: every sampled message once.
      expect(messages.length).toBe(reports[i]!.best.firstReadMs.samples);
      expect(messages.length).toBeGreaterThan(0);
      for (const [j, [sent, first, last]] of messages.entries()) {
        expect(sent).toBeGreaterThan(before);
        expect(sent + last).toBeLessThan(after);
        expect(first).toBeLessThanOrEqual(last);
        if (j > 0) expect(sent).toBeGreaterThanOrEqual(messages[j - 1]![0]);
      }
    }
    // A node a transport, each starting with scavenges; every collection within the run, on the trace's clock.
    const collections = readFileSync(gcLog, "utf8").trim().split("\n").map((line) => JSON.parse(line) as { pid: number; mono: number; ms: number; kind: string });
    expect(new Set(collections.map((c) => c.pid)).size).toBe(2);
    expect(collections.some((c) => c.kind === "scavenge")).toBe(true);
    for (const c of collections) {
      expect(["scavenge", "mark-compact", "incremental", "weak-callbacks"]).toContain(c.kind);
      expect(c.mono).toBeGreaterThan(before);
      expect(c.mono + c.ms).toBeLessThan(after);
      expect(c.ms).toBeGreaterThanOrEqual(0);
    }
    // Both nodes' logs at info, a JSON object a line: each said it was listening, on the embedded broker.
    const logLines = readFileSync(plateLog, "utf8").trim().split("\n").map((line) => JSON.parse(line) as { level: string; msg: string; broker?: string });
    expect(logLines.filter((l) => l.msg === "listening").map((l) => [l.level, l.broker])).toEqual([
      ["info", "embedded"],
      ["info", "embedded"],
    ]);
  }, 120_000);
});
