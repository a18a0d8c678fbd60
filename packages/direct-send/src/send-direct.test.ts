import { once } from "node:events";
import { connect, createServer } from "node:net";
import type { Socket } from "node:net";
import { PassThrough } from "node:stream";
import type { Writable } from "node:stream";
import { directSend } from "./index.js";
import { afterEach, describe, expect, it } from "vitest";
import { DIRECT_BATCH_FIRST, DIRECT_BATCH_MAX, closeDirectBatch, flushDirect, flushDirectFor, openDirectBatch, sendDirect } from "./send-direct.js";
import type { FdMemo } from "./send-direct.js";
import { destroyPairs, fdOf, keep, pair, readBytes } from "./test-support/sockets.js";

const send = directSend!;

afterEach(destroyPairs);

/** Each socket's fd memo, as its connection keeps one. */
const memos = new WeakMap<Writable, FdMemo>();

function memoOf(socket: Writable): FdMemo {
  let memo = memos.get(socket);
  if (memo === undefined) memos.set(socket, (memo = { fd: undefined, batch: 0 }));
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

describe("sendDirect in a batch (openDirectBatch)", () => {
  it("holds a fan-out's writes until the batch closes, then every socket has its message", async () => {
    // Fewer than the batch's first call sends.
    const pairs = await Promise.all(Array.from({ length: DIRECT_BATCH_FIRST - 1 }, () => pair()));
    const bytes = message(1);
    const got = pairs.map(({ client }) => collect(client));
    openDirectBatch();
    try {
      for (const { server } of pairs) expect(write(server, bytes)).toBe("direct");
      await new Promise((resolve) => setTimeout(resolve, 50));
      // Held: nothing has left yet.
      for (const chunks of got) expect(chunks).toHaveLength(0);
    } finally {
      closeDirectBatch();
    }
    for (const chunks of got) await eventually(() => expect(Buffer.concat(chunks).toString()).toBe(bytes.toString()));
  });

  it("sends a fan-out's first DIRECT_BATCH_FIRST writes as soon as they are queued, then twice as many at a time, while the batch is open", async () => {
    const first = DIRECT_BATCH_FIRST;
    const pairs = await Promise.all(Array.from({ length: first * 3 }, () => pair()));
    const bytes = message(1);
    const got = pairs.map(({ client }) => collect(client));
    const arrived = (i: number) => Buffer.concat(got[i]!).toString() === bytes.toString();
    openDirectBatch();
    try {
      for (let i = 0; i < first; i++) expect(write(pairs[i]!.server, bytes)).toBe("direct");
      // The first call's worth has left while the fan-out goes on.
      for (let i = 0; i < first; i++) await eventually(() => expect(arrived(i)).toBe(true));
      // The next call takes twice as many: one short of that is held.
      for (let i = first; i < first * 3 - 1; i++) expect(write(pairs[i]!.server, bytes)).toBe("direct");
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(got.slice(first).map((chunks) => chunks.length)).toEqual(new Array<number>(first * 2).fill(0));
      expect(write(pairs[first * 3 - 1]!.server, bytes)).toBe("direct");
      for (let i = first; i < first * 3; i++) await eventually(() => expect(arrived(i)).toBe(true));
    } finally {
      closeDirectBatch();
    }
  });

  it("sends a batch's writes whole and in order: past DIRECT_BATCH_MAX, a socket written twice, another Buffer, a write through Node after flushDirect", async () => {
    const pairs = await Promise.all(Array.from({ length: 5 }, () => pair()));
    const got = pairs.map(({ client }) => collect(client));
    const expected: Buffer[][] = pairs.map(() => []);
    const writeOne = (i: number, bytes: Buffer) => {
      expected[i]!.push(bytes);
      expect(write(pairs[i]!.server, bytes)).toBe("direct");
    };
    openDirectBatch();
    try {
      let n = 0;
      // More writes of one Buffer than a batch holds, each socket written many times.
      const shared = message(n++);
      for (let k = 0; k < DIRECT_BATCH_MAX + 10; k++) writeOne(k % pairs.length, shared);
      // Another Buffer, and a socket written again right after.
      const other = message(n++);
      writeOne(0, other);
      writeOne(0, other);
      // A nested batch closes without sending what the outer one holds before it.
      openDirectBatch();
      writeOne(1, message(n++));
      closeDirectBatch();
      // A write through Node, as a connection makes one: what is held goes first.
      writeOne(2, message(n++));
      const viaNode = message(n++);
      expected[2]!.push(viaNode);
      flushDirect();
      pairs[2]!.server.write(viaNode);
      writeOne(2, message(n++));
    } finally {
      closeDirectBatch();
    }
    for (let i = 0; i < pairs.length; i++) {
      const want = Buffer.concat(expected[i]!).toString();
      await eventually(() => expect(Buffer.concat(got[i]!).toString()).toBe(want));
    }
  });

  it("flushes for a socket's own write through Node only when that socket has a write held (flushDirectFor)", async () => {
    const [held, other] = await Promise.all([pair(), pair()]);
    const gotHeld = collect(held.client);
    const gotOther = collect(other.client);
    const first = message(1);
    const viaNode = message(2);
    openDirectBatch();
    try {
      expect(write(held.server, first)).toBe("direct");
      // A write through Node to another socket: the batch keeps what it holds.
      flushDirectFor(memoOf(other.server));
      other.server.write(viaNode);
      await eventually(() => expect(Buffer.concat(gotOther).toString()).toBe(viaNode.toString()));
      expect(gotHeld).toHaveLength(0);
      // One to the socket with a write held: that write goes first.
      flushDirectFor(memoOf(held.server));
      held.server.write(viaNode);
    } finally {
      closeDirectBatch();
    }
    await eventually(() => expect(Buffer.concat(gotHeld).toString()).toBe(first.toString() + viaNode.toString()));
  });

  it("hands what the kernel did not take of a batch's writes to Node, whole and in order, for a peer that stopped reading", async () => {
    const { server, client } = await pair();
    const other = await pair();
    client.pause();
    const messages = Array.from({ length: 20_000 }, (_, n) => message(n));
    const otherGot = collect(other.client);
    openDirectBatch();
    try {
      // Alternating with another socket: each batch is one write to each, one Buffer.
      for (const bytes of messages) {
        write(server, bytes);
        write(other.server, bytes);
      }
    } finally {
      closeDirectBatch();
    }
    expect(server.writableLength).toBeGreaterThan(0);
    const total = messages.reduce((sum, bytes) => sum + bytes.length, 0);
    const received = readBytes(client, total).then(String);
    client.resume();
    const all = Buffer.concat(messages).toString();
    expect(await received).toBe(all);
    await eventually(() => expect(Buffer.concat(otherGot).length).toBe(total));
    expect(Buffer.concat(otherGot).toString()).toBe(all);
  });
});

/** The chunks `socket` receives, as they come. */
function collect(socket: Socket): Buffer[] {
  const chunks: Buffer[] = [];
  socket.on("data", (chunk: Buffer) => chunks.push(chunk));
  return chunks;
}

/** Retries `check` until it passes or 5 s have gone by. */
async function eventually(check: () => void): Promise<void> {
  const deadline = Date.now() + 5000;
  for (;;) {
    try {
      check();
      return;
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }
}
