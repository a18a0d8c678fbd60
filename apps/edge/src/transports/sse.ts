import type { ServerResponse } from "node:http";
import { ERROR_CODES } from "@plate/protocol";
import type { PlateId, ReadyFrame, Topic } from "@plate/protocol";
import { Connection } from "../core/connection.js";
import type { EndReason } from "../core/connection.js";
import type { Outbound } from "../core/outbound.js";
import { corkForTurn } from "../core/turn-cork.js";

/** Output limits of a subscriber connection (settings, see config.ts). */
export interface OutputLimits {
  /** Unsent bytes a subscriber may have waiting before it is dropped as a slow consumer. */
  readonly maxBufferedBytes: number;
  /** How long a dropped connection's last bytes may take to leave before the socket is destroyed. */
  readonly graceMs: number;
}

const PING = Buffer.from(": ping\n\n");

/**
 * A Server-Sent Events subscriber, written straight to Node's response so each message is one
 * `write` of a shared Buffer and the bytes waiting unsent can be read (`writableLength`).
 *
 * Until `start`, nothing is written: ending before it answers with a plain HTTP error (the spec:
 * "errors are plain HTTP answers before any stream starts").
 */
export class SseConnection extends Connection {
  readonly transport = "sse" as const;

  constructor(
    private readonly res: ServerResponse,
    plateId: PlateId,
    keyId: string,
    topic: Topic,
    clientId: string,
    private readonly headers: Readonly<Record<string, string>>,
    private readonly retryMs: number,
    private readonly limits: OutputLimits,
  ) {
    super(plateId, keyId, topic, clientId);
    res.once("close", () => this.end("normal"));
  }

  protected writeReady(ready: ReadyFrame): void {
    this.res.writeHead(200, {
      ...this.headers,
      "Content-Type": "text/event-stream; charset=utf-8",
      "Cache-Control": "no-cache",
      "X-Accel-Buffering": "no",
      Connection: "keep-alive",
    });
    this.res.write(`retry: ${this.retryMs}\n\nevent: ready\ndata: ${JSON.stringify(ready)}\n\n`);
  }

  protected write(out: Outbound): boolean {
    const bytes = out.sse;
    if (this.res.writableLength + bytes.length > this.limits.maxBufferedBytes) {
      this.end("slow_consumer");
      return false;
    }
    // Corked for the event-loop turn: a burst of messages leaves in one syscall (see corkForTurn).
    if (this.res.socket !== null) corkForTurn(this.res.socket);
    this.res.write(bytes);
    return true;
  }

  heartbeat(): void {
    if (!this.res.headersSent || this.ended) return;
    if (this.res.writableLength + PING.length > this.limits.maxBufferedBytes) {
      this.end("slow_consumer");
      return;
    }
    this.res.write(PING);
  }

  protected close(reason: EndReason, message: string): void {
    const { res } = this;
    if (res.destroyed || res.writableEnded) return;
    if (!res.headersSent) {
      const code = reason === "normal" ? "internal_error" : reason;
      const status = ERROR_CODES[code].status;
      const retry = status === 429 || status === 503 ? { "Retry-After": "1" } : undefined;
      res.writeHead(status, { ...this.headers, ...retry, "Content-Type": "application/json" });
      res.end(JSON.stringify({ error: { code, message } }));
      return;
    }
    if (reason !== "normal" && reason !== "slow_consumer") {
      // A named event, so a browser's onmessage does not see it; the stream ends right after.
      res.write(`event: error\ndata: ${JSON.stringify({ type: "error", error: { code: reason, message } })}\n\n`);
    }
    res.end();
    if (reason === "slow_consumer") {
      // The client is not reading, so the end may never flush: free the socket after a grace.
      setTimeout(() => res.destroy(), this.limits.graceMs).unref();
    }
  }
}
