import { PlateClientError, errorFromClose } from "./errors.js";
import type { ErrorCode } from "./errors.js";
import type {
  AnyReady,
  PublishRequest,
  RealtimeEvents,
  RealtimeLink,
  RealtimeTarget,
  SubscriptionRequest,
  Unsubscribed,
} from "./realtime-transport.js";
import { IdleWatch, readFrame } from "./transport.js";
import type { PresenceFrame } from "./realtime-presence.js";
import type { Envelope, RealtimeReset, SubscriptionInfo, SubscriptionName } from "./types.js";
import { OPEN } from "./ws.js";
import type { WebSocketConstructor, WebSocketLike } from "./ws.js";

/** What a route 9 WebSocket sends (route 9 of the spec; a v1 `ready` on a one-channel client path). */
type ServerFrame =
  | AnyReady
  | Envelope
  | ({ type: "subscribed"; ref?: number | string } & SubscriptionInfo)
  | ({ type: "unsubscribed"; ref?: number | string } & Unsubscribed)
  | RealtimeReset
  | PresenceFrame
  | { type: "published"; ref?: number | string; id: string }
  | { type: "ok"; ref?: number | string }
  | { type: "pong" }
  | { type: "error"; ref?: number | string; error: { code: ErrorCode; message: string } };

/**
 * One realtime connection over a WebSocket. With a key, the first frame is
 * `{"type":"auth","key":…}`, with a signed token `{"type":"auth","token":…}` (a browser cannot set
 * headers on a WebSocket, and a URL may end up in logs); a client path needs none. Requests are
 * JSON frames carrying a `ref`, which the reply (or refusal) echoes. As on v1
 * (ws.ts), the client pings when nothing arrived for half of `idleTimeoutMs` and gives up after
 * all of it.
 */
export function openRealtimeWs(
  target: RealtimeTarget,
  events: RealtimeEvents,
  WebSocketImpl: WebSocketConstructor,
): RealtimeLink {
  const url = new URL(target.url);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocketImpl(url.href) as WebSocketLike;
  let over = false;
  let endedWith: PlateClientError | undefined;
  const stop = (): void => {
    over = true;
    idle.stop();
    clearInterval(pinger);
  };
  const finish = (error: PlateClientError): void => {
    if (over) return;
    stop();
    events.end(error);
  };
  const idle = new IdleWatch(target.idleTimeoutMs, (ms) => {
    finish(new PlateClientError("network_error", `Nothing arrived for ${ms} ms, not even a pong.`));
    socket.close();
  });
  const pinger = setInterval(() => {
    if (socket.readyState === OPEN && idle.idleMs >= target.idleTimeoutMs / 2) socket.send('{"type":"ping"}');
  }, target.idleTimeoutMs / 2);
  const send = (frame: object): void => {
    // Not open: the socket is closing, and its close event ends the attempt.
    if (!over && socket.readyState === OPEN) socket.send(JSON.stringify(frame));
  };

  socket.onopen = () => {
    if (target.key !== undefined) send({ type: "auth", key: target.key });
    else if (target.token !== undefined) send({ type: "auth", token: target.token });
  };
  socket.onmessage = (event) => {
    idle.touch();
    const frame = over ? undefined : readFrame<ServerFrame>(event.data);
    if (frame === undefined) return;
    switch (frame.type) {
      case "message":
        events.message(frame);
        break;
      case "ready":
        events.ready(frame);
        break;
      case "subscribed":
        events.subscribed(frame);
        break;
      case "unsubscribed":
        events.unsubscribed(frame);
        break;
      case "reset":
        events.reset(frame);
        break;
      case "presence":
        events.presence(frame);
        break;
      case "published":
        if (typeof frame.ref === "number") events.published(frame.ref, frame.id);
        break;
      case "ok":
        if (typeof frame.ref === "number") events.ok(frame.ref);
        break;
      case "error": {
        const error = new PlateClientError(frame.error.code, frame.error.message);
        // With a ref: a refused request, and the connection stays open. Without: the close that
        // follows carries the same code; the frame has the sentence.
        if (typeof frame.ref === "number") events.refused(frame.ref, error);
        else if (frame.ref === undefined) endedWith = error;
        break;
      }
      case "pong":
        break;
    }
  };
  socket.onerror = () => undefined; // a close event always follows, with what is known
  socket.onclose = (event) => {
    if (endedWith !== undefined)
      finish(new PlateClientError(endedWith.code, endedWith.message, { closeCode: event.code }));
    else
      finish(
        errorFromClose(event.code, event.reason) ??
          new PlateClientError("network_error", "The server closed the connection.", { closeCode: event.code }),
      );
  };

  return {
    subscribe(ref: number, request: SubscriptionRequest) {
      send({ type: "subscribe", ref, ...request });
    },
    unsubscribe(ref: number, name: SubscriptionName) {
      send({ type: "unsubscribe", ref, ...name });
    },
    publish(ref: number, request: PublishRequest) {
      send({ type: "publish", ref, ...request });
    },
    refresh(ref: number, token: string) {
      send({ type: "auth", ref, token });
    },
    track(ref: number, channel: string, state: unknown) {
      send({ type: "presence.track", ref, channel, state });
    },
    untrack(ref: number, channel: string) {
      send({ type: "presence.untrack", ref, channel });
    },
    close() {
      stop();
      socket.close(1000);
    },
  };
}
