import { nanoid } from "nanoid";

/** What a request id sent by a client or a proxy (`X-Request-Id`, nginx's `$request_id`) may hold. */
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,64}$/;
/** Characters of a request id the node makes up. */
const REQUEST_ID_CHARS = 16;

/**
 * The id of one request, for logs and the `X-Request-Id` answer header: the one the client or the
 * load balancer sent, when it is a plain token, else a new one.
 */
export function requestIdOf(header: string | string[] | undefined): string {
  return typeof header === "string" && REQUEST_ID.test(header) ? header : nanoid(REQUEST_ID_CHARS);
}

/** Route 5's path: `/{plateId}/s/{token}`; the token is a secret. */
const TOKEN_PATH = /^(\/[^/?]+\/s\/)[^/?]+/;

/**
 * A request path as it may be logged: without its query string, and with a client token (route 5)
 * replaced by `*`. API keys never travel in paths; tokens do, and a log must not hold one.
 */
export function loggablePath(url: string): string {
  const path = url.split("?", 1)[0]!;
  return path.replace(TOKEN_PATH, "$1*");
}
