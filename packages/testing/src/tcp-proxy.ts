import { createConnection, createServer } from "node:net";
import type { Socket } from "node:net";

/** A TCP proxy in front of a server, able to make its subscriber clients deaf, cut every link, or move to another server. */
export interface TcpProxy {
  readonly port: number;
  /**
   * From now on, drops every byte the server sends to connections that have sent a SUBSCRIBE or
   * PSUBSCRIBE (Redis subscribers), keeping the connections open: a subscriber that is up but
   * deaf, as after a failover. New connections are not affected.
   */
  deafenSubscribers(): void;
  /** Drops every connection and refuses new ones (accepts and closes them) until `restore`: a cut link. */
  cut(): void;
  /** Lets connections through again after `cut`. */
  restore(): void;
  /**
   * Sends new connections to `127.0.0.1:targetPort` from now on; open ones stay with the old server,
   * as clients of a failed-over Redis whose address now names the new primary.
   */
  retarget(targetPort: number): void;
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
  let target = targetPort;
  let cut = false;
  const proxy = createServer((client) => {
    if (cut) {
      client.destroy();
      return;
    }
    const server = createConnection({ port: target, host: "127.0.0.1" });
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
  const dropAll = () => {
    for (const pair of pairs) {
      pair.client.destroy();
      pair.server.destroy();
    }
  };
  return {
    port,
    deafenSubscribers() {
      for (const pair of pairs) if (pair.subscriber) pair.deaf = true;
    },
    cut() {
      cut = true;
      dropAll();
    },
    restore() {
      cut = false;
    },
    retarget(targetPort: number) {
      target = targetPort;
    },
    close() {
      dropAll();
      return new Promise((resolve) => proxy.close(() => resolve()));
    },
  };
}
