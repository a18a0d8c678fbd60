import { once } from "node:events";
import { closeSync, openSync, unlinkSync } from "node:fs";
import { constants, tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { directSend, unavailable } from "./index.js";
import { destroyPairs, fdOf, pair, readBytes } from "./test-support/sockets.js";

const { EAGAIN, EBADF, EINVAL, ENOTSOCK, EPIPE, ECONNRESET } = constants.errno;

afterEach(destroyPairs);

describe("directSend", () => {
  it("is built and loads on this platform", () => {
    expect(unavailable).toBeUndefined();
    expect(directSend).toBeDefined();
  });

  it("sends a Buffer to a connected socket, all of it, and answers undefined for that", async () => {
    const { server, client } = await pair();
    const message = Buffer.from("event: message\ndata: {\"n\":1}\n\n");
    const received = readBytes(client, message.length);
    expect(directSend!.send(fdOf(server), message)).toBeUndefined();
    expect((await received).equals(message)).toBe(true);
  });

  it("takes what fits when the peer does not read, answers -EAGAIN once nothing does, and never blocks", async () => {
    const { server, client } = await pair();
    client.pause();
    const chunk = Buffer.alloc(64 * 1024, 7);
    let accepted = 0;
    let last: number | undefined = 0;
    // The kernel's send buffer and the peer's receive buffer hold a few MB on loopback at most.
    for (let i = 0; i < 10_000; i++) {
      last = directSend!.send(fdOf(server), chunk);
      if (last === undefined) accepted += chunk.length;
      else if (last < 0) break;
      else accepted += last;
    }
    expect(last).toBe(-EAGAIN);
    expect(accepted).toBeGreaterThan(0);
    // Exactly what it said it took arrives.
    const received = readBytes(client, accepted);
    client.resume();
    const bytes = await received;
    expect(bytes.length).toBe(accepted);
  });

  it("answers -EPIPE or -ECONNRESET for a peer that is gone, without a signal ending the process", async () => {
    const { server, client } = await pair();
    client.resetAndDestroy();
    await once(client, "close");
    const message = Buffer.from("late");
    let answer: number | undefined = 0;
    // The reset may take a moment to arrive; the first send after it may still be taken.
    for (let i = 0; i < 100 && (answer === undefined || answer >= 0); i++) {
      answer = directSend!.send(fdOf(server), message);
      if (answer === undefined || answer >= 0) await new Promise((resolve) => setTimeout(resolve, 10));
    }
    expect([-EPIPE, -ECONNRESET]).toContain(answer);
  });

  it("answers -EINVAL, -EBADF or -ENOTSOCK for what is not a socket and a Buffer, and throws nothing", () => {
    const send = directSend!.send as (...args: unknown[]) => number;
    expect(send(-1, Buffer.from("x"))).toBe(-EINVAL);
    expect(send("3", Buffer.from("x"))).toBe(-EINVAL);
    expect(send(1, "not a buffer")).toBe(-EINVAL);
    expect(send()).toBe(-EINVAL);
    expect(send(1_000_000, Buffer.from("x"))).toBe(-EBADF);
    const file = join(tmpdir(), `direct-send-${process.pid}.tmp`);
    const fd = openSync(file, "w");
    try {
      expect(send(fd, Buffer.from("x"))).toBe(-ENOTSOCK);
    } finally {
      closeSync(fd);
      unlinkSync(file);
    }
  });

  it("sendMany sends one Buffer to each socket in order, answers each count, and how many were not sent whole", async () => {
    const pairs = await Promise.all([pair(), pair(), pair()]);
    const message = Buffer.from("event: message\ndata: {\"n\":2}\n\n");
    const received = pairs.map(({ client }) => readBytes(client, message.length));
    const fds = Int32Array.from([...pairs.map(({ server }) => fdOf(server)), 1_000_000]);
    const results = new Int32Array(fds.length);
    expect(directSend!.sendMany(fds, 3, message, results)).toBe(0);
    expect([...results]).toEqual([message.length, message.length, message.length, 0]);
    for (const bytes of await Promise.all(received)) expect(bytes.equals(message)).toBe(true);
    // One that is not a socket among them: counted, answered, and the others still sent.
    const later = pairs.map(({ client }) => readBytes(client, message.length));
    fds[1] = 1_000_000;
    fds[3] = fdOf(pairs[1].server);
    expect(directSend!.sendMany(fds, 4, message, results)).toBe(1);
    expect([...results]).toEqual([message.length, -EBADF, message.length, message.length]);
    for (const bytes of await Promise.all(later)) expect(bytes.equals(message)).toBe(true);
  });

  it("sendMany answers -EINVAL and sends nothing for arguments that are not fds, a count within them, a Buffer and answers", async () => {
    const { server, client } = await pair();
    const got: Buffer[] = [];
    client.on("data", (chunk: Buffer) => got.push(chunk));
    const sendMany = directSend!.sendMany as (...args: unknown[]) => number;
    const fds = Int32Array.of(fdOf(server));
    const bytes = Buffer.from("x");
    expect(sendMany(fds, 2, bytes, new Int32Array(2))).toBe(-EINVAL);
    expect(sendMany(fds, 1, bytes, new Int32Array(0))).toBe(-EINVAL);
    expect(sendMany([fdOf(server)], 1, bytes, new Int32Array(1))).toBe(-EINVAL);
    expect(sendMany(Float64Array.of(fdOf(server)), 1, bytes, new Int32Array(1))).toBe(-EINVAL);
    expect(sendMany(fds, 1, "x", new Int32Array(1))).toBe(-EINVAL);
    expect(sendMany(fds, -1, bytes, new Int32Array(1))).toBe(-EINVAL);
    expect(sendMany()).toBe(-EINVAL);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(got).toHaveLength(0);
  });
});
