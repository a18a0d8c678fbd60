import { createServer } from "node:net";
import type { AddressInfo, Server, Socket } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { ACCEPTED, CONNECTION_CLOSED } from "./publisher.js";
import type { Target } from "./targets.js";
import { WsPublisher } from "./ws-publisher.js";

/** An unmasked server text frame (short). */
function frame(text: string): Buffer {
  return Buffer.concat([Buffer.from([0x81, text.length]), Buffer.from(text)]);
}

/** Reads the client's masked frames (7-bit lengths) from `socket`, unmasked, as JSON. */
function onClientFrames(socket: Socket, handle: (frame: any) => void): void {
  let pending = Buffer.alloc(0);
  socket.on("data", (chunk: Buffer) => {
    pending = Buffer.concat([pending, chunk]);
    while (pending.length >= 6 && pending.length >= 6 + (pending[1]! & 0x7f)) {
      expect(pending[1]! & 0x80).toBe(0x80);
      const length = pending[1]! & 0x7f;
      const payload = Buffer.from(pending.subarray(6, 6 + length));
      for (let i = 0; i < length; i++) payload[i]! ^= pending[2 + (i & 3)]!;
      pending = pending.subarray(6 + length);
      handle(JSON.parse(payload.toString()));
    }
  });
}

/**
 * A stand-in for route 9: answers the upgrade when it carries the key, sends `ready`, then answers
 * each publish with `answer`.
 */
async function fakeRoute9(
  answer: (publish: any, socket: Socket) => void,
): Promise<{ server: Server; target: Target; heads: string[] }> {
  const heads: string[] = [];
  const server = createServer((socket) => {
    socket.once("data", (head: Buffer) => {
      heads.push(head.toString());
      socket.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
      socket.write(frame('{"type":"ready","clientId":"n.1"}'));
      onClientFrames(socket, (publish) => answer(publish, socket));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  const target = {
    name: "fake",
    host: "127.0.0.1",
    port,
    wsPublish: { path: "/p/realtime", headers: "Authorization: Bearer k\r\n" },
  } as Target;
  return { server, target, heads };
}

const servers: Server[] = [];
afterEach(() => {
  for (const s of servers.splice(0)) s.close();
});

describe("WsPublisher", () => {
  it("upgrades with the key, sends masked publish frames with refs, and reads published and error answers", async () => {
    const seen: any[] = [];
    const { server, target, heads } = await fakeRoute9((publish, socket) => {
      seen.push(publish);
      socket.write(
        frame(
          publish.ref === 1
            ? `{"type":"error","ref":1,"error":{"code":"rate_limited","message":"m"}}`
            : `{"type":"published","ref":${publish.ref},"id":"x"}`,
        ),
      );
    });
    servers.push(server);
    const publisher = await WsPublisher.open(target, "127.0.0.1");
    expect(heads[0]).toMatch(/^GET \/p\/realtime HTTP\/1.1\r\n[^]*Authorization: Bearer k\r\n/);
    expect(await publisher.publish("c", '{"s":0,"p":0,"t":1.5}')).toBe(ACCEPTED);
    expect(await publisher.publish("c", '{"s":1,"p":0,"t":2}')).toBe("rate_limited");
    expect(await publisher.publish("d", '{"s":2,"p":0,"t":3}')).toBe(ACCEPTED);
    expect(seen).toEqual([
      { type: "publish", ref: 0, channel: "c", message: { s: 0, p: 0, t: 1.5 } },
      { type: "publish", ref: 1, channel: "c", message: { s: 1, p: 0, t: 2 } },
      { type: "publish", ref: 2, channel: "d", message: { s: 2, p: 0, t: 3 } },
    ]);
    publisher.close();
  });

  it("answers a publish cut off by the server closing the connection with the close code", async () => {
    const { server, target } = await fakeRoute9((_publish, socket) =>
      socket.end(Buffer.from([0x88, 0x02, 0x11, 0x30])),
    );
    servers.push(server);
    const publisher = await WsPublisher.open(target, "127.0.0.1");
    expect(await publisher.publish("c", "1")).toBe("closed_4400");
    expect(await publisher.publish("c", "2")).toBe(CONNECTION_CLOSED);
  });
});
