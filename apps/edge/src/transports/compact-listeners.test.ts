import { once } from "node:events";
import { createServer, connect } from "node:net";
import type { Server, Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { eventually, KEYS, publish, startTestNode } from "../test-support/node.js";
import type { TestNode } from "../test-support/node.js";
import { SseClient } from "../test-support/sse.js";
import { WsClient } from "../test-support/ws.js";
import { compactListeners } from "./compact-listeners.js";

const AUTH = { Authorization: `Bearer ${KEYS.acme}` };

/** Every event's listeners, in order, as the emitter keeps them (`once` wrappers included). */
function listenersOf(socket: Socket): Map<string | symbol, unknown[]> {
  return new Map(socket.eventNames().map((name) => [name, socket.rawListeners(name)]));
}

describe("compactListeners", () => {
  let server: Server;
  let accepted: Promise<Socket>;
  beforeAll(async () => {
    server = createServer();
    accepted = once(server, "connection").then(([s]) => s as Socket);
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
  });
  afterAll(() => server.close());

  it("keeps a socket's listeners, in order, and they still fire: data, once, end, close", async () => {
    const port = (server.address() as { port: number }).port;
    const client = connect(port, "127.0.0.1");
    const socket = await accepted;
    const seen: string[] = [];
    // As the HTTP server does before a stream is taken over: listeners added, then removed.
    const gone = () => seen.push("removed listener ran");
    for (const event of ["drain", "timeout", "finish", "error"]) socket.on(event, gone);
    for (const event of ["drain", "timeout", "finish"]) socket.removeAllListeners(event);
    socket.on("data", (chunk: Buffer) => seen.push(`data ${chunk.toString()}`));
    socket.once("data", () => seen.push("first data only"));
    socket.on("end", () => seen.push("end 1"));
    socket.on("end", () => {
      seen.push("end 2");
      socket.end();
    });
    socket.on("close", () => seen.push("close"));
    socket.removeListener("error", gone);
    const before = listenersOf(socket);

    compactListeners(socket);

    expect(listenersOf(socket)).toEqual(before);
    client.write("a");
    expect(await eventually(() => seen.includes("data a"))).toBe(true);
    client.write("b");
    expect(await eventually(() => seen.includes("data b"))).toBe(true);
    client.end();
    expect(await eventually(() => seen.includes("close"))).toBe(true);
    expect(seen).toEqual(["data a", "first data only", "data b", "end 1", "end 2", "close"]);
    expect(socket.listenerCount("data")).toBe(1);
    client.destroy();
  });
});

describe("subscriber sockets after their listeners are compacted", () => {
  let t: TestNode;
  beforeAll(async () => {
    t = await startTestNode();
  });
  afterAll(() => t.cleanup());

  const openCount = async (transport: "sse" | "ws") => {
    const text = await (await fetch(`${t.url}/metrics`)).text();
    return Number(new RegExp(`^plate_connections\\{transport="${transport}"\\} (\\d+)`, "m").exec(text)?.[1] ?? 0);
  };

  it("deliver, and are let go when their client goes away", async () => {
    const sse = await SseClient.open(`${t.url}/acme/pubsub/compact/subscribe`, AUTH);
    const ws = await WsClient.connect(`${t.wsUrl}/acme/pubsub/compact/ws`, { headers: AUTH });
    await sse.waitFor("ready");
    await ws.waitFor("ready");
    expect(await openCount("sse")).toBe(1);
    expect(await openCount("ws")).toBe(1);
    expect((await publish(t.url, "acme", "compact", { n: 1 })).status).toBe(200);
    expect((await sse.waitForMessages(1))[0]!.message).toEqual({ n: 1 });
    expect((await ws.waitForMessages(1))[0]!.message).toEqual({ n: 1 });
    sse.close();
    ws.close();
    expect(await eventually(async () => (await openCount("sse")) === 0)).toBe(true);
    expect(await eventually(async () => (await openCount("ws")) === 0)).toBe(true);
  });
});
