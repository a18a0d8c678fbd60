import { createServer } from "node:net";
import type { AddressInfo, Server, Socket } from "node:net";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { encodePayload } from "./payload.js";
import { RunStats } from "./stats.js";
import { Subscriber } from "./subscriber.js";
import { plateTarget } from "./targets.js";
import type { Target } from "./targets.js";

/**
 * A server that answers an SSE subscription as Plate does (headers, then its `ready` event) and
 * hands the socket to the test, which writes events to it.
 */
let server: Server;
let target: Target;
let sockets: Socket[];

beforeEach(async () => {
  sockets = [];
  server = createServer((socket) => {
    socket.once("data", () => {
      socket.write('HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\nevent: ready\ndata: {"type":"ready"}\n\n');
      sockets.push(socket);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  target = plateTarget({ name: "fake", port: (server.address() as AddressInfo).port, plate: "p", key: "k", pids: [] });
});

afterEach(async () => {
  for (const socket of sockets) socket.destroy();
  await new Promise((resolve) => server.close(resolve));
});

function event(seq: number): string {
  return `id: ${seq}\ndata: {"type":"message","message":${encodePayload(seq, 0, performance.now())}}\n\n`;
}

async function until(check: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !check(); i++) await new Promise((resolve) => setTimeout(resolve, 10));
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe("Subscriber", () => {
  it("reads an eager subscription's events as they come, each once and in order", async () => {
    const stats = new RunStats();
    const step = stats.begin(0, performance.now());
    const tracker = stats.tracker(true);
    const sub = await Subscriber.open(target, "sse", "c", { tracker, eager: true, localAddress: "127.0.0.1" });
    for (let seq = 0; seq < 5; seq++) {
      sockets[0]!.write(event(seq));
      await until(() => tracker.received === seq + 1);
      expect(tracker.received).toBe(seq + 1);
    }
    expect(step.latencies.summary().samples).toBe(5);
    expect([step.duplicates, step.reordered]).toEqual([0, 0]);
    sub.close();
  });

  it("leaves a batch subscription's events in the kernel until a drain, which reads on past a full buffer", async () => {
    const stats = new RunStats();
    const step = stats.begin(0, performance.now());
    const tracker = stats.tracker(false);
    const sub = await Subscriber.open(target, "sse", "c", { tracker, eager: false, localAddress: "127.0.0.1" });
    // ~72 bytes an event: 3,000 of them are over three times the 64 KiB read buffer.
    sockets[0]!.write(Array.from({ length: 3000 }, (_, seq) => event(seq)).join(""));
    await sleep(200);
    expect(tracker.received).toBe(0);
    sub.drain();
    await sleep(200);
    // One drain reads what the kernel holds for the socket (the rest of the write is still on its
    // way from the server's side); that is well past the 64 KiB buffer's ~910 events.
    expect(tracker.received).toBeGreaterThan(1500);
    for (let drains = 0; drains < 20 && tracker.received < 3000; drains++) {
      sub.drain();
      await sleep(50);
    }
    expect(tracker.received).toBe(3000);
    expect([step.duplicates, step.reordered]).toEqual([0, 0]);

    sockets[0]!.write(event(3000));
    await sleep(200);
    expect(tracker.received).toBe(3000);
    sub.drain();
    await until(() => tracker.received === 3001);
    expect(tracker.received).toBe(3001);
    expect(step.latencies.summary().samples).toBe(0);
    sub.close();
  });
});
