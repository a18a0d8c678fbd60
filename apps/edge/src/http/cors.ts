/** How long browsers may cache a preflight answer, in seconds. */
export const CORS_MAX_AGE_S = 600;

const ALLOW_HEADERS = "Authorization, Content-Type, Last-Event-ID, Idempotency-Key";
const ALLOW_METHODS = "GET, POST, PATCH, DELETE, OPTIONS";
const EXPOSE_HEADERS = "Retry-After";

/**
 * The CORS headers for a request from `origin` (the `Origin` header), or none when the origin is
 * not allowed. One function serves Hono's answers and the SSE streams written straight to Node.
 */
export function corsHeaders(
  allowed: "*" | readonly string[],
  origin: string | undefined,
): Record<string, string> {
  if (allowed === "*") {
    return { "Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": EXPOSE_HEADERS };
  }
  if (origin === undefined || !allowed.includes(origin)) return { Vary: "Origin" };
  return {
    "Access-Control-Allow-Origin": origin,
    "Access-Control-Expose-Headers": EXPOSE_HEADERS,
    Vary: "Origin",
  };
}

/** Extra headers of a preflight (OPTIONS) answer. */
export function preflightHeaders(): Record<string, string> {
  return {
    "Access-Control-Allow-Methods": ALLOW_METHODS,
    "Access-Control-Allow-Headers": ALLOW_HEADERS,
    "Access-Control-Max-Age": String(CORS_MAX_AGE_S),
  };
}
