import { once } from "node:events";
import { connect, createServer } from "node:net";
import type { Socket } from "node:net";

const opened: Socket[] = [];

/** A connected pair over loopback: `server` is the accepted side (the one a node writes to). Destroyed by `destroyPairs`. */
export async function pair(): Promise<{ server: Socket; client: Socket }> {
  const listener = createServer();
  listener.listen(0, "127.0.0.1");
  await once(listener, "listening");
  const accepted = once(listener, "connection") as Promise<[Socket]>;
  const client = connect((listener.address() as { port: number }).port, "127.0.0.1");
  const [server] = await accepted;
  listener.close();
  keep(server, client);
  return { server, client };
}

/** Has `destroyPairs` destroy these sockets too. */
export function keep(...sockets: Socket[]): void {
  opened.push(...sockets);
}

/** Destroys every socket `pair` made or `keep` was given (a test's `afterEach`). */
export function destroyPairs(): void {
  for (const socket of opened.splice(0)) socket.destroy();
}

/** The socket's file descriptor, read from its libuv handle; -1 once it has none. */
export function fdOf(socket: Socket): number {
  return (socket as unknown as { _handle: { fd: number } | null })._handle?.fd ?? -1;
}

/** Everything `socket` receives until it has `bytes` of it. */
export function readBytes(socket: Socket, bytes: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let got = 0;
  return new Promise((resolve, reject) => {
    socket.on("data", (chunk: Buffer) => {
      chunks.push(chunk);
      got += chunk.length;
      if (got >= bytes) resolve(Buffer.concat(chunks));
    });
    socket.on("error", reject);
  });
}
