import type { IncomingMessage, ServerResponse } from "node:http";
import { toPlateError } from "@plate/protocol";
import { loggablePath } from "../core/request-id.js";
import type { Services } from "../services.js";
import { addCorsHeaders } from "./cors.js";

/** Headers every answer carries: browsers must not guess another type than the one declared. */
export const NO_SNIFF = { "X-Content-Type-Options": "nosniff" } as const;

/** The headers of an answer written on Node's own response: CORS, the request id, `NO_SNIFF`. */
export function answerHeaders(services: Services, req: IncomingMessage, requestId: string): Record<string, string> {
  return addCorsHeaders({ "X-Request-Id": requestId, "X-Content-Type-Options": NO_SNIFF["X-Content-Type-Options"] }, services.config.corsOrigins, req.headers.origin);
}

/**
 * The error boundary of what is answered outside Hono (publish, a target refused before Hono):
 * the spec's error body with the code's status, the refusal counted, `internal_error` logged with
 * its detail and every other code at debug as `refusal`. `headers` are `answerHeaders`.
 */
export function sendError(
  services: Services,
  req: IncomingMessage,
  res: ServerResponse,
  headers: Record<string, string>,
  err: unknown,
  refusal: string,
): void {
  const error = toPlateError(err);
  const fields = {
    requestId: headers["X-Request-Id"],
    path: loggablePath(req.url ?? ""),
    status: error.status,
    code: error.code,
  };
  if (error.code === "internal_error") services.log.error("request failed", { ...fields, error: String(err) });
  else services.log.debug(refusal, fields);
  services.metrics.rejected.inc({ code: error.code });
  // Failed after the answer started: nothing truthful can follow on this connection.
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const text = JSON.stringify(error.toBody());
  const answer: Record<string, string | number> = {
    ...headers,
    "Content-Type": "application/json",
    "Content-Length": Buffer.byteLength(text),
  };
  if (error.retryAfterS !== undefined) answer["Retry-After"] = String(error.retryAfterS);
  // A body left unread (refused before or while reading it) cannot be skipped safely: close after.
  if (!req.complete) answer.Connection = "close";
  res.writeHead(error.status, answer);
  res.end(text);
}
