import type { Duplex } from "node:stream";
import type { WebSocket } from "ws";
import { ERROR_CODES, PlateError, encodeServerFrame } from "@plate/protocol";
import type { PlateId, ReadyFrame, ResetFrame, Topic } from "@plate/protocol";
import { Connection } from "../core/connection.js";
import type { EndReason } from "../core/connection.js";
import type { Outbound } from "../core/outbound.js";
import { corkForTurn } from "../core/turn-cork.js";
import type { OutputLimits } from "./sse.js";

/** Normal closure: the client's own close, or ours for no error. */
const CLOSE_NORMAL = 1000;

const kConnection = Symbol("plate.connection");
type Tagged = WebSocket & { [kConnection]?: WsConnection };

/**
 * A WebSocket subscriber. Messages go out as the shared, ready-made text frame of each message,
 * written to the upgraded socket itself (corked for the event-loop turn); control frames (ready,
 * errors, pings, close) go through `ws`. Both write synchronously to the same socket (no
 * permessage-deflate), so their order holds. Protocol pings keep it alive: a peer that has not answered the previous ping when the
 * next heartbeat comes is terminated.
 */
export class WsConnection extends Connection {
  readonly transport = "ws" as const;
  /** Whether a pong came back since the last ping. */
  alive = true;

  constructor(
    private readonly ws: WebSocket,
    /** The upgraded socket under `ws`. */
    private readonly socket: Duplex,
    plateId: PlateId,
    keyId: string,
    topic: Topic,
    clientId: string,
    private readonly limits: OutputLimits,
  ) {
    super(plateId, keyId, topic, clientId);
    (ws as Tagged)[kConnection] = this;
    ws.on("pong", onPong);
    ws.on("close", onClose);
  }

  protected writeReady(ready: ReadyFrame): void {
    this.ws.send(encodeServerFrame(ready));
  }

  protected writeReset(reset: ResetFrame): void {
    this.ws.send(encodeServerFrame(reset));
  }

  protected write(out: Outbound): boolean {
    // The peer's close may be under way in `ws` before this connection has heard of it.
    if (this.ws.readyState !== this.ws.OPEN) return false;
    const frame = out.wsFrame;
    if (this.socket.writableLength + frame.length > this.limits.maxBufferedBytes) {
      this.end("slow_consumer");
      return false;
    }
    corkForTurn(this.socket);
    this.socket.write(frame);
    return true;
  }

  heartbeat(): void {
    if (this.ended) return;
    if (!this.alive) {
      this.ws.terminate();
      this.end("normal");
      return;
    }
    this.alive = false;
    this.ws.ping();
  }

  protected close(reason: EndReason, message: string): void {
    closeWithError(this.ws, reason === "normal" ? undefined : new PlateError(reason, message), this.limits.graceMs);
  }
}

function onPong(this: Tagged): void {
  const conn = this[kConnection];
  if (conn !== undefined) conn.alive = true;
}

function onClose(this: Tagged): void {
  this[kConnection]?.end("normal");
}

/**
 * Closes a socket for `error`: its error frame (`{"type":"error","error":{...}}`), then the close
 * code of its code with the code as the reason. Without an error, a normal close. A socket that
 * cannot take more (a slow consumer) gets no frame, and is destroyed after `graceMs` if its close
 * has not gone through by then.
 */
export function closeWithError(ws: WebSocket, error: PlateError | undefined, graceMs: number): void {
  if (ws.readyState === ws.CLOSED || ws.readyState === ws.CLOSING) return;
  if (error === undefined) {
    ws.close(CLOSE_NORMAL);
    return;
  }
  if (error.code !== "slow_consumer") {
    ws.send(encodeServerFrame({ type: "error", error: { code: error.code, message: error.message } }));
  }
  ws.close(ERROR_CODES[error.code].close, error.code);
  setTimeout(() => ws.terminate(), graceMs).unref();
}
