/** How long browsers may cache a preflight answer, in seconds. */
export const CORS_MAX_AGE_S = 600;

const ALLOW_HEADERS = "Authorization, Content-Type, Last-Event-ID, Idempotency-Key";
const ALLOW_METHODS = "GET, POST, PATCH, DELETE, OPTIONS";
const EXPOSE_HEADERS = "Retry-After";

/**
 * The CORS headers for a request from `origin` (the `Origin` header), or none when the origin is
 * not allowed. One function serves Hono's answers and the SSE streams written straight to Node.
 */
export function corsHeaders(allowed: "*" | readonly string[], origin: string | undefined): Record<string, string> {
  return addCorsHeaders({}, allowed, origin);
}

/** `corsHeaders`, written into `headers` (no object of its own: publish answers build one object). */
export function addCorsHeaders(
  headers: Record<string, string>,
  allowed: "*" | readonly string[],
  origin: string | undefined,
): Record<string, string> {
  if (allowed === "*") {
    headers["Access-Control-Allow-Origin"] = "*";
    headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS;
    return headers;
  }
  if (origin !== undefined && allowed.includes(origin)) {
    headers["Access-Control-Allow-Origin"] = origin;
    headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS;
  }
  headers.Vary = "Origin";
  return headers;
}

/** Extra headers of a preflight (OPTIONS) answer. */
export function preflightHeaders(): Record<string, string> {
  return {
    "Access-Control-Allow-Methods": ALLOW_METHODS,
    "Access-Control-Allow-Headers": ALLOW_HEADERS,
    "Access-Control-Max-Age": String(CORS_MAX_AGE_S),
  };
}
