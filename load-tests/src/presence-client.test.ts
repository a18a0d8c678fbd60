import { createServer } from "node:net";
import type { AddressInfo, Server, Socket } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { PresenceClient } from "./presence-client.js";
import { ACCEPTED } from "./publisher.js";
import type { Target } from "./targets.js";

/** An unmasked server text frame (short). */
function frame(text: string): Buffer {
  return Buffer.concat([Buffer.from([0x81, text.length]), Buffer.from(text)]);
}

/** The client's masked frames (7-bit lengths), unmasked, as JSON. */
function onClientFrames(socket: Socket, handle: (frame: any) => void): void {
  let pending = Buffer.alloc(0);
  socket.on("data", (chunk: Buffer) => {
    pending = Buffer.concat([pending, chunk]);
    while (pending.length >= 6 && pending.length >= 6 + (pending[1]! & 0x7f)) {
      const length = pending[1]! & 0x7f;
      const payload = Buffer.from(pending.subarray(6, 6 + length));
      for (let i = 0; i < length; i++) payload[i]! ^= pending[2 + (i & 3)]!;
      pending = pending.subarray(6 + length);
      handle(JSON.parse(payload.toString()));
    }
  });
}

const servers: Server[] = [];
afterEach(() => {
  for (const s of servers.splice(0)) s.close();
});

/** A stand-in for route 9's presence: answers requests, and sends `diff` to every client on `tell`. */
async function fakePresence(): Promise<{ target: Target; seen: any[]; tell: (text: string) => void }> {
  const seen: any[] = [];
  const sockets: Socket[] = [];
  const server = createServer((socket) => {
    sockets.push(socket);
    socket.once("data", () => {
      socket.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
      socket.write(frame('{"type":"ready","clientId":"n.1"}'));
      onClientFrames(socket, (f) => {
        seen.push(f);
        if (f.type === "subscribe") {
          socket.write(frame(`{"type":"subscribed","ref":${f.ref},"channel":"${f.channel}"}`));
          if (f.presence === true) socket.write(frame(`{"type":"presence","channel":"${f.channel}","state":{}}`));
        } else if (f.type === "presence.track" && f.state === "big") {
          socket.write(frame(`{"type":"error","ref":${f.ref},"error":{"code":"payload_too_large","message":"m"}}`));
        } else socket.write(frame(`{"type":"ok","ref":${f.ref}}`));
      });
    });
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const target = {
    name: "fake",
    host: "127.0.0.1",
    port: (server.address() as AddressInfo).port,
    wsPublish: { path: "/p/realtime", headers: "Authorization: Bearer k\r\n" },
  } as Target;
  return {
    target,
    seen,
    tell: (text) => {
      for (const s of sockets) s.write(frame(text));
    },
  };
}

const eventually = async (check: () => boolean) => {
  for (let i = 0; i < 100 && !check(); i++) await new Promise((r) => setTimeout(r, 10));
  return check();
};

describe("PresenceClient", () => {
  it("subscribes with presence, tracks and untracks by ref, and reads an error's code", async () => {
    const { target, seen } = await fakePresence();
    const client = await PresenceClient.open(target, "127.0.0.1", false);
    expect(client.clientId).toBe("n.1");
    expect(await client.subscribe("c", true)).toBe(ACCEPTED);
    expect(await client.track("c", '{"c":1,"k":0}')).toBe(ACCEPTED);
    expect(await client.untrack("c")).toBe(ACCEPTED);
    expect(await client.track("c", '"big"')).toBe("payload_too_large");
    expect(seen).toEqual([
      { type: "subscribe", ref: 0, channel: "c", presence: true },
      { type: "presence.track", ref: 1, channel: "c", state: { c: 1, k: 0 } },
      { type: "presence.untrack", ref: 2, channel: "c" },
      { type: "presence.track", ref: 3, channel: "c", state: "big" },
    ]);
    client.close();
  });

  it("counts diffs from startCounting, read one by one or drained in batches", async () => {
    const { target, tell } = await fakePresence();
    const eager = await PresenceClient.open(target, "127.0.0.1", false);
    const lazy = await PresenceClient.open(target, "127.0.0.1", true);
    tell('{"type":"presence","channel":"c","joins":{},"leaves":{}}');
    expect(await eventually(() => eager.diffs === 1 && lazy.diffs === 1)).toBe(true);
    const texts: string[] = [];
    eager.startCounting((text) => texts.push(text));
    lazy.startCounting();
    for (let i = 0; i < 3; i++) tell(`{"type":"presence","channel":"c","joins":{"${i}":{}},"leaves":{}}`);
    expect(await eventually(() => eager.diffs === 3)).toBe(true);
    expect(texts[2]).toContain('"joins":{"2":{}}');
    await new Promise((r) => setTimeout(r, 50));
    expect(lazy.diffs).toBe(0);
    lazy.drain();
    expect(lazy.diffs).toBe(3);
    eager.close();
    lazy.close();
  });
});
