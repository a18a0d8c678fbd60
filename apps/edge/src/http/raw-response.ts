import { STATUS_CODES } from "node:http";
import type { IncomingMessage, ServerResponse } from "node:http";
import { loggablePath } from "../core/request-id.js";
import type { Services } from "../services.js";
import { addCorsHeaders } from "./cors.js";
import { errorAnswer, refuse } from "./refusals.js";

/** Headers every answer carries: browsers must not guess another type than the one declared. */
export const NO_SNIFF = { "X-Content-Type-Options": "nosniff" } as const;

/**
 * An answer's status line and `headers`, a line each, for a socket written without Node's response
 * (the fast lane's answers, a refused upgrade); the blank line and body are the caller's.
 */
export function rawHead(status: number, headers: Readonly<Record<string, string>>): string {
  let text = status === 200 ? "HTTP/1.1 200 OK\r\n" : `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ""}\r\n`;
  for (const name in headers) text += name + ": " + headers[name] + "\r\n";
  return text;
}

/**
 * The headers of an answer written outside Hono (on Node's own response, or by the fast lane): CORS
 * for the request's `Origin`, the request id, `NO_SNIFF`.
 */
export function answerHeaders(services: Services, origin: string | undefined, requestId: string): Record<string, string> {
  return addCorsHeaders({ "X-Request-Id": requestId, "X-Content-Type-Options": NO_SNIFF["X-Content-Type-Options"] }, services.config.corsOrigins, origin);
}

/**
 * The error boundary of what is answered outside Hono (publish, a target refused before Hono):
 * refused the one way (`refuse`: logged as `what`, counted), answered as `errorAnswer`.
 * `headers` are `answerHeaders`.
 */
export function sendError(
  services: Services,
  req: IncomingMessage,
  res: ServerResponse,
  headers: Record<string, string>,
  err: unknown,
  what: string,
): void {
  const error = refuse(services, err, { what, requestId: headers["X-Request-Id"], path: loggablePath(req.url ?? "") });
  // Failed after the answer started: nothing truthful can follow on this connection.
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const answer = errorAnswer(error);
  const all: Record<string, string> = { ...headers, ...answer.headers };
  // A body left unread (refused before or while reading it) cannot be skipped safely: close after.
  if (!req.complete) all.Connection = "close";
  res.writeHead(answer.status, all);
  res.end(answer.body);
}
