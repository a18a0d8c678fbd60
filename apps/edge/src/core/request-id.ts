import { nanoid } from "nanoid";

/** What a request id sent by a client or a proxy (`X-Request-Id`, nginx's `$request_id`) may hold. */
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,64}$/;
/** Random characters that start every request id this process makes up. */
const REQUEST_ID_PREFIX_CHARS = 8;
/** Base-36 digits of the count after them: ids are 16 characters, and repeat after 36^8 (2.8 × 10^12). */
const REQUEST_ID_COUNT_DIGITS = 8;
const REQUEST_ID_PREFIX = nanoid(REQUEST_ID_PREFIX_CHARS);
const REQUEST_ID_COUNTS = 36 ** REQUEST_ID_COUNT_DIGITS;
let requestsCounted = 0;

/**
 * The id of one request, for logs and the `X-Request-Id` answer header: the one the client or the
 * load balancer sent, when it is a plain token, else a new one. A new one is this process' random
 * prefix and a count: unique across nodes and restarts as a random id is, without drawing random
 * bytes per request (nanoid's were 1% of a node's CPU when publishing, load-tests W3). Request ids
 * are not secrets.
 */
export function requestIdOf(header: string | string[] | undefined): string {
  if (typeof header === "string" && REQUEST_ID.test(header)) return header;
  requestsCounted = (requestsCounted + 1) % REQUEST_ID_COUNTS;
  return REQUEST_ID_PREFIX + requestsCounted.toString(36).padStart(REQUEST_ID_COUNT_DIGITS, "0");
}

/** An absolute-form target's scheme and host (`http://host:port`), before its path. */
const SCHEME_AND_HOST = /^[a-z][a-z\d+.-]*:\/\/[^/]*/i;
/** What makes a router read a path otherwise than as sent: escapes, backslashes, dot segments. */
const NOT_PLAIN = /[%\\]|\/\./;

/**
 * A request path as it may be logged: without its query string, and with a client token (route 5,
 * `/{plateId}/s/{token}`) replaced by `*`. API keys never travel in paths; tokens do, and a log
 * must not hold one. The path is read as the routers read it (scheme and host dropped, `\` as `/`,
 * dot segments resolved, each segment percent-decoded: `/p/%73/{token}` is route 5 too), so no
 * spelling of route 5 keeps its token; a bad escape leaves a segment as sent, never throws.
 */
export function loggablePath(url: string): string {
  const segments = routedPath(url.split("?", 1)[0]!).split("/");
  // Empty segments are skipped: a proxy that merges slashes (nginx does) reads `/p//s//t` as route 5.
  const named = segments.flatMap((segment, i) => (segment === "" ? [] : [i]));
  if (named.length >= 3 && decodeSegment(segments[named[1]!]!) === "s") segments[named[2]!] = "*";
  return segments.join("/");
}

function routedPath(target: string): string {
  const path = target.replace(SCHEME_AND_HOST, "");
  if (path.startsWith("/") && !NOT_PLAIN.test(path)) return path;
  try {
    return new URL(`http://localhost${path.startsWith("/") ? "" : "/"}${path}`).pathname;
  } catch {
    return "/(unreadable path)";
  }
}

function decodeSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}
