import { once } from "node:events";
import { connect, createServer } from "node:net";
import type { Socket } from "node:net";
import { PassThrough } from "node:stream";
import type { Writable } from "node:stream";
import { directSend } from "./index.js";
import { afterEach, describe, expect, it } from "vitest";
import { sendDirect } from "./send-direct.js";
import type { FdMemo } from "./send-direct.js";
import { destroyPairs, fdOf, keep, pair, readBytes } from "./test-support/sockets.js";

const send = directSend!;

afterEach(destroyPairs);

/** Each socket's fd memo, as its connection keeps one. */
const memos = new WeakMap<Writable, FdMemo>();

function memoOf(socket: Writable): FdMemo {
  let memo = memos.get(socket);
  if (memo === undefined) memos.set(socket, (memo = { fd: undefined }));
  return memo;
}

/** Writes as a subscriber connection does: directly when it can, through Node when it answers false. */
function write(socket: Socket, bytes: Buffer): "direct" | "node" {
  if (sendDirect(send, socket, bytes, memoOf(socket))) return "direct";
  socket.write(bytes);
  return "node";
}

function message(n: number): Buffer {
  return Buffer.from(`event: message\ndata: {"n":${n},"pad":"${"x".repeat(900)}"}\n\n`);
}

describe("sendDirect", () => {
  it("keeps a subscriber's messages whole and in order when its peer stops reading and Node queues the rest", async () => {
    const { server, client } = await pair();
    client.pause();
    const messages = Array.from({ length: 20_000 }, (_, n) => message(n));
    const ways = { direct: 0, node: 0 };
    for (const bytes of messages) ways[write(server, bytes)] += 1;
    // The kernel filled (about 20 MB asked of a few MB of buffers): Node took the rest.
    expect(ways.direct).toBeGreaterThan(0);
    expect(ways.node).toBeGreaterThan(0);
    expect(server.writableLength).toBeGreaterThan(0);
    const total = messages.reduce((sum, bytes) => sum + bytes.length, 0);
    const received = readBytes(client, total).then(String);
    client.resume();
    expect(await received).toBe(Buffer.concat(messages).toString());
  });

  it("writes directly again once Node's queue has drained, still in order", async () => {
    const { server, client } = await pair();
    client.pause();
    const first = Array.from({ length: 10_000 }, (_, n) => message(n));
    for (const bytes of first) write(server, bytes);
    expect(server.writableLength).toBeGreaterThan(0);
    const second = Array.from({ length: 100 }, (_, n) => message(10_000 + n));
    const total = [...first, ...second].reduce((sum, bytes) => sum + bytes.length, 0);
    const received = readBytes(client, total).then(String);
    client.resume();
    await once(server, "drain");
    for (const bytes of second) expect(write(server, bytes)).toBe("direct");
    expect(await received).toBe(Buffer.concat([...first, ...second]).toString());
  });

  it("writes nothing and answers false for a corked socket, an ended or destroyed one, or a stream that is not a socket", async () => {
    const { server, client } = await pair();
    const bytes = message(1);
    server.cork();
    expect(sendDirect(send, server, bytes, memoOf(server))).toBe(false);
    server.uncork();
    const stream = new PassThrough();
    expect(sendDirect(send, stream, bytes, memoOf(stream))).toBe(false);
    expect(stream.readableLength).toBe(0);
    const received: Buffer[] = [];
    client.on("data", (chunk: Buffer) => received.push(chunk));
    server.end();
    expect(sendDirect(send, server, bytes, memoOf(server))).toBe(false);
    await once(client, "end");
    expect(Buffer.concat(received).length).toBe(0);
    server.destroy();
    expect(sendDirect(send, server, bytes, memoOf(server))).toBe(false);
  });

  it("never writes a closed socket's bytes to the connection that reuses its file descriptor", async () => {
    const first = await pair();
    const reused = fdOf(first.server);
    expect(write(first.server, message(0))).toBe("direct");
    // A listener first, so that the next socket made (a client) gets the number the kernel frees
    // next: it hands out the lowest free one.
    const listener = createServer();
    listener.listen(0, "127.0.0.1");
    await once(listener, "listening");
    const accepted = once(listener, "connection") as Promise<[Socket]>;
    first.server.destroy();
    await once(first.server, "close");
    const client = connect((listener.address() as { port: number }).port, "127.0.0.1");
    const [server] = await accepted;
    listener.close();
    keep(server, client);
    expect(fdOf(client)).toBe(reused);
    const received: Buffer[] = [];
    server.on("data", (chunk: Buffer) => received.push(chunk));
    expect(sendDirect(send, first.server, message(1), memoOf(first.server))).toBe(false);
    expect(write(client, message(2))).toBe("direct");
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(Buffer.concat(received).toString()).toBe(message(2).toString());
  });

  it("hands a write to a peer that is gone to Node, which closes the socket", async () => {
    const { server, client } = await pair();
    server.on("error", () => undefined);
    client.resetAndDestroy();
    await once(client, "close");
    // Not `once`: it would reject with the error this test expects Node to meet.
    const closed = new Promise((resolve) => server.on("close", resolve));
    // The reset arrives at once on loopback; a first send may still be taken before it does.
    for (let i = 0; i < 100 && !server.destroyed; i++) {
      write(server, message(i));
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    await closed;
    expect(server.destroyed).toBe(true);
  });
});
