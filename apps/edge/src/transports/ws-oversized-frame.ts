import type { EventEmitter } from "node:events";
import type { WebSocket } from "ws";

/** The `code` of `ws`'s error for a frame over `maxPayload` (lib/receiver.js, `haveLength`). */
const OVERSIZED = "WS_ERR_UNSUPPORTED_MESSAGE_LENGTH";

const kOwner = Symbol("plate.oversized.owner");
const kListener = Symbol("plate.oversized.listener");

/** `ws`'s frame parser, as far as this module uses it. */
type Receiver = EventEmitter & {
  [kOwner]?: WebSocket;
  [kListener]?: (ws: WebSocket) => void;
};

/**
 * Runs `listener(ws)` when the client sends a frame over the server's `maxPayload`, while `ws` is
 * still open: the listener may send an error frame and close with a reason of its own.
 *
 * Reaches into `ws` (checked against ws 8.23.0). `ws` checks `maxPayload` as soon as a frame's
 * header gives its length (`Receiver#haveLength` in lib/receiver.js), so no byte of the payload is
 * buffered; its parser then emits `error`, whose listener (`receiverOnError` in lib/websocket.js)
 * stops reading and calls `websocket.close(1009)` with no reason, before the WebSocket emits its
 * own `error`: by then the close frame is written and nothing can go before it. There is no public
 * hook in between, so this listens on the parser itself (the private `_receiver`), ahead of `ws`'s
 * listener. When a later `ws` renames or reorders these, the close goes back to a bare 1009 and
 * the payload_too_large tests in ws.test.ts fail.
 */
export function onOversizedFrame(ws: WebSocket, listener: (ws: WebSocket) => void): void {
  const receiver = (ws as unknown as { _receiver?: Receiver })._receiver;
  if (receiver === undefined || typeof receiver.prependListener !== "function") return;
  receiver[kOwner] = ws;
  receiver[kListener] = listener;
  receiver.prependListener("error", receiverOnError);
}

/** Defined once, not per socket: the parser carries its WebSocket and listener. */
function receiverOnError(this: Receiver, err: Error & { code?: string }): void {
  const ws = this[kOwner];
  if (err.code !== OVERSIZED || ws === undefined || ws.readyState !== ws.OPEN) return;
  this[kListener]?.(ws);
}
