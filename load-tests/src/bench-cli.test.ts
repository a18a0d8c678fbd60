import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
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
    for (const name of ["plate-embedded", "plate-redis", "nchan", "nchan-redis", "bare-node", "w1-filtered", "w3-batch", "w6"]) expect(run.stdout).toContain(name);
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
});
