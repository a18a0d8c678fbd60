import { once } from "node:events";
import { createServer, connect } from "node:net";
import type { Server, Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { corkForTurn } from "./turn-cork.js";

/** A real TCP connection: the node's end (`out`) and what the other end has read so far. */
async function connection(server: Server): Promise<{ out: Socket; received: () => string; close: () => void }> {
  const accepted = once(server, "connection") as Promise<[Socket]>;
  const address = server.address();
  if (address === null || typeof address === "string") throw new Error("no port");
  const peer = connect(address.port, "127.0.0.1");
  await once(peer, "connect");
  const [out] = await accepted;
  let text = "";
  peer.setEncoding("utf8");
  peer.on("data", (chunk: string) => (text += chunk));
  return { out, received: () => text, close: () => (out.destroy(), peer.destroy()) };
}

const nextTurn = () => new Promise((resolve) => setImmediate(resolve));

async function until(check: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !check(); i++) await new Promise((r) => setTimeout(r, 5));
}

describe("writes of one event-loop turn", () => {
  let server: Server;
  beforeAll(async () => {
    server = createServer();
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
  });
  afterAll(() => server.close());

  it("writes a stream written once a turn through, and corks one written more than once, from its second write and from its first in the next turn, keeping the order", async () => {
    const { out, received, close } = await connection(server);
    let state = 0;
    const write = (text: string) => {
      state = corkForTurn(out, state);
      out.write(text);
    };
    const through = () => [out.writableCorked, out.writableLength];
    write("a");
    // Written through: nothing corked, nothing waiting in the stream.
    expect(through()).toEqual([0, 0]);
    await nextTurn();
    write("b");
    expect(through()).toEqual([0, 0]);
    // A second write in the turn: held, with the third, for one syscall at the turn's end.
    write("c");
    write("d");
    expect(through()).toEqual([1, 2]);
    await nextTurn();
    expect(out.writableCorked).toBe(0);
    // After a burst the next turn's first write is held too (a burst is likely to go on) ...
    write("e");
    expect(through()).toEqual([1, 1]);
    await nextTurn();
    // ... and after a turn of one write, the next is written through again.
    write("f");
    expect(through()).toEqual([0, 0]);
    await until(() => received().length >= 6);
    expect(received()).toBe("abcdef");
    close();
  });

  it("keeps each stream's own turn: one stream's writes do not cork another's first", async () => {
    const one = await connection(server);
    const two = await connection(server);
    await nextTurn();
    const first = corkForTurn(one.out, 0);
    one.out.write("1");
    corkForTurn(one.out, first);
    one.out.write("2");
    corkForTurn(two.out, 0);
    two.out.write("x");
    expect([one.out.writableCorked, two.out.writableCorked, two.out.writableLength]).toEqual([1, 0, 0]);
    await until(() => one.received().length >= 2 && two.received().length >= 1);
    expect([one.received(), two.received()]).toEqual(["12", "x"]);
    one.close();
    two.close();
  });
});
