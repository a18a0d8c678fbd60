import type { ErrorCode } from "./errors.js";
import type { ResetReason } from "./positions.js";

/** What the server says first on every subscription, before any message. */
export interface ReadyFrame {
  readonly type: "ready";
  readonly clientId: string;
  readonly channel: string;
  readonly pattern: boolean;
  /**
   * Where this subscription starts in the plate's history: the id to resume from when no message
   * has arrived yet (SSE also sends it as the `ready` event's `id:`, so `EventSource` sends it
   * back). Absent when the broker could not tell.
   */
  readonly position?: string;
}

/**
 * Sent after `ready`, before any message, when a subscription asked to resume (`Last-Event-ID`,
 * `since`) and the history cannot give it everything it missed: the client must refetch its state.
 * Live messages follow as usual.
 */
export interface ResetFrame {
  readonly type: "reset";
  readonly channel: string;
  readonly reason: ResetReason;
  readonly message: string;
}

/** What the server sends on a WebSocket (envelopes are sent pre-encoded, see `encodeEnvelope`). */
export type ServerFrame =
  | ReadyFrame
  | ResetFrame
  | { readonly type: "pong" }
  | { readonly type: "error"; readonly error: { readonly code: ErrorCode; readonly message: string } };

/** What a client may send on a WebSocket. */
export type ClientFrame =
  | {
      readonly type: "auth";
      /** The credential: an API key, or with `signed` a signed client token (route 9 only). */
      readonly key: string;
      readonly since?: string;
      readonly signed?: true;
    }
  | { readonly type: "ping" };

/**
 * Reads one client text frame. `{"auth":"<key>"}` authenticates (the spec's form, without a
 * `type`; `"since":"<id>"` beside it resumes), `{"type":"ping"}` asks for a pong. Anything else is
 * `undefined`: a bad request.
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
    if (frame.since === undefined) return { type: "auth", key: frame.auth };
    if (typeof frame.since !== "string") return undefined;
    return { type: "auth", key: frame.auth, since: frame.since };
  }
  // v2's form: `{"type":"auth","key":"<key>"}`.
  if (frame.type === "auth" && typeof frame.key === "string" && frame.auth === undefined) {
    if (frame.since === undefined) return { type: "auth", key: frame.key };
    if (typeof frame.since !== "string") return undefined;
    return { type: "auth", key: frame.key, since: frame.since };
  }
  // v2's signed client token: `{"type":"auth","token":"<JWT>"}` (route 9).
  if (frame.type === "auth" && typeof frame.token === "string" && frame.key === undefined && frame.auth === undefined) {
    if (frame.since !== undefined && typeof frame.since !== "string") return undefined;
    return { type: "auth", key: frame.token, signed: true, ...(typeof frame.since === "string" ? { since: frame.since } : {}) };
  }
  if (frame.type === "ping") return { type: "ping" };
  return undefined;
}

/** A server frame as JSON text. */
export function encodeServerFrame(frame: ServerFrame): string {
  return JSON.stringify(frame);
}
