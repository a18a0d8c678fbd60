import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { connect } from "node:net";
import type { Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "@plate/testing";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { KEYS, eventually } from "../test-support/node.js";
import { EdgeProcess } from "../test-support/process.js";
import { mintPath } from "../test-support/calls.js";

/**
 * A WebSocket client that sends and never reads must not be able to grow a node: every reply the
 * server owes it (pong, error frame, protocol pong) counts against SLOW_CONSUMER_MAX_BYTES like
 * the messages do. Measured on a `node dist/main.js` process by its resident memory, as an
 * operator sees it. Before replies were counted, the 10 MB of `{"type":"ping"}` frames below grew
 * a node by 60 to 90 MB (seen 2026-12) and the client was never dropped; empty protocol pings were
 * cut off by `ws` itself (terminated, not counted as a drop).
 */
const MAX_BUFFERED = 65536;
/** What one flood may send at most: 10 MB of frames. */
const FLOOD_BYTES = 10_000_000;
/** Largest growth of the node's RSS allowed after a flood. */
const MAX_GROWTH_MB = 40;

function rssBytes(pid: number): number {
  const match = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return Number(match![1]) * 1024;
}

/** A client frame (masked, as RFC 6455 requires of clients; a zero mask leaves the payload as is). */
function clientFrame(opcode: number, payload: Buffer): Buffer {
  if (payload.length > 125) throw new Error("small frames only");
  return Buffer.concat([Buffer.from([0x80 | opcode, 0x80 | payload.length, 0, 0, 0, 0]), payload]);
}

const TEXT = 0x1;
const PING = 0x9;

/** A raw socket that never reads what the server sends, and whether it has closed. */
interface UnreadSocket {
  readonly socket: Socket;
  readonly closed: () => boolean;
}

/**
 * Opens a WebSocket on a raw socket that never reads what the server sends: the handshake goes out,
 * then `first` (if any), then `frame` over and over (in batches, waiting for the socket to drain)
 * until the socket closes or `FLOOD_BYTES` are sent.
 */
async function flood(
  port: number,
  path: string,
  headers: string,
  frame: Buffer,
  first?: Buffer,
): Promise<UnreadSocket> {
  const socket: Socket = connect({ host: "127.0.0.1", port });
  socket.pause();
  let closed = false;
  socket.on("error", () => undefined);
  socket.on("close", () => (closed = true));
  await new Promise<void>((resolve) => socket.once("connect", () => resolve()));
  socket.write(
    `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: ${randomBytes(16).toString("base64")}\r\nSec-WebSocket-Version: 13\r\n${headers}\r\n`,
  );
  if (first !== undefined) socket.write(first);
  const batch = Buffer.concat(Array.from({ length: 2000 }, () => frame));
  let sent = 0;
  while (!closed && sent < FLOOD_BYTES) {
    if (!socket.write(batch)) await drained(socket);
    sent += batch.length;
  }
  return { socket, closed: () => closed };
}

/** Resolves once `socket` can take more writes, or has closed. */
function drained(socket: Socket): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      socket.off("drain", done).off("close", done);
      resolve();
    };
    socket.on("drain", done).on("close", done);
  });
}

/** The value of `plate_connections_dropped_total{reason="slow_consumer"}`, or 0. */
async function slowConsumerDrops(url: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith('plate_connections_dropped_total{reason="slow_consumer"}'));
  return line === undefined ? 0 : Number(line.split(" ").pop());
}

describe(`WebSocket clients that never read (SLOW_CONSUMER_MAX_BYTES=${MAX_BUFFERED})`, () => {
  let dataDir: string;
  let proc: EdgeProcess;
  const sockets: Socket[] = [];

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), "plate-unread-"));
    proc = new EdgeProcess(await freePort(), {
      DATA_DIR: dataDir,
      DEMO_PLATE: "false",
      LOG_LEVEL: "error",
      BOOTSTRAP_PLATES: JSON.stringify(KEYS),
      SLOW_CONSUMER_MAX_BYTES: String(MAX_BUFFERED),
      SLOW_CONSUMER_GRACE_MS: "200",
    });
    await proc.ready();
  });
  afterEach(() => {
    for (const socket of sockets.splice(0)) socket.destroy();
  });
  afterAll(async () => {
    proc.kill();
    await rm(dataDir, { recursive: true, force: true });
  });

  const ping = clientFrame(TEXT, Buffer.from('{"type":"ping"}'));
  type Target = [path: string, headers: string, first?: Buffer];
  const cases: [string, () => Target | Promise<Target>, Buffer][] = [
    [
      'sending {"type":"ping"} after an Authorization header',
      () => ["/acme/pubsub/flood/ws", `Authorization: Bearer ${KEYS.acme}\r\n`],
      ping,
    ],
    [
      'sending {"type":"ping"} after an {"auth"} frame',
      () => ["/acme/pubsub/flood/ws", "", clientFrame(TEXT, Buffer.from(JSON.stringify({ auth: KEYS.acme })))],
      ping,
    ],
    [
      'sending {"type":"ping"} on a client-token path',
      async () => [(await mintPath(proc.url, "acme", "flood", { max_uses: "0" })).path, ""],
      ping,
    ],
    // The largest a ping may carry (RFC 6455 5.5), echoed in its pong: the kernel's socket buffers
    // alone take millions of empty pongs.
    [
      "sending protocol pings",
      () => ["/acme/pubsub/flood/ws", `Authorization: Bearer ${KEYS.acme}\r\n`],
      clientFrame(PING, Buffer.alloc(125, "p")),
    ],
  ];

  for (const [name, target, frame] of cases) {
    it(`drops a client ${name} as a slow consumer, and the node's memory stays within ${MAX_GROWTH_MB} MB`, async () => {
      const pid = proc.child.pid!;
      const [path, headers, first] = await target();
      const dropsBefore = await slowConsumerDrops(proc.url);
      const before = rssBytes(pid);
      let peak = before;
      const watch = setInterval(() => (peak = Math.max(peak, rssBytes(pid))), 20);
      let drops: number | undefined;
      try {
        const client = await flood(proc.port, path, headers, frame, first);
        sockets.push(client.socket);
        // What was sent may still be waiting in the kernel's buffers: the node reads it all first.
        await eventually(async () => (drops = await slowConsumerDrops(proc.url)) > dropsBefore, 10_000);
        // Then the socket is gone: the client's next writes fail.
        expect(await eventually(() => client.closed() || (client.socket.write(frame), false), 3000)).toBe(true);
      } finally {
        clearInterval(watch);
      }
      peak = Math.max(peak, rssBytes(pid));
      expect(drops).toBe(dropsBefore + 1);
      expect((peak - before) / 1_000_000).toBeLessThan(MAX_GROWTH_MB);
      expect(proc.alive).toBe(true);
    }, 60_000);
  }
});
