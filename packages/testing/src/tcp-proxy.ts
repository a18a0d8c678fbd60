import { createConnection, createServer } from "node:net";
import type { Socket } from "node:net";

/** A TCP proxy in front of a server, able to make its subscriber clients deaf. */
export interface TcpProxy {
  readonly port: number;
  /**
   * From now on, drops every byte the server sends to connections that have sent a SUBSCRIBE or
   * PSUBSCRIBE (Redis subscribers), keeping the connections open: a subscriber that is up but
   * deaf, as after a failover. New connections are not affected.
   */
  deafenSubscribers(): void;
  close(): Promise<void>;
}

interface Pair {
  readonly client: Socket;
  readonly server: Socket;
  subscriber: boolean;
  deaf: boolean;
}

/** Starts a proxy on a free port of 127.0.0.1 that forwards to `127.0.0.1:targetPort`. */
export async function startTcpProxy(targetPort: number): Promise<TcpProxy> {
  const pairs = new Set<Pair>();
  const proxy = createServer((client) => {
    const server = createConnection({ port: targetPort, host: "127.0.0.1" });
    const pair: Pair = { client, server, subscriber: false, deaf: false };
    pairs.add(pair);
    client.on("data", (chunk: Buffer) => {
      if (/P?SUBSCRIBE/i.test(chunk.toString("latin1"))) pair.subscriber = true;
      server.write(chunk);
    });
    server.on("data", (chunk: Buffer) => {
      if (!pair.deaf) client.write(chunk);
    });
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      server.destroy();
    };
    client.on("close", end);
    server.on("close", end);
    client.on("error", end);
    server.on("error", end);
  });
  await new Promise<void>((resolve) => proxy.listen(0, "127.0.0.1", resolve));
  const address = proxy.address();
  const port = typeof address === "object" && address !== null ? address.port : 0;
  return {
    port,
    deafenSubscribers() {
      for (const pair of pairs) if (pair.subscriber) pair.deaf = true;
    },
    close() {
      for (const pair of pairs) {
        pair.client.destroy();
        pair.server.destroy();
      }
      return new Promise((resolve) => proxy.close(() => resolve()));
    },
  };
}
