import type { Duplex } from "node:stream";
import type { RawData, WebSocket } from "ws";
import { ERROR_CODES, PlateError, encodeServerFrame, parseClientFrame, parseRealtimeFrame } from "@plate/protocol";
import type { RealtimeClientFrame, ReadyFrame, RealtimeReadyFrame, UnreadableFrame } from "@plate/protocol";
import { Connection } from "../core/connection.js";
import type { ConnectionOptions, EndReason } from "../core/connection.js";
import type { Outbound, SharedFrame } from "../core/outbound.js";
import type { OutputLimits } from "./sse.js";
import type { DirectSend } from "@plate/direct-send";
import { compactListeners } from "./compact-listeners.js";
import { onOversizedFrame } from "./ws-oversized-frame.js";

/** Normal closure: the client's own close, or ours for no error. */
const CLOSE_NORMAL = 1000;

/**
 * Largest header of a frame the server sends (RFC 6455 5.2: 2 bytes, 8 more for a 64-bit length,
 * no mask): added to a control frame's payload when checking it against the output limit.
 */
const FRAME_HEADER_MAX_BYTES = 10;

const kConnection = Symbol("plate.connection");
const kLimits = Symbol("plate.limits");
type Tagged = WebSocket & { [kConnection]?: WsConnection; [kLimits]?: WsLimits };

/** The limits of one WebSocket (settings, see config.ts). */
export interface WsLimits extends OutputLimits {
  /** `WS_MAX_BAD_FRAMES`: the unexpected frame that reaches it closes the socket (4400). */
  readonly maxBadFrames: number;
  /** `WS_MAX_CLIENT_FRAME_BYTES`, for the message of `payload_too_large`. */
  readonly maxFrameBytes: number;
}

const PONG = encodeServerFrame({ type: "pong" });
const BAD_FRAME_MESSAGE = 'Send {"type":"ping"}; nothing else is expected after auth.';

/** Where a v2 connection's requests go (subscribe, unsubscribe, auth, unreadable frames). */
export type FrameHandler = (conn: WsConnection, frame: Exclude<RealtimeClientFrame, { type: "ping" }> | UnreadableFrame) => void;
const BAD_FRAME = encodeServerFrame({ type: "error", error: { code: "bad_request", message: BAD_FRAME_MESSAGE } });

/**
 * A WebSocket subscriber. Messages go out as the shared, ready-made text frame of each message,
 * written to the upgraded socket itself (corked for the event-loop turn); control frames (ready,
 * errors, pings, close) go through `ws`. Both write synchronously to the same socket (no
 * permessage-deflate), so their order holds. Protocol pings keep it alive: a peer that has not answered the previous ping when the
 * next heartbeat comes is terminated. Every frame queued for the client (messages, replays, ready,
 * reset, pongs, error frames, pings) counts against `limits.maxBufferedBytes`: one that would pass
 * it drops the client as a slow consumer.
 */
export class WsConnection extends Connection {
  readonly transport = "ws" as const;
  /** Whether a pong came back since the last ping. */
  alive = true;
  /** Unexpected frames received so far (see `receive`). */
  #badFrames = 0;

  constructor(
    private readonly ws: WebSocket,
    /** The upgraded socket under `ws`. */
    private readonly socket: Duplex,
    options: ConnectionOptions,
    private readonly limits: WsLimits,
    /** A v2 connection's requests; v1 takes pings only. */
    private readonly handler?: FrameHandler,
  ) {
    super(options);
    (ws as Tagged)[kConnection] = this;
    ws.on("pong", onPong);
    ws.on("close", onClose);
    ws.on("message", onMessage);
    // The socket's listeners and the WebSocket's are settled now: see compactListeners.
    compactListeners(socket);
    compactListeners(ws);
  }

  /** The upgraded socket: a paced replay (Connection.start) follows its buffer. */
  protected get output(): Duplex {
    return this.socket;
  }

  protected get maxBufferedBytes(): number {
    return this.limits.maxBufferedBytes;
  }

  protected get noDelayNow(): boolean {
    return this.limits.noDelay.noDelay;
  }

  protected get directSend(): DirectSend | undefined {
    return this.limits.directSend;
  }

  protected bytesOf(out: Outbound): number {
    return out.wsFrame.length;
  }

  protected frameBytes(_type: string, json: string): number {
    return Buffer.byteLength(json) + FRAME_HEADER_MAX_BYTES;
  }

  // A WebSocket stream carries no id: the ready frame's `position`s are the starting positions.
  protected writeReady(ready: ReadyFrame | RealtimeReadyFrame): void {
    this.#send(JSON.stringify(ready));
  }

  protected writeFrame(_type: string, json: string): void {
    this.#send(json);
  }

  /**
   * Answers a client frame after auth: `{"type":"ping"}` gets `{"type":"pong"}`. On v1 anything
   * else (another auth frame too) gets a `bad_request` error frame; on v2 requests go to the
   * handler, and frames that cannot be read get an error frame with their `ref`. The unreadable
   * frame that reaches `maxBadFrames` closes the socket with 4400 instead. Answers count against
   * the output limit.
   */
  receive(data: RawData, isBinary: boolean): void {
    if (this.ended) return;
    if (this.handler !== undefined) {
      const frame: RealtimeClientFrame | UnreadableFrame = isBinary
        ? { type: "unreadable", code: "bad_request", message: "Frames are JSON text." }
        : parseRealtimeFrame(frameText(data));
      if (frame.type === "ping") {
        if (frame.ref === undefined) this.#send(PONG);
        else this.frame({ type: "pong", ref: frame.ref });
        return;
      }
      if (frame.type === "unreadable" && this.#bad()) return;
      this.handler(this, frame);
      return;
    }
    const frame = isBinary ? undefined : parseClientFrame(frameText(data));
    if (frame?.type === "ping") {
      this.#send(PONG);
      return;
    }
    if (!this.#bad()) this.#send(BAD_FRAME);
  }

  /** Counts an unexpected frame; the one that reaches `maxBadFrames` closes the socket (answers true then). */
  #bad(): boolean {
    this.#badFrames += 1;
    if (this.#badFrames < this.limits.maxBadFrames) return false;
    this.end("bad_request", `${this.#badFrames} frames could not be taken; closing.`);
    return true;
  }

  /**
   * Sends a control frame (ready, reset, pong, error) through `ws` when it fits within the output
   * limit with what is already waiting unsent, and drops the client as a slow consumer when it does
   * not: every byte queued for a client counts, or a client that sends and never reads could grow
   * the node with the answers it is owed (issue 11: hundreds of MB).
   */
  #send(frame: string): void {
    if (this.ws.readyState !== this.ws.OPEN) return;
    if (!fits(this.ws, Buffer.byteLength(frame), this.limits.maxBufferedBytes)) {
      this.end("slow_consumer");
      return;
    }
    // Through `ws`, not `writeInTurn`: the socket follows SUBSCRIBER_NO_DELAY here itself, and
    // what a fan-out holds for it (`openDirectBatch`) goes first.
    this.followNoDelay(this.socket);
    this.flushHeld();
    this.ws.send(frame);
  }

  protected writeShared(frame: SharedFrame): void {
    this.#writeBytes(frame.wsFrame);
  }

  protected write(out: Outbound): boolean {
    return this.#writeBytes(out.wsFrame);
  }

  #writeBytes(frame: Buffer): boolean {
    // The peer's close may be under way in `ws` before this connection has heard of it.
    if (this.ws.readyState !== this.ws.OPEN) return false;
    if (this.socket.writableLength + frame.length > this.limits.maxBufferedBytes) {
      this.end("slow_consumer");
      return false;
    }
    this.writeInTurn(this.socket, frame);
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
    if (fits(this.ws, 0, this.limits.maxBufferedBytes)) this.ws.ping();
    else this.end("slow_consumer");
  }

  protected close(reason: EndReason, message: string): void {
    closeWithError(this.ws, reason === "normal" ? undefined : new PlateError(reason, message), this.limits);
  }
}

/**
 * Prepares a socket just upgraded, before it authenticates: its protocol pings are answered within
 * the output limit (the server runs with `autoPong: false`: `ws`'s own answers were writes no limit
 * counted), and a frame over `WS_MAX_CLIENT_FRAME_BYTES` gets the `payload_too_large` error frame
 * before its close (1009). Nothing here allocates per socket but the tags.
 */
export function acceptSocket(ws: WebSocket, limits: WsLimits): void {
  (ws as Tagged)[kLimits] = limits;
  ws.on("ping", onPing);
  onOversizedFrame(ws, closeOversized);
}

/** Whether a frame of `payloadBytes` fits within `maxBufferedBytes` with what `ws` has waiting unsent. */
function fits(ws: WebSocket, payloadBytes: number, maxBufferedBytes: number): boolean {
  // `bufferedAmount` is the socket's unsent bytes: the messages written to it directly count too.
  return ws.bufferedAmount + payloadBytes + FRAME_HEADER_MAX_BYTES <= maxBufferedBytes;
}

/** Ends `ws` with `error`: through its connection once it has one (so the fan-out lets go of it). */
function endSocket(ws: Tagged, error: PlateError): void {
  const conn = ws[kConnection];
  const limits = ws[kLimits];
  if (conn !== undefined) conn.end(error.code, error.message);
  else if (limits !== undefined) closeWithError(ws, error, limits);
  else ws.terminate();
}

function onMessage(this: Tagged, data: RawData, isBinary: boolean): void {
  this[kConnection]?.receive(data, isBinary);
}

/** A client's protocol ping: its pong (RFC 6455 5.5.2) if it fits, else a slow-consumer drop. */
function onPing(this: Tagged, data: Buffer): void {
  const limits = this[kLimits];
  if (this.readyState !== this.OPEN || limits === undefined) return;
  if (fits(this, data.length, limits.maxBufferedBytes)) this.pong(data);
  else endSocket(this, new PlateError("slow_consumer", "The client did not read its pongs; reconnect."));
}

function closeOversized(ws: Tagged): void {
  const max = ws[kLimits]?.maxFrameBytes;
  endSocket(ws, new PlateError("payload_too_large", `Frames may be at most ${max} bytes.`));
}

/** A text frame's payload as a string (`ws` hands over a Buffer, or its fragments). */
export function frameText(data: RawData): string {
  if (Buffer.isBuffer(data)) return data.toString("utf8");
  return Array.isArray(data) ? Buffer.concat(data).toString("utf8") : Buffer.from(data).toString("utf8");
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
 * cannot take more (a slow consumer, or any socket the frame would take past
 * `limits.maxBufferedBytes`) gets no frame, and is destroyed after `limits.graceMs` if its close
 * has not gone through by then.
 */
export function closeWithError(ws: WebSocket, error: PlateError | undefined, limits: OutputLimits): void {
  if (ws.readyState === ws.CLOSED || ws.readyState === ws.CLOSING) return;
  if (error === undefined) {
    ws.close(CLOSE_NORMAL);
    return;
  }
  if (error.code !== "slow_consumer") {
    const frame = encodeServerFrame({ type: "error", error: { code: error.code, message: error.message } });
    if (fits(ws, Buffer.byteLength(frame), limits.maxBufferedBytes)) ws.send(frame);
  }
  ws.close(ERROR_CODES[error.code].close, error.code);
  setTimeout(() => ws.terminate(), limits.graceMs).unref();
}
