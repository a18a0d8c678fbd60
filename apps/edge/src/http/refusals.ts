import { toPlateError } from "@plate/protocol";
import type { PlateError } from "@plate/protocol";
import type { Logger } from "../log.js";
import type { Metrics } from "../metrics.js";

/** Where a refusal happened, for its log line. */
export interface RefusalContext {
  /** The log line's message for an expected refusal (`publish refused`, `websocket refused`, ...). */
  readonly what: string;
  readonly requestId?: string | undefined;
  /** The request's path, already made loggable (`loggablePath`: no client token in it). */
  readonly path?: string | undefined;
}

/**
 * The one way a request is refused, on every route and transport: the error it becomes (the
 * unexpected is `internal_error`), logged (`internal_error` at error level with its detail, every
 * other code at debug as `context.what`) and counted in `plate_rejected_total` by code. The caller
 * then answers it in its transport's form: `errorAnswer` for HTTP, the error frame and close code
 * for a WebSocket.
 */
export function refuse(parts: { readonly log: Logger; readonly metrics: Metrics }, err: unknown, context: RefusalContext): PlateError {
  const error = toPlateError(err);
  parts.metrics.rejected.inc({ code: error.code });
  const fields = { requestId: context.requestId, path: context.path, status: error.status, code: error.code };
  if (error.code === "internal_error") parts.log.error("request failed", { ...fields, error: String(err) });
  else if (parts.log.debugEnabled) parts.log.debug(context.what, fields);
  return error;
}

/** An error as an HTTP answer: the code's status, the spec's body, `Retry-After` when the error has one. */
export function errorAnswer(error: PlateError): { status: number; headers: Record<string, string>; body: string } {
  const body = JSON.stringify(error.toBody());
  const headers: Record<string, string> = { "Content-Type": "application/json", "Content-Length": String(Buffer.byteLength(body)) };
  if (error.retryAfterS !== undefined) headers["Retry-After"] = String(error.retryAfterS);
  return { status: error.status, headers, body };
}
