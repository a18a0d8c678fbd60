import type { ErrorCode } from "./errors.js";

/** What the server says first on every subscription, before any message. */
export interface ReadyFrame {
  readonly type: "ready";
  readonly clientId: string;
  readonly channel: string;
  readonly pattern: boolean;
}

/** What the server sends on a WebSocket (envelopes are sent pre-encoded, see `encodeEnvelope`). */
export type ServerFrame =
  | ReadyFrame
  | { readonly type: "pong" }
  | { readonly type: "error"; readonly error: { readonly code: ErrorCode; readonly message: string } };

/** What a client may send on a WebSocket. */
export type ClientFrame = { readonly type: "auth"; readonly key: string } | { readonly type: "ping" };

/**
 * Reads one client text frame. `{"auth":"<key>"}` authenticates (the spec's form, without a
 * `type`), `{"type":"ping"}` asks for a pong. Anything else is `undefined`: a bad request.
 */
export function parseClientFrame(text: string): ClientFrame | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) return undefined;
  const frame = value as Record<string, unknown>;
  if (typeof frame.auth === "string" && (frame.type === undefined || frame.type === "auth")) {
    return { type: "auth", key: frame.auth };
  }
  if (frame.type === "ping") return { type: "ping" };
  return undefined;
}

/** A server frame as JSON text. */
export function encodeServerFrame(frame: ServerFrame): string {
  return JSON.stringify(frame);
}
