/**
 * Instructions per publish in a Plate node, counted by callgrind (valgrind): W3's path (the
 * harness' keep-alive HTTP publishers and one WebSocket subscriber) on the embedded default or on
 * Redis.
 *
 *   node load-tests/dist/instructions.js [--redis] [--warm 20000] [--count 5000] [--connections 16] [--top 40]
 *   node load-tests/dist/instructions.js --workload w1-ws|w1-sse [--subscribers 200] [--warm 100] [--count 200] [--redis] [--top 40]
 *
 * Publishes/s (W3) drift by more than 10% between runs on a shared machine; an instruction count
 * is the same for the same build and workload whatever else the machine does (two runs of one
 * build differ by about 0.1%), so it can tell a change of a few percent, and where it went
 * (`callgrind_annotate` on the file it names). It is not a speed: a node spends time in the kernel,
 * in cache misses and waiting, which it does not count, so a claim of speed still comes from
 * `bench.js`. Counted: the node's main thread (V8 compiles and collects garbage on others too),
 * from the end of `--warm` publishes (JIT warmed up) to the last of `--count` more. Each time-based
 * cache of the node (a timestamp formatted once per millisecond, say) misses more often under
 * valgrind, which runs the node about 50 times slower. Needs valgrind (Debian's `valgrind`).
 *
 * `--workload w1-ws` (or `w1-sse`) counts W1's fan-out instead: one publisher, `--subscribers`
 * subscribers of one channel over that transport, each message published alone, in instructions
 * per delivery. Only the node's user space is counted: a delivery's write syscall and the loopback
 * receive it runs (the larger share of its CPU, see docs/performance.md) are the kernel's.
 *
 * With `--redis` the Redis runs under callgrind too, counted over the same publishes (its main
 * thread, which runs every command and script): the Redis side of the same change, as steady.
 *
 * `--top N` also prints the N functions with the most instructions per publish, exclusive and
 * inclusive: the node runs with `--perf-basic-prof`, so JavaScript compiled by V8 (an address to
 * callgrind) is named from the node's /tmp/perf-PID.map. Inclusive counts of recursive or
 * re-entered functions count a call inside another more than once: read them as "under".
 */
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { eventually, freePort, redisCommand } from "@plate/testing";
import { startPlate } from "./servers.js";
import { W1Path } from "./w1-path.js";
import { KEY, PLATE, W3Path } from "./w3-path.js";

/** How long a node under valgrind may take to answer /readyz, in ms. */
const VALGRIND_START_MS = 300_000;

const { values } = parseArgs({
  options: {
    redis: { type: "boolean", default: false },
    workload: { type: "string", default: "w3" },
    warm: { type: "string" },
    count: { type: "string" },
    connections: { type: "string", default: "16" },
    subscribers: { type: "string", default: "200" },
    top: { type: "string", default: "0" },
  },
});
const workload = values.workload;
if (workload !== "w3" && workload !== "w1-ws" && workload !== "w1-sse") throw new Error(`--workload is w3, w1-ws or w1-sse, not ${workload}`);
const w1 = workload !== "w3";
const warm = Number(values.warm ?? (w1 ? "100" : "20000"));
const count = Number(values.count ?? (w1 ? "200" : "5000"));
const connections = Number(values.connections);
const subscribers = Number(values.subscribers);
/** What the count is divided by: publishes (W3), or deliveries (W1: each message to every subscriber). */
const units = w1 ? count * subscribers : count;
const unit = w1 ? "delivery" : "publish";
const top = Number(values.top);

const dir = mkdtempSync(join(tmpdir(), "plate-instructions-"));
const out = join(dir, "callgrind.out");
// valgrind names its control pipe after HOST, LOGNAME and USER, and callgrind_control must find
// it: both get the same (Plate reads HOST too: the address it listens on).
const env = { HOST: "127.0.0.1", LOGNAME: process.env.LOGNAME ?? "plate", USER: process.env.USER ?? "plate" };
// A Redis under valgrind answers about 50 times slower: the node waits for it up to 60 s (the most these settings take).
const slowRedis = { REDIS_COMMAND_TIMEOUT_MS: "60000", REDIS_PROBE_TIMEOUT_MS: "60000" };
const redis = values.redis ? await startRedisUnderCallgrind() : undefined;
const plate = await startPlateOrStopRedis({
  cpu: undefined,
  redisUrl: redis?.url,
  plate: PLATE,
  key: KEY,
  env: { ...env, ...slowRedis },
  // --perf-basic-prof also starts V8's log (isolate-*.log in the working directory): sent nowhere.
  nodeArgs: top > 0 ? ["--perf-basic-prof", "--logfile=/dev/null", "--no-logfile-per-isolate"] : [],
  launcher: ["valgrind", "--tool=callgrind", "--separate-threads=yes", "--instr-atstart=no", `--callgrind-out-file=${out}`, `--log-file=${join(dir, "valgrind.log")}`],
  startTimeoutMs: VALGRIND_START_MS,
});
const control = (...args: string[]) => {
  for (const pid of [plate.pid, redis?.pid]) {
    if (pid !== undefined) execFileSync("callgrind_control", [...args, String(pid)], { env: { ...process.env, ...env }, stdio: "ignore" });
  }
};

let path: W1Path | W3Path | undefined;
try {
  path = w1 ? await W1Path.open(plate.port, plate.pid, workload === "w1-ws" ? "ws" : "sse", subscribers) : await W3Path.open(plate.port, plate.pid, connections);
  await path.publish(warm);
  control("-i", "on");
  await path.publish(count);
  control("-d");
  control("-i", "off");
  // The dump's file for the main thread (thread 1).
  const summary = /^summary: (\d+)$/m.exec(readFileSync(`${out}.1-01`, "utf8"));
  if (summary === null) throw new Error(`no summary in ${out}.1-01`);
  const perUnit = Math.round(Number(summary[1]) / units);
  const shape = w1 ? `${workload}, ${count} messages to ${subscribers} subscribers after ${warm}` : `${count} publishes after ${warm}, ${connections} connections`;
  console.log(`${values.redis ? "redis" : "embedded"}: ${perUnit} instructions per ${unit} (main thread, ${shape}); callgrind_annotate ${out}.1-01`);
  if (redis !== undefined) {
    const redisSummary = /^summary: (\d+)$/m.exec(readFileSync(`${redis.out}.1-01`, "utf8"));
    if (redisSummary === null) throw new Error(`no summary in ${redis.out}.1-01`);
    console.log(`redis-server: ${Math.round(Number(redisSummary[1]) / units)} instructions per ${unit} (main thread); callgrind_annotate ${redis.out}.1-01`);
  }
  if (top > 0) {
    const symbols = perfMap(`/tmp/perf-${plate.pid}.map`);
    for (const inclusive of [false, true]) {
      console.log(`\n${inclusive ? "inclusive" : "exclusive"} instructions per ${unit}, top ${top}:`);
      for (const [name, total] of functionCosts(`${out}.1-01`, inclusive, symbols).slice(0, top)) {
        console.log(`${String(Math.round(total / units)).padStart(8)}  ${name}`);
      }
    }
  }
} finally {
  path?.close();
  await plate.stop();
  redis?.stop();
}

/** A perf map's JIT code ranges (start, end, name), sorted by start. */
function perfMap(file: string): { start: bigint; end: bigint; name: string }[] {
  const ranges = [];
  for (const line of readFileSync(file, "utf8").split("\n")) {
    const match = /^([0-9a-f]+) ([0-9a-f]+) (.*)$/.exec(line);
    if (match === null) continue;
    const start = BigInt(`0x${match[1]}`);
    ranges.push({ start, end: start + BigInt(`0x${match[2]}`), name: match[3]! });
  }
  return ranges.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
}

/** The name of JIT code at `address` (the last range that starts at or before it and holds it). */
function jitName(ranges: readonly { start: bigint; end: bigint; name: string }[], address: bigint): string | undefined {
  let lo = 0;
  let hi = ranges.length - 1;
  let found: { start: bigint; end: bigint; name: string } | undefined;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (ranges[mid]!.start <= address) {
      found = ranges[mid];
      lo = mid + 1;
    } else hi = mid - 1;
  }
  return found !== undefined && address < found.end ? found.name : undefined;
}

/** Instructions by function of a callgrind file (`callgrind_annotate`), JIT addresses named, most first. */
function functionCosts(file: string, inclusive: boolean, ranges: readonly { start: bigint; end: bigint; name: string }[]): [string, number][] {
  const text = execFileSync("callgrind_annotate", ["--threshold=100", `--inclusive=${inclusive ? "yes" : "no"}`, file], { encoding: "utf8", maxBuffer: 1 << 28 });
  const totals = new Map<string, number>();
  for (const line of text.split("\n")) {
    const match = /^\s*([\d,]+) \([ \d.]+%\)\s+(.*)$/.exec(line);
    if (match === null || match[2]!.startsWith("PROGRAM TOTALS")) continue;
    let name = match[2]!.replace(/ \[[^\]]*\]$/, "").replace(/^\?\?\?:/, "");
    const address = /^0x([0-9a-f]+)$/.exec(name);
    if (address !== null) name = jitName(ranges, BigInt(`0x${address[1]}`)) ?? "JIT (unnamed)";
    totals.set(name, (totals.get(name) ?? 0) + Number(match[1]!.replaceAll(",", "")));
  }
  return [...totals].sort((a, b) => b[1] - a[1]);
}

/** A redis-server of its own, under callgrind (counting off until `control` turns it on). */
async function startRedisUnderCallgrind(): Promise<{ url: string; pid: number; out: string; stop(): void }> {
  const port = await freePort();
  const redisOut = join(dir, "redis.callgrind.out");
  const child = spawn(
    "valgrind",
    ["--tool=callgrind", "--separate-threads=yes", "--instr-atstart=no", `--callgrind-out-file=${redisOut}`, `--log-file=${join(dir, "redis-valgrind.log")}`,
      "redis-server", "--port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--save", "", "--appendonly", "no", "--protected-mode", "no", "--loglevel", "warning",
      // Redis rewrites its process title over its environment, where valgrind later reads the names of its control pipe.
      "--set-proc-title", "no"],
    { stdio: "ignore", env: { ...process.env, ...env } },
  );
  const up = await eventually(() => redisCommand(port, ["PING"]).then((reply) => reply === "PONG", () => false), VALGRIND_START_MS);
  if (!up) throw new Error(`redis-server under valgrind did not answer within ${VALGRIND_START_MS} ms`);
  return { url: `redis://127.0.0.1:${port}`, pid: child.pid!, out: redisOut, stop: () => child.kill("SIGTERM") };
}

/** `startPlate`, stopping the Redis under valgrind when the node does not start. */
async function startPlateOrStopRedis(options: Parameters<typeof startPlate>[0]): ReturnType<typeof startPlate> {
  try {
    return await startPlate(options);
  } catch (err) {
    redis?.stop();
    throw err;
  }
}
