/**
 * Subscribers for the k6 workloads: hold one WebSocket (stock k6, `k6/ws`) or SSE (xk6-sse)
 * subscription until a given time, and record every delivery in the shared metrics.
 *
 * A subscription that ends before its time (slow_consumer, revoked, shutting_down...) counts one
 * error, so a run that loses subscribers cannot pass.
 */
import { check } from "k6";
import ws from "k6/ws";
import type { SseModule } from "k6/x/sse";
import {
  AUTH_HEADERS,
  BASE_URL,
  TRANSPORT,
  WS_BASE_URL,
  channelPath,
  delivered,
  deliveryLatency,
  errors,
  isBenchPayload,
} from "./common.ts";

/** A frame Plate sends to a subscriber (docs/API.md, routes 2 and 3); SSE carries the same JSON. */
type ServerFrame =
  | { type: "ready"; clientId: string; channel: string; pattern: boolean }
  | { type: "message"; id: string; channel: string; message: unknown; timestamp: string }
  | { type: "pong" }
  | { type: "error"; error: { code: string; message: string } };

/**
 * xk6-sse, loaded only when TRANSPORT=sse so that a stock k6 runs the WebSocket workloads.
 * `require` is k6's init-context loader (declared in x-sse.d.ts).
 */
const sse: SseModule | undefined = TRANSPORT === "sse" ? require("k6/x/sse") : undefined;

/** Records one frame's delivery, or its error. */
function onFrame(text: string): void {
  const frame = JSON.parse(text) as ServerFrame;
  switch (frame.type) {
    case "message":
      delivered.add(1);
      if (isBenchPayload(frame.message)) deliveryLatency.add(Date.now() - frame.message.t);
      return;
    case "error":
      errors.add(1, { op: "server_error", code: frame.error.code });
      return;
    case "ready":
    case "pong":
      return;
    default:
      // Exhaustive over ServerFrame: reached only if the server sends a type this script does not know.
      frame satisfies never;
      errors.add(1, { op: "unexpected_frame" });
  }
}

/** Subscribes to `channel` over TRANSPORT and returns when the subscription closes (at `closeAtMs`). */
export function holdSubscription(channel: string, closeAtMs: number): void {
  if (TRANSPORT === "sse") holdSseSubscription(channel, closeAtMs);
  else holdWsSubscription(channel, closeAtMs);
}

/** WebSocket subscription (route 3), authenticated by the upgrade's Authorization header. */
export function holdWsSubscription(channel: string, closeAtMs: number): void {
  let closing = false;
  const url = `${WS_BASE_URL}${channelPath(channel)}/ws`;
  const res = ws.connect(url, { headers: AUTH_HEADERS, tags: { name: "subscribe_ws" } }, (socket) => {
    socket.on("message", onFrame);
    socket.on("error", () => errors.add(1, { op: "ws_error" }));
    socket.on("close", () => {
      if (!closing) errors.add(1, { op: "ws_closed_early" });
    });
    // k6/ws answers the server's protocol pings by itself (HEARTBEAT_MS on the server side).
    socket.setTimeout(
      () => {
        closing = true;
        socket.close(1000);
      },
      Math.max(0, closeAtMs - Date.now()),
    );
  });
  check(res, { "ws upgrade answers 101": (r) => r.status === 101 });
}

/**
 * SSE subscription (route 2). xk6-sse has no timers, so the stream is closed at the first event
 * after `closeAtMs` — a message, or the server's `: ping` at most SSE_PING_INTERVAL_S later — or,
 * failing that, when the scenario's maxDuration interrupts the VU.
 */
export function holdSseSubscription(channel: string, closeAtMs: number): void {
  if (sse === undefined) throw new Error("SSE subscribers need TRANSPORT=sse and a k6 built with xk6-sse");
  const url = `${BASE_URL}${channelPath(channel)}/subscribe`;
  const res = sse.open(url, { headers: AUTH_HEADERS, tags: { name: "subscribe_sse" } }, (client) => {
    client.on("event", (event) => {
      // Comment-only blocks (`: ping`) and the `retry:` preamble carry no data.
      if (event.data !== "") onFrame(event.data);
      if (Date.now() >= closeAtMs) client.close();
    });
    client.on("error", () => errors.add(1, { op: "sse_error" }));
  });
  check(res, { "sse answers 200": (r) => r.status === 200 });
  if (Date.now() < closeAtMs) errors.add(1, { op: "sse_closed_early" });
}
