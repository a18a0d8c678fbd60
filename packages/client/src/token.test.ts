import { describe, expect, it } from "vitest";
import { PlateClientError } from "./errors.js";
import {
  TOKEN_REFRESH_MAX_MARGIN_MS,
  TOKEN_REFRESH_MIN_DELAY_MS,
  provideToken,
  refreshDelayMs,
  tokenTimes,
} from "./token.js";

/** A JWT-shaped token with these claims (the client reads them without verifying the signature). */
function jwt(claims: Record<string, unknown>): string {
  const part = (value: unknown) =>
    btoa(String.fromCharCode(...new TextEncoder().encode(JSON.stringify(value))))
      .replace(/\+/g, "-")
      .replace(/\//g, "_")
      .replace(/=+$/, "");
  return `${part({ alg: "HS256", kid: "sk_1" })}.${part(claims)}.c2lnbmF0dXJl`;
}

const NOW_MS = 1_800_000_000_000;
const NOW_S = NOW_MS / 1000;

describe("when a signed token is refreshed", () => {
  it("reads exp and iat from the token's payload (base64url, any padding, UTF-8 claims)", () => {
    expect(tokenTimes(jwt({ sub: "ann", exp: NOW_S + 60 }))).toEqual({ expMs: NOW_MS + 60_000, iatMs: undefined });
    expect(tokenTimes(jwt({ sub: "zoë ü?>", exp: 5, iat: 2 }))).toEqual({ expMs: 5_000, iatMs: 2_000 });
    for (const sub of ["a", "ab", "abc", "abcd"]) expect(tokenTimes(jwt({ sub, exp: 7 }))?.expMs).toBe(7_000);
  });

  it("reads nothing from a token with no exp or that is not a JWT", () => {
    for (const token of [jwt({ sub: "ann" }), jwt({ exp: "soon" }), "opaque", "a.%%%.c", "a.bnVsbA.c", ""]) {
      expect([token, tokenTimes(token)]).toEqual([token, undefined]);
      expect(refreshDelayMs(token, NOW_MS, NOW_MS)).toBeUndefined();
    }
  });

  it.each([
    // [lifetime from when it was got, iat, refresh after]: the margin is a quarter of the lifetime, at most 30 s
    { what: "a 15 min token, 30 s before it expires", expS: NOW_S + 900, iatS: undefined, afterMs: 870_000 },
    { what: "a 60 s token, 15 s before", expS: NOW_S + 60, iatS: undefined, afterMs: 45_000 },
    { what: "a 3 s token, 0.75 s before", expS: NOW_S + 3, iatS: undefined, afterMs: 2_250 },
    { what: "a 60 s token issued 20 s ago, by its iat", expS: NOW_S + 40, iatS: NOW_S - 20, afterMs: 25_000 },
    {
      what: "a token about to expire, no sooner than the floor",
      expS: NOW_S + 1,
      iatS: NOW_S - 100,
      afterMs: TOKEN_REFRESH_MIN_DELAY_MS,
    },
    {
      what: "an expired token, no sooner than the floor",
      expS: NOW_S - 5,
      iatS: undefined,
      afterMs: TOKEN_REFRESH_MIN_DELAY_MS,
    },
  ])("refreshes $what", ({ expS, iatS, afterMs }) => {
    const token = jwt(iatS === undefined ? { exp: expS } : { exp: expS, iat: iatS });
    expect(refreshDelayMs(token, NOW_MS, NOW_MS)).toBe(afterMs);
  });

  it("counts from now for a token got earlier, and never waits past the longest timer", () => {
    const token = jwt({ exp: NOW_S + 60 });
    expect(refreshDelayMs(token, NOW_MS, NOW_MS + 40_000)).toBe(5_000);
    expect(refreshDelayMs(token, NOW_MS, NOW_MS + 50_000)).toBe(0);
    const year = jwt({ exp: NOW_S + 365 * 24 * 3600 });
    expect(refreshDelayMs(year, NOW_MS, NOW_MS)).toBe(2_147_483_647);
    expect(TOKEN_REFRESH_MAX_MARGIN_MS).toBe(30_000);
  });

  it("turns a provider that throws or answers no token into a retryable token_unavailable", async () => {
    const cause = new Error("backend down");
    const failures = await Promise.all(
      [
        () => Promise.reject(cause),
        () => Promise.resolve(""),
        () => Promise.resolve(undefined as unknown as string),
      ].map((p) => provideToken(p).catch((err: unknown) => err)),
    );
    for (const failure of failures) {
      expect(failure).toBeInstanceOf(PlateClientError);
      expect([(failure as PlateClientError).code, (failure as PlateClientError).retryable]).toEqual([
        "token_unavailable",
        true,
      ]);
    }
    expect((failures[0] as PlateClientError).cause).toBe(cause);
    expect(await provideToken(() => Promise.resolve("a.b.c"))).toBe("a.b.c");
  });
});
