/**
 * Instructions per publish in a Plate node, counted by callgrind (valgrind): W3's path (the
 * harness' keep-alive HTTP publishers and one WebSocket subscriber) on the embedded default or on
 * Redis.
 *
 *   node load-tests/dist/instructions.js [--redis] [--warm 20000] [--count 5000] [--connections 16]
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
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { startRedis } from "@plate/testing";
import { HttpPublisher } from "./http-publisher.js";
import { encodePayload } from "./payload.js";
import { ACCEPTED } from "./publisher.js";
import { startPlate } from "./servers.js";
import { RunStats } from "./stats.js";
import { Subscriber } from "./subscriber.js";
import { plateTarget } from "./targets.js";
import { sourceAddress } from "./workload.js";

const PLATE = "bench";
const KEY = "bench-secret-0123456789abcdefghij";
const CHANNEL = "ch";
/** How long a node under valgrind may take to answer /readyz, in ms. */
const VALGRIND_START_MS = 300_000;

const { values } = parseArgs({
  options: {
    redis: { type: "boolean", default: false },
    warm: { type: "string", default: "20000" },
    count: { type: "string", default: "5000" },
    connections: { type: "string", default: "16" },
  },
});
const warm = Number(values.warm);
const count = Number(values.count);
const connections = Number(values.connections);

const dir = mkdtempSync(join(tmpdir(), "plate-instructions-"));
const out = join(dir, "callgrind.out");
// valgrind names its control pipe after HOST, LOGNAME and USER, and callgrind_control must find
// it: both get the same (Plate reads HOST too: the address it listens on).
const env = { HOST: "127.0.0.1", LOGNAME: process.env.LOGNAME ?? "plate", USER: process.env.USER ?? "plate" };
const redis = values.redis ? await startRedis() : undefined;
const plate = await startPlate({
  cpu: undefined,
  redisUrl: redis?.url,
  plate: PLATE,
  key: KEY,
  env,
  launcher: ["valgrind", "--tool=callgrind", "--separate-threads=yes", "--instr-atstart=no", `--callgrind-out-file=${out}`, `--log-file=${join(dir, "valgrind.log")}`],
  startTimeoutMs: VALGRIND_START_MS,
});
const control = (...args: string[]) => execFileSync("callgrind_control", [...args, String(plate.pid)], { env: { ...process.env, ...env }, stdio: "ignore" });

const target = plateTarget({ name: "plate", port: plate.port, plate: PLATE, key: KEY, pids: [plate.pid] });
const stats = new RunStats();
stats.begin(0, performance.now());
const tracker = stats.tracker(false);
const publishers = Array.from({ length: connections }, () => new HttpPublisher(target, sourceAddress()));
const seqs = new Array<number>(connections).fill(0);

try {
  const subscriber = await Subscriber.open(target, "ws", CHANNEL, { tracker, eager: true, localAddress: sourceAddress() });
  await publish(warm);
  control("-i", "on");
  await publish(count);
  control("-d");
  control("-i", "off");
  subscriber.close();
  // The dump's file for the main thread (thread 1).
  const summary = /^summary: (\d+)$/m.exec(readFileSync(`${out}.1-01`, "utf8"));
  if (summary === null) throw new Error(`no summary in ${out}.1-01`);
  const perPublish = Math.round(Number(summary[1]) / count);
  console.log(`${values.redis ? "redis" : "embedded"}: ${perPublish} instructions per publish (main thread, ${count} publishes after ${warm}, ${connections} connections); callgrind_annotate ${out}.1-01`);
} finally {
  for (const publisher of publishers) publisher.close();
  await plate.stop();
  await redis?.stop();
}

/** Publishes `total` messages, each publisher one at a time, then waits until the subscriber has them all. */
async function publish(total: number): Promise<void> {
  const before = tracker.received;
  let sent = 0;
  await Promise.all(
    publishers.map(async (publisher, p) => {
      while (sent < total) {
        sent++;
        const outcome = await publisher.publish(CHANNEL, encodePayload(seqs[p]!++, p, performance.now()));
        if (outcome !== ACCEPTED) throw new Error(`publish refused: ${outcome}`);
      }
    }),
  );
  while (tracker.received - before < total) await new Promise((r) => setTimeout(r, 50));
}
