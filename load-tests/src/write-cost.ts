import { fork } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { execFileSync } from "node:child_process";
import { once } from "node:events";
import { connect, createServer } from "node:net";
import type { Socket } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { directSend, sendDirect } from "@plate/direct-send";
import { median } from "./table.js";

/*
 * What one write to a subscriber costs the writing process, through Node's stream
 * (`socket.write`) and through `@plate/direct-send` (`sendDirect`, SUBSCRIBER_DIRECT_SEND, issue
 * 18): W1's shape without the rest of the node. The writer holds SOCKETS loopback connections
 * from a reader process and writes the same MESSAGE_BYTES Buffer to each, a round every
 * ROUND_GAP_MS, ROUNDS rounds; its user and system CPU (process.cpuUsage) divided by the writes
 * is the figure. The writer runs on CPU 0 and the reader on CPU 1 (taskset), as bench.js places a
 * server and its harness; on loopback the writer's CPU also runs the reader's TCP receive, as it
 * does for a server. Each measurement is a fresh writer process; the two ways alternate.
 *
 *   npm run build && node load-tests/dist/write-cost.js [rounds] [nagle|nodelay]
 */

const SOCKETS = 1_000;
/** W1's envelope of a 64-byte payload is about this long on SSE. */
const MESSAGE_BYTES = 210;
const ROUNDS = 2_000;
const ROUND_GAP_MS = 5;
const WRITER_CPU = 0;
const READER_CPU = 1;

type Way = "socket.write" | "sendDirect";

const [role, arg1, arg2] = process.argv.slice(2);
if (role === "reader") runReader(Number(arg1));
else if (role === "writer") await runWriter(arg1 as Way, arg2 === "nodelay");
else await main(Number(role ?? 3), arg1 === "nodelay");

/** Connects SOCKETS sockets to `port` and reads whatever arrives. */
function runReader(port: number): void {
  for (let i = 0; i < SOCKETS; i++) connect(port, "127.0.0.1").on("data", () => undefined);
}

async function runWriter(way: Way, noDelay: boolean): Promise<void> {
  if (way === "sendDirect" && directSend === undefined) throw new Error("@plate/direct-send did not build here");
  const sockets: Socket[] = [];
  const server = createServer((socket) => {
    socket.setNoDelay(noDelay);
    sockets.push(socket);
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const reader = pinned(fork(fileURLToPath(import.meta.url), ["reader", String((server.address() as { port: number }).port)]), READER_CPU);
  while (sockets.length < SOCKETS) await sleep(10);
  const message = Buffer.alloc(MESSAGE_BYTES, "x");
  const memos = sockets.map(() => ({ fd: undefined, batch: 0 }));
  const before = process.cpuUsage();
  for (let round = 0; round < ROUNDS; round++) {
    if (way === "sendDirect") for (let i = 0; i < sockets.length; i++) sendDirect(directSend!, sockets[i]!, message, memos[i]!);
    else for (const socket of sockets) socket.write(message);
    await sleep(ROUND_GAP_MS);
  }
  const used = process.cpuUsage(before);
  reader.kill();
  const writes = SOCKETS * ROUNDS;
  process.send!({ user: used.user / writes, system: used.system / writes });
  process.exit(0);
}

async function main(rounds: number, noDelay: boolean): Promise<void> {
  const results: Record<Way, { user: number; system: number }[]> = { "socket.write": [], sendDirect: [] };
  for (let i = 0; i < rounds; i++) {
    for (const way of ["socket.write", "sendDirect"] as const) {
      const writer = pinned(fork(fileURLToPath(import.meta.url), ["writer", way, noDelay ? "nodelay" : "nagle"]), WRITER_CPU);
      const [result] = (await once(writer, "message")) as [{ user: number; system: number }];
      results[way].push(result);
      console.log(`round ${i + 1} ${way}: ${result.user.toFixed(3)} µs user + ${result.system.toFixed(3)} µs system a write`);
    }
  }
  console.log(`\n${SOCKETS} sockets (${noDelay ? "TCP_NODELAY" : "Nagle"}), ${MESSAGE_BYTES} bytes a write, medians of ${rounds}:`);
  console.log("| way | user µs/write | system µs/write | total µs/write |\n|---|---|---|---|");
  for (const way of ["socket.write", "sendDirect"] as const) {
    const of = (pick: (r: { user: number; system: number }) => number) => median(results[way].map(pick))!.toFixed(2);
    console.log(`| ${way} | ${of((r) => r.user)} | ${of((r) => r.system)} | ${of((r) => r.user + r.system)} |`);
  }
}

function pinned(child: ChildProcess, cpu: number): ChildProcess {
  execFileSync("taskset", ["-a", "-p", "-c", String(cpu), String(child.pid)], { stdio: "ignore" });
  return child;
}

