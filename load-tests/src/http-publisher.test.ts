import { createServer } from "node:http";
import type { Server } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { HttpPublisher } from "./http-publisher.js";
import { ACCEPTED } from "./publisher.js";
import { plateTarget } from "./targets.js";

const servers: Server[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) {
    s.closeAllConnections();
    await new Promise((resolve) => s.close(resolve));
  }
});

/** A Node HTTP server announcing `Keep-Alive: timeout=` its `keepAliveMs` / 1000, and the connections it took. */
async function keepAliveServer(keepAliveMs: number): Promise<{ port: number; connections: Socket[]; bodies: string[] }> {
  const connections: Socket[] = [];
  const bodies: string[] = [];
  const server = createServer((req, res) => {
    let body = "";
    req.on("data", (chunk: Buffer) => (body += chunk.toString()));
    req.on("end", () => {
      bodies.push(body);
      res.writeHead(200, { "Content-Type": "application/json" }).end('{"data":{}}');
    });
  });
  server.keepAliveTimeout = keepAliveMs;
  server.on("connection", (socket: Socket) => connections.push(socket));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  servers.push(server);
  return { port: (server.address() as AddressInfo).port, connections, bodies };
}

describe("HttpPublisher", () => {
  it("reuses its connection until a second before the server's announced keep-alive timeout, then opens another", async () => {
    // Announced as timeout=2: reused while idle under 1 s.
    const server = await keepAliveServer(2000);
    const target = plateTarget({ name: "fake", port: server.port, plate: "p", key: "k", pids: [] });
    const publisher = new HttpPublisher(target, "127.0.0.1");
    try {
      expect(await publisher.publish("c", "1")).toBe(ACCEPTED);
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(await publisher.publish("c", "2")).toBe(ACCEPTED);
      expect(server.connections).toHaveLength(1);
      await new Promise((resolve) => setTimeout(resolve, 1100));
      expect(await publisher.publish("c", "3")).toBe(ACCEPTED);
      expect(server.connections).toHaveLength(2);
      // The connection let go of closes without failing the request in flight on the new one.
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(await publisher.publish("c", "4")).toBe(ACCEPTED);
      expect(server.bodies).toEqual(['{"message":1}', '{"message":2}', '{"message":3}', '{"message":4}']);
    } finally {
      publisher.close();
    }
  });
});
