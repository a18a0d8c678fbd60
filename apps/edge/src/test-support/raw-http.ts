import { connect } from "node:net";

/** An HTTP answer as read off the wire: what `fetch` cannot send or would hide. */
export interface RawAnswer {
  /** Everything the server wrote before it closed the connection. */
  readonly text: string;
  /** 0 when the server wrote nothing. */
  readonly status: number;
  /** Header names in lower case. */
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string;
  /** How long after the request was written the server closed the connection, in ms. */
  readonly closedAfterMs: number;
}

/**
 * Writes `request` byte for byte on a new TCP connection to `url`'s host and port, and reads until
 * the server closes the connection (send `Connection: close` for an answer that would otherwise
 * keep it open). Rejects if it is still open after `timeoutMs`.
 */
export function rawExchange(url: string, request: string, timeoutMs = 5000): Promise<RawAnswer> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname);
    const chunks: Buffer[] = [];
    let sentAt = 0;
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`still open after ${timeoutMs} ms; got: ${Buffer.concat(chunks).toString("latin1")}`));
    }, timeoutMs);
    socket.on("connect", () => {
      sentAt = performance.now();
      socket.write(request, "latin1");
    });
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    // A reset (the server destroyed the socket) ends the exchange as a close does.
    socket.on("error", () => undefined);
    socket.on("close", () => {
      clearTimeout(timer);
      resolve(parseAnswer(Buffer.concat(chunks).toString("latin1"), performance.now() - sentAt));
    });
  });
}

function parseAnswer(text: string, closedAfterMs: number): RawAnswer {
  const end = text.indexOf("\r\n\r\n");
  const head = end === -1 ? text : text.slice(0, end);
  const [statusLine = "", ...lines] = head.split("\r\n");
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const colon = line.indexOf(":");
    if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine)?.[1] ?? "0");
  return { text, status, headers, body: end === -1 ? "" : text.slice(end + 4), closedAfterMs };
}
