import { request } from "node:http";
import type { ClientRequest, IncomingMessage } from "node:http";

/** One Server-Sent Event as a client reads it. */
export interface SseEvent {
  readonly event: string;
  readonly id: string | undefined;
  readonly data: string;
}

/**
 * A minimal SSE client over a raw HTTP request: it records the status, headers, every event and
 * every comment, and can stop reading (`pause`) to play a slow consumer.
 */
export class SseClient {
  readonly events: SseEvent[] = [];
  readonly comments: string[] = [];
  status = 0;
  headers: IncomingMessage["headers"] = {};
  /** The body when the answer was not a stream (an error). */
  body = "";
  ended = false;
  #req: ClientRequest | undefined;
  #res: IncomingMessage | undefined;
  #buffer = "";

  private constructor() {}

  /** Opens `url` and resolves once the status line has arrived. */
  static open(url: string, headers: Record<string, string> = {}): Promise<SseClient> {
    const client = new SseClient();
    return new Promise((resolve, reject) => {
      const req = request(url, { headers: { Accept: "text/event-stream", ...headers } }, (res) => {
        client.#res = res;
        client.status = res.statusCode ?? 0;
        client.headers = res.headers;
        res.setEncoding("utf8");
        const streaming = String(res.headers["content-type"] ?? "").startsWith("text/event-stream");
        res.on("data", (chunk: string) => (streaming ? client.#feed(chunk) : (client.body += chunk)));
        res.on("end", () => (client.ended = true));
        res.on("close", () => (client.ended = true));
        res.on("error", () => (client.ended = true));
        resolve(client);
      });
      client.#req = req;
      req.on("error", (err) => (client.status === 0 ? reject(err) : (client.ended = true)));
      req.end();
    });
  }

  /** The data of unnamed events (messages), parsed. */
  get messages(): any[] {
    return this.events.filter((e) => e.event === "message").map((e) => JSON.parse(e.data));
  }

  /** Waits for the named event (default: `ready`), parsed. */
  async waitFor(event = "ready", timeoutMs = 3000): Promise<any> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.events.find((e) => e.event === event);
      if (found) return JSON.parse(found.data);
      if (Date.now() > deadline || this.ended) throw new Error(`no "${event}" event (status ${this.status}, body ${this.body})`);
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  /** Waits until `count` messages have arrived. */
  async waitForMessages(count: number, timeoutMs = 5000): Promise<any[]> {
    const deadline = Date.now() + timeoutMs;
    while (this.messages.length < count && Date.now() < deadline && !this.ended) {
      await new Promise((r) => setTimeout(r, 5));
    }
    return this.messages;
  }

  /** Waits until the server ends the stream. */
  async waitForEnd(timeoutMs = 5000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.ended && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    return this.ended;
  }

  /** Stops reading from the socket (the kernel buffers fill, then the server's). */
  pause(): void {
    this.#res?.pause();
    this.#res?.socket.pause();
  }

  close(): void {
    this.#req?.destroy();
  }

  #feed(chunk: string): void {
    this.#buffer += chunk;
    let end: number;
    while ((end = this.#buffer.indexOf("\n\n")) !== -1) {
      const block = this.#buffer.slice(0, end);
      this.#buffer = this.#buffer.slice(end + 2);
      let event = "message";
      let id: string | undefined;
      const data: string[] = [];
      let fields = 0;
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) {
          this.comments.push(line.slice(1).trim());
          continue;
        }
        const colon = line.indexOf(":");
        const name = colon === -1 ? line : line.slice(0, colon);
        const value = colon === -1 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (name === "event") event = value;
        else if (name === "id") id = value;
        else if (name === "data") data.push(value);
        else continue;
        fields += 1;
      }
      if (fields > 0 && data.length > 0) this.events.push({ event, id, data: data.join("\n") });
    }
  }
}
