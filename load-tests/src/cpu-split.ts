/**
 * Where a Plate node's CPU goes per publish on W3's path, thread by thread, user and system time
 * apart: the node (and its Redis) pinned to CPU 0, the harness' keep-alive HTTP publishers and one
 * WebSocket subscriber on CPU 1, as bench.js runs them.
 *
 *   node load-tests/dist/cpu-split.js [--redis] [--warm 30000] [--count 100000] [--connections 64]
 *
 * After `--warm` publishes it reads /proc/PID/task/TID/stat of every thread of the node (and of
 * redis-server), publishes `--count` more, reads them again and prints µs of user and system CPU
 * per publish and voluntary context switches per publish for each thread with any, plus the rate.
 * It answers the question bench.js cannot: whether a slower path costs main-thread JavaScript,
 * kernel time (syscalls, sockets) or helper threads (GC, compiler). Linux only.
 */
import { readdirSync, readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { execFileSync } from "node:child_process";
import { startRedis } from "@plate/testing";
import { startPlate } from "./servers.js";
import { KEY, PLATE, W3Path } from "./w3-path.js";

/** The core the node and its Redis run on, and the harness' core: as bench.js. */
const SERVER_CPU = 0;
const HARNESS_CPU = 1;
/** Clock ticks per second of /proc's utime and stime (USER_HZ, 100 on Linux). */
const TICKS_PER_SECOND = 100;

const { values } = parseArgs({
  options: {
    redis: { type: "boolean", default: false },
    warm: { type: "string", default: "30000" },
    count: { type: "string", default: "100000" },
    connections: { type: "string", default: "64" },
  },
});
const warm = Number(values.warm);
const count = Number(values.count);
const connections = Number(values.connections);

interface ThreadTimes {
  readonly name: string;
  readonly user: number;
  readonly system: number;
  readonly voluntary: number;
}

/** Each thread of `pid` by task id: its name, user and system ticks, voluntary context switches. */
function threads(pid: number): Map<string, ThreadTimes> {
  const result = new Map<string, ThreadTimes>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8");
      const close = stat.lastIndexOf(")");
      const name = stat.slice(stat.indexOf("(") + 1, close);
      const fields = stat.slice(close + 2).split(" ");
      // Fields after the name, from 0: state is 0, utime is 11, stime is 12.
      const status = readFileSync(`/proc/${pid}/task/${tid}/status`, "utf8");
      const voluntary = Number(/^voluntary_ctxt_switches:\s+(\d+)$/m.exec(status)?.[1] ?? 0);
      result.set(tid, { name, user: Number(fields[11]), system: Number(fields[12]), voluntary });
    } catch {
      // The thread ended between the listing and the read.
    }
  }
  return result;
}

function report(label: string, before: Map<string, ThreadTimes>, after: Map<string, ThreadTimes>): void {
  const perPublish = (ticks: number) => ((ticks / TICKS_PER_SECOND) * 1e6) / count;
  let user = 0;
  let system = 0;
  for (const [tid, end] of after) {
    const start = before.get(tid) ?? { name: end.name, user: 0, system: 0, voluntary: 0 };
    const u = end.user - start.user;
    const s = end.system - start.system;
    const v = end.voluntary - start.voluntary;
    user += u;
    system += s;
    if (u + s === 0) continue;
    console.log(`  ${label} ${end.name.padEnd(16)} tid ${tid.padStart(7)}: user ${perPublish(u).toFixed(1).padStart(5)} µs, sys ${perPublish(s).toFixed(1).padStart(5)} µs, ${(v / count).toFixed(3)} voluntary switches per publish`);
  }
  console.log(`  ${label} total: user ${perPublish(user).toFixed(1)} µs, sys ${perPublish(system).toFixed(1)} µs per publish`);
}

execFileSync("taskset", ["-a", "-p", "-c", String(HARNESS_CPU), String(process.pid)], { stdio: "ignore" });
const redis = values.redis ? await startRedis({ cpu: SERVER_CPU, fromEnv: false }) : undefined;
const plate = await startPlate({ cpu: SERVER_CPU, redisUrl: redis?.url, plate: PLATE, key: KEY });
const redisPid = redis === undefined ? undefined : Number(execFileSync("pgrep", ["-f", `redis-server.*${redis.port}`], { encoding: "utf8" }).trim().split("\n")[0]);

let path: W3Path | undefined;
try {
  path = await W3Path.open(plate.port, plate.pid, connections);
  await path.publish(warm);
  const nodeBefore = threads(plate.pid);
  const redisBefore = redisPid === undefined ? undefined : threads(redisPid);
  const started = performance.now();
  await path.publish(count);
  const seconds = (performance.now() - started) / 1000;
  const nodeAfter = threads(plate.pid);
  console.log(`${values.redis ? "redis" : "embedded"}: ${Math.round(count / seconds)} publishes/s (${count} after ${warm}, ${connections} connections)`);
  report("node", nodeBefore, nodeAfter);
  if (redisPid !== undefined && redisBefore !== undefined) report("redis", redisBefore, threads(redisPid));
} finally {
  path?.close();
  await plate.stop();
  await redis?.stop();
}
