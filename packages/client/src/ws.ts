import { PlateClientError, errorFromClose } from "./errors.js";
import type { ErrorCode } from "./errors.js";
import { IdleWatch, readFrame } from "./transport.js";
import type { Opened, Target, TransportEvents } from "./transport.js";
import type { Envelope, Ready, Reset } from "./types.js";

/** A WebSocket constructor: the browser's, Node 22's global one, or the `ws` package's. */
export type WebSocketConstructor = new (url: string) => unknown;

/** What the client uses of a WebSocket (the browser's API, which `ws` also offers). */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

/** `WebSocket.OPEN`, which the constructor type does not promise to carry. */
export const OPEN = 1;

/** The WebSocket to use: the one given, else the platform's; `undefined` when there is none (Node 20). */
export function webSocketImpl(given: WebSocketConstructor | undefined): WebSocketConstructor | undefined {
  return given ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
}

type ServerFrame = Ready | Envelope | Reset | { type: "pong" } | { type: "error"; error: { code: ErrorCode; message: string } };

/**
 * A WebSocket subscription: authorizes with `{"auth": key, "since": id}` as its first frame on the
 * subscribe route, or with `?since=` on a client path. The server pings at the protocol level,
 * which browsers answer without telling scripts; so that the client notices a dead link too, it
 * sends `{"type":"ping"}` when nothing arrived for half of `idleTimeoutMs`, and gives up after all of it.
 */
export function openWs(target: Target, events: TransportEvents, WebSocketImpl: WebSocketConstructor): Opened {
  const url = new URL(target.url);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  if (target.key === undefined && target.since !== undefined) url.searchParams.set("since", target.since);
  const socket = new WebSocketImpl(url.href) as WebSocketLike;
  let over = false;
  let endedWith: PlateClientError | undefined;
  const finish = (error: PlateClientError): void => {
    if (over) return;
    over = true;
    idle.stop();
    clearInterval(pinger);
    events.end(error);
  };
  const idle = new IdleWatch(target.idleTimeoutMs, (ms) => {
    finish(new PlateClientError("network_error", `Nothing arrived for ${ms} ms, not even a pong.`));
    socket.close();
  });
  const pinger = setInterval(() => {
    if (socket.readyState === OPEN && idle.idleMs >= target.idleTimeoutMs / 2) socket.send('{"type":"ping"}');
  }, target.idleTimeoutMs / 2);

  socket.onopen = () => {
    if (target.key !== undefined) socket.send(JSON.stringify({ auth: target.key, ...(target.since === undefined ? {} : { since: target.since }) }));
  };
  socket.onmessage = (event) => {
    idle.touch();
    const frame = readFrame<ServerFrame>(event.data);
    if (frame === undefined) return;
    switch (frame.type) {
      case "message":
        events.message(frame);
        break;
      case "ready":
        events.ready(frame);
        break;
      case "reset":
        events.reset(frame);
        break;
      case "error":
        // The close that follows carries the same code; the frame has the sentence.
        endedWith = new PlateClientError(frame.error.code, frame.error.message);
        break;
      case "pong":
        break;
    }
  };
  socket.onerror = () => undefined; // a close event always follows, with what is known
  socket.onclose = (event) => {
    if (endedWith !== undefined) finish(new PlateClientError(endedWith.code, endedWith.message, { closeCode: event.code }));
    else finish(errorFromClose(event.code, event.reason) ?? new PlateClientError("network_error", "The server closed the connection.", { closeCode: event.code }));
  };

  return {
    close() {
      over = true;
      idle.stop();
      clearInterval(pinger);
      socket.close(1000);
    },
  };
}
