import { PlateClientError } from "./errors.js";

/**
 * Signed client tokens (route 11 of the spec) as a realtime connection uses them: when to ask its
 * `tokenProvider` for the next one. The client reads the token's `exp` and `iat` claims without
 * verifying anything (it holds no secret; the service verifies every token it is given).
 */

/** A signed client token (a JWT) a backend minted for this client. */
export type ClientToken = string;

/** Asks the app's backend for a fresh signed client token. */
export type TokenProvider = () => Promise<ClientToken>;

/** The most time before a token expires at which the connection refreshes it: 30 s. */
export const TOKEN_REFRESH_MAX_MARGIN_MS = 30_000;

/**
 * The share of a token's lifetime kept as margin when that is less than
 * `TOKEN_REFRESH_MAX_MARGIN_MS`: a 60 s token is refreshed 15 s before it expires, a 3 s one
 * 0.75 s before. The lifetime runs from its `iat`, else from when the client got it.
 */
export const TOKEN_REFRESH_LIFETIME_SHARE = 0.25;

/**
 * The soonest a refresh follows the token it replaces. A provider that answers a token about to
 * expire (a cache, a clock ahead of the service's) then costs one refresh a second, not a loop;
 * the service's `token_expired` tells the connection to reconnect with a fresh one.
 */
export const TOKEN_REFRESH_MIN_DELAY_MS = 1_000;

/** Node's and browsers' longest timer (2^31 - 1 ms, about 24.8 days): a token that lives longer is refreshed sooner. */
const LONGEST_TIMER_MS = 2_147_483_647;

/** The token's claims the client reads: `exp` and `iat`, in seconds since the epoch (RFC 7519). */
export function tokenTimes(token: ClientToken): { expMs: number; iatMs: number | undefined } | undefined {
  const payload = token.split(".")[1];
  if (payload === undefined) return undefined;
  let claims: unknown;
  try {
    const base64 = payload.replace(/-/g, "+").replace(/_/g, "/");
    const binary = atob(base64 + "=".repeat((4 - (base64.length % 4)) % 4));
    claims = JSON.parse(new TextDecoder().decode(Uint8Array.from(binary, (c) => c.charCodeAt(0))));
  } catch {
    return undefined; // not a JWT the client can read: the service's token_expired will tell
  }
  if (typeof claims !== "object" || claims === null) return undefined;
  const { exp, iat } = claims as { exp?: unknown; iat?: unknown };
  if (typeof exp !== "number" || !Number.isFinite(exp)) return undefined;
  return { expMs: exp * 1000, iatMs: typeof iat === "number" && Number.isFinite(iat) ? iat * 1000 : undefined };
}

/**
 * How long after `nowMs` to refresh `token`, got at `gotAtMs`: its expiry less a margin of
 * `min(TOKEN_REFRESH_MAX_MARGIN_MS, TOKEN_REFRESH_LIFETIME_SHARE × lifetime)`, at least
 * `TOKEN_REFRESH_MIN_DELAY_MS` after `gotAtMs`, at most the longest timer. `undefined` for a token
 * with no readable `exp`.
 */
export function refreshDelayMs(token: ClientToken, gotAtMs: number, nowMs: number): number | undefined {
  const times = tokenTimes(token);
  if (times === undefined) return undefined;
  const lifetimeMs = Math.max(0, times.expMs - (times.iatMs ?? gotAtMs));
  const marginMs = Math.min(TOKEN_REFRESH_MAX_MARGIN_MS, lifetimeMs * TOKEN_REFRESH_LIFETIME_SHARE);
  const atMs = Math.max(times.expMs - marginMs, gotAtMs + TOKEN_REFRESH_MIN_DELAY_MS);
  return Math.min(Math.max(0, atMs - nowMs), LONGEST_TIMER_MS);
}

/**
 * Calls the provider: its token, or a retryable `token_unavailable` (with what it threw as the
 * cause) when it throws or answers anything but a non-empty string.
 */
export async function provideToken(provider: TokenProvider): Promise<ClientToken> {
  let token: unknown;
  try {
    token = await provider();
  } catch (err) {
    throw new PlateClientError("token_unavailable", `The tokenProvider failed: ${String(err)}`, { cause: err });
  }
  if (typeof token !== "string" || token === "") {
    throw new PlateClientError("token_unavailable", "The tokenProvider answered no token (a non-empty string).");
  }
  return token;
}
