/**
 * What the publish script costs Redis, this checkout's against another revision's, per script of
 * a given size: a Plate node on its own Redis takes W3's keep-alive publishes until one of its
 * publish scripts (`EVALSHA`) carries at least `--capture` messages; that script, captured as sent
 * (MONITOR), is cut to each of `--sizes` messages and replayed, as each revision's script in
 * turn, `--calls` times a round, one connection writing them all at once. Prints the Redis time a
 * call (`INFO commandstats`, usec per call of EVALSHA) and a message.
 *
 *   node load-tests/dist/script-cost.js [--base HEAD] [--sizes 1,24,48] [--rounds 3] [--calls 6000]
 *
 * The scripts are read from packages/broker/src/redis-history.ts: this checkout's file and the
 * `--base` revision's (`git show`), so a change to the script is measured before it is built or
 * committed. Redis runs on CPU 0 and the harness on CPU 1; alternate rounds, since the machine drifts.
 * The replay publishes to W3's channel again and again: its stream stays at its retention, so
 * every message drops one entry, as in a long W3 run.
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { connect } from "node:net";
import type { Socket } from "node:net";
import { parseArgs } from "node:util";
import { redisCommand, startRedis } from "@plate/testing";
import { captureEvalsha } from "./script-replay.js";
import { startPlate } from "./servers.js";
import { KEY, PLATE, W3Path } from "./w3-path.js";

/** The core Redis runs on, and the harness'. */
const REDIS_CPU = 0;
const HARNESS_CPU = 1;
/** Publishers of the W3 path that fill the scripts, and publishes before the capture. */
const PUBLISHERS = 64;
const WARM_PUBLISHES = 5000;
/** Publishes the capture may take to see a script of `--capture` messages. */
const CAPTURE_PUBLISHES = 20_000;
/** Replays of each script before its counted ones (Lua compiled, stream at its retention). */
const WARM_CALLS = 200;
/** The publish script's settings before its messages (ARGV), and the ARGV holding its message count. */
const SETTINGS_ARGS = 25;
const MESSAGES_ARG = 11;
const SOURCE = "packages/broker/src/redis-history.ts";
/** Where the number constants the script interpolates are defined. */
const CONSTANTS = "packages/broker/src/broker.ts";

const { values } = parseArgs({
  options: {
    base: { type: "string", default: "HEAD" },
    sizes: { type: "string", default: "1,24,48" },
    rounds: { type: "string", default: "3" },
    calls: { type: "string", default: "6000" },
    capture: { type: "string", default: "48" },
  },
});
const sizes = values.sizes.split(",").map(Number);
const rounds = Number(values.rounds);
const calls = Number(values.calls);
const capture = Number(values.capture);

/**
 * The publish script's Lua in a copy of redis-history.ts (its template literal, evaluated as
 * TypeScript would). What it interpolates (`${NAME}`) is a number constant of broker.ts
 * (`constants`, the same revision's): `export const NAME = 16 * 1024;`.
 */
function publishLua(source: string, constants: string): string {
  const start = source.indexOf("const PUBLISH = `");
  const end = source.indexOf("`;\n", start);
  if (start < 0 || end < 0) throw new Error(`no PUBLISH script found in ${SOURCE}`);
  const raw = source.slice(start + "const PUBLISH = `".length, end);
  // The template literal's escapes the script uses: \\ and \`; then its interpolations.
  return raw.replace(/\\([\\`$])|\$\{(\w+)\}/g, (_, escaped: string | undefined, name: string | undefined) =>
    escaped ?? String(numberConstant(constants, name!)),
  );
}

/** The value of `export const NAME = ...;` in `source`, a product of decimal numbers. */
function numberConstant(source: string, name: string): number {
  const match = new RegExp(`export const ${name} = ([\\d_ *]+);`).exec(source);
  if (match === null) throw new Error(`the PUBLISH script interpolates \${${name}}, not a number constant of ${CONSTANTS}`);
  return match[1]!.split("*").reduce((product, factor) => product * Number(factor.trim().replaceAll("_", "")), 1);
}

const root = new URL("../../", import.meta.url);
const atBase = (file: string) => execFileSync("git", ["show", `${values.base}:${file}`], { cwd: root, encoding: "utf8" });
const inCheckout = (file: string) => readFileSync(new URL(file, root), "utf8");
const scripts: [string, string][] = [
  [values.base, publishLua(atBase(SOURCE), atBase(CONSTANTS))],
  ["checkout", publishLua(inCheckout(SOURCE), inCheckout(CONSTANTS))],
];

/** The captured script's arguments cut to its first `count` messages (each is its letters, their arguments, its body). */
function firstMessages(args: readonly Buffer[], count: number): Buffer[] {
  const keys = Number(args[2]!.toString());
  let at = 3 + keys + SETTINGS_ARGS;
  for (let i = 0; i < count; i++) {
    const letters = args[at]!.toString();
    at += 1;
    for (const letter of letters) at += letter === "m" || letter === "R" ? 2 : letter === "b" ? 0 : 1;
    at += 1;
  }
  const cut = args.slice(0, at);
  cut[3 + keys + MESSAGES_ARG - 1] = Buffer.from(String(count));
  return cut;
}

/** Writes `count` copies of `command` and resolves when as many replies (bulk strings) came back; an error reply rejects. */
function replay(socket: Socket, command: Buffer, count: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let pending: Buffer = Buffer.alloc(0);
    let replies = 0;
    const onData = (chunk: Buffer) => {
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
      for (;;) {
        if (pending.length === 0) break;
        if (pending[0] !== 0x24) {
          socket.off("data", onData);
          return reject(new Error(`Redis refused a replay: ${pending.toString("latin1", 0, 300)}`));
        }
        const lineEnd = pending.indexOf("\r\n");
        if (lineEnd < 0) break;
        const end = lineEnd + 2 + Number(pending.toString("latin1", 1, lineEnd)) + 2;
        if (pending.length < end) break;
        pending = pending.subarray(end);
        replies += 1;
      }
      if (replies < count) return;
      socket.off("data", onData);
      resolve();
    };
    socket.on("data", onData);
    socket.write(Buffer.concat(Array.from({ length: count }, () => command)));
  });
}

/** EVALSHA's calls and µs so far. */
async function evalshaStats(port: number): Promise<[number, number]> {
  const match = /cmdstat_evalsha:calls=(\d+),usec=(\d+)/.exec(await redisCommand(port, ["INFO", "commandstats"]));
  return match === null ? [0, 0] : [Number(match[1]), Number(match[2])];
}

execFileSync("taskset", ["-a", "-p", "-c", String(HARNESS_CPU), String(process.pid)], { stdio: "ignore" });
const redis = await startRedis({ fromEnv: false, cpu: REDIS_CPU });
const plate = await startPlate({ cpu: HARNESS_CPU, redisUrl: redis.url, plate: PLATE, key: KEY });
let path: W3Path | undefined;
let socket: Socket | undefined;
try {
  path = await W3Path.open(plate.port, plate.pid, PUBLISHERS);
  await path.publish(WARM_PUBLISHES);
  const w3 = path;
  const captured = await captureEvalsha(
    redis.port,
    () => w3.publish(CAPTURE_PUBLISHES),
    (args) => Number(args[3 + Number(args[2]!.toString()) + MESSAGES_ARG - 1]?.toString()) >= capture,
  );
  const keys = Number(captured[2]!.toString());
  const messages = Number(captured[3 + keys + MESSAGES_ARG - 1]!.toString());
  console.log(`captured a W3 publish script of ${messages} messages`);
  const shas = new Map<string, string>();
  for (const [name, lua] of scripts) shas.set(name, await redisCommand(redis.port, ["SCRIPT", "LOAD", lua]));
  const opened = connect({ host: "127.0.0.1", port: redis.port });
  socket = opened;
  await new Promise((resolve) => opened.once("connect", resolve));
  for (let round = 1; round <= rounds; round++) {
    for (const size of sizes.filter((n) => n <= messages)) {
      for (const [name, sha] of shas) {
        const args = [Buffer.from("evalsha"), Buffer.from(sha), ...firstMessages(captured, size).slice(2)];
        const command = Buffer.concat([
          Buffer.from(`*${args.length}\r\n`),
          ...args.flatMap((arg) => [Buffer.from(`$${arg.length}\r\n`), arg, Buffer.from("\r\n")]),
        ]);
        await replay(opened, command, WARM_CALLS);
        const [callsBefore, usBefore] = await evalshaStats(redis.port);
        await replay(opened, command, calls);
        const [callsAfter, usAfter] = await evalshaStats(redis.port);
        const perCall = (usAfter - usBefore) / (callsAfter - callsBefore);
        console.log(
          `round ${round}, ${String(size).padStart(3)} messages, ${name.padEnd(10)}: ${perCall.toFixed(1).padStart(6)} µs a script, ${(perCall / size).toFixed(2)} µs a message`,
        );
      }
    }
  }
} finally {
  socket?.destroy();
  path?.close();
  await plate.stop();
  await redis.stop();
}
