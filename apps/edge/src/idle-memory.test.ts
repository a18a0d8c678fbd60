import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { connect } from "node:net";
import type { Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "@plate/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EdgeProcess } from "./test-support/process.js";

/**
 * What a node holds per idle subscriber, read as an operator reads it: the resident memory of a
 * `node dist/main.js` process before and after it takes thousands of connections. The bench
 * (`load-tests`, W4) measures the same with 10,000 connections per transport on a fresh node; here
 * after a warm-up, so the heap's own first growth is not counted. Seen here on 2026-11-25: SSE
 * 4.3 KB and WebSocket 2.4 KB each; SSE streams left with Node's HTTP server as ordinary responses
 * (before transports/socket-takeover.ts) failed this bound. Nchan holds about 10 KB (the bench).
 */
const CONNECTIONS = 4000;
const WARM_UP = 2000;
const MAX_KB_PER_CONNECTION = 9;

const KEY = "idle-memory-key-0123456789abcdef";

function rssBytes(pid: number): number {
  const match = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return Number(match![1]) * 1024;
}

/** Opens an idle subscription over a raw socket and resolves once the node has answered it. */
function subscribe(port: number, index: number, transport: "sse" | "ws"): Promise<Socket> {
  const socket = connect({ host: "127.0.0.1", port, localAddress: `127.0.0.${2 + (index % 16)}` });
  const path = transport === "sse" ? "/mem/pubsub/idle/subscribe" : "/mem/pubsub/idle/ws";
  const extra =
    transport === "sse"
      ? "Accept: text/event-stream\r\n"
      : `Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${randomBytes(16).toString("base64")}\r\nSec-WebSocket-Version: 13\r\n`;
  socket.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${KEY}\r\n${extra}\r\n`);
  return new Promise((resolve, reject) => {
    let head = "";
    socket.setEncoding("latin1");
    socket.on("error", reject);
    const onData = (chunk: string) => {
      head += chunk;
      // SSE: the ready event; WebSocket: the ready frame after the 101.
      if (!head.includes("ready")) return;
      socket.off("data", onData);
      socket.pause();
      if (!/^HTTP\/1\.1 (200|101)/.test(head)) reject(new Error(head.slice(0, 200)));
      else resolve(socket);
    };
    socket.on("data", onData);
  });
}

async function openMany(port: number, transport: "sse" | "ws", count: number, into: Socket[]): Promise<void> {
  // In waves, so the node is never asked for thousands of handshakes at once.
  for (let i = 0; i < count; i += 100) {
    const wave = [];
    for (let j = i; j < Math.min(count, i + 100); j++) wave.push(subscribe(port, j, transport));
    into.push(...(await Promise.all(wave)));
  }
}

describe("memory a node holds per idle subscriber", () => {
  let dataDir: string;
  let proc: EdgeProcess;
  const sockets: Socket[] = [];

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), "plate-idle-"));
    proc = new EdgeProcess(await freePort(), {
      DATA_DIR: dataDir,
      DEMO_PLATE: "false",
      LOG_LEVEL: "warn",
      BOOTSTRAP_PLATES: JSON.stringify({ mem: KEY }),
      MAX_CONNECTIONS_PER_PLATE: "0",
    });
    await proc.ready();
  });
  afterAll(async () => {
    for (const socket of sockets) socket.destroy();
    proc.kill();
    await rm(dataDir, { recursive: true, force: true });
  });

  for (const transport of ["sse", "ws"] as const) {
    it(`holds ${CONNECTIONS} idle ${transport === "sse" ? "SSE streams" : "WebSockets"} in under ${MAX_KB_PER_CONNECTION} KB each`, async () => {
      const port = proc.port;
      await openMany(port, transport, WARM_UP, sockets);
      await new Promise((r) => setTimeout(r, 300));
      const before = rssBytes(proc.child.pid!);
      await openMany(port, transport, CONNECTIONS, sockets);
      await new Promise((r) => setTimeout(r, 300));
      const perConnectionKb = (rssBytes(proc.child.pid!) - before) / CONNECTIONS / 1024;
      expect(perConnectionKb).toBeLessThan(MAX_KB_PER_CONNECTION);
      // Still live and subscribed: the count the node reports includes them all.
      const metrics = await (await fetch(`${proc.url}/metrics`)).text();
      const open = /^plate_connections\{transport="(\w+)"\} (\d+)/gm;
      const counts = Object.fromEntries([...metrics.matchAll(open)].map((m) => [m[1], Number(m[2])]));
      expect(counts[transport]).toBe(WARM_UP + CONNECTIONS);
    }, 60_000);
  }
});
