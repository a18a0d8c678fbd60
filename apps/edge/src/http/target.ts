import { PlateError } from "@plate/protocol";

/** What a path-only target is read against: only the path and query of the result are used. */
const ORIGIN = "http://localhost";

/**
 * The URL of a request target (RFC 9112 §3.2): origin-form (`/path?query`) or absolute-form
 * (`http://host/path`). Anything else is refused with `bad_request`, never thrown as anything
 * else: a target is the client's input, and an upgrade listener that threw would end the process.
 *
 * Refused, on the WebSocket and the HTTP routes alike:
 * - an absolute-form target that does not parse (`http://a:99999/`);
 * - a path that means another path to other readers: a backslash (URL parsers read it as `/`),
 *   or a leading `//` (read against a base URL, `//a:99999/` is a host, not a path). Hono's Node
 *   adapter (@hono/node-server 2.1, `newRequest`) refuses backslashes the same way; no route has
 *   an empty first segment, so refusing `//` costs nothing;
 * - any other form (`*`, authority-form).
 */
export function requestUrl(target: string | undefined): URL {
  const value = target ?? "";
  const query = value.indexOf("?");
  const backslash = value.indexOf("\\");
  if (backslash !== -1 && (query === -1 || backslash < query)) throw badTarget("has a backslash in its path");
  if (value.startsWith("//")) throw badTarget("starts with //");
  const text = value.startsWith("/")
    ? ORIGIN + value
    : value.startsWith("http://") || value.startsWith("https://")
      ? value
      : undefined;
  if (text === undefined) throw badTarget("is neither a path nor an http(s) URL");
  try {
    return new URL(text);
  } catch {
    throw badTarget("is not a URL");
  }
}

/**
 * Refuses a `Host` header that is not a host in a URL (`f1.1` reads as a bad IPv4 address): a
 * fetch `Request` built from it would throw when a route reads the request (seen: the fuzz test,
 * 500 on route 4's POST). An absent `Host` is left to the adapter.
 */
export function requireHost(host: string | undefined): void {
  if (host === undefined) return;
  try {
    new URL(`http://${host}/`);
  } catch {
    throw new PlateError("bad_request", "The Host header is not a host.");
  }
}

function badTarget(reason: string): PlateError {
  return new PlateError(
    "bad_request",
    `The request target ${reason}; send a path such as /{plateId}/pubsub/{channel}/subscribe.`,
  );
}
