import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { call, mintPath } from "../test-support/calls.js";
import type { Answer } from "../test-support/calls.js";
import { KEYS, startTestNode } from "../test-support/node.js";
import type { TestNode } from "../test-support/node.js";
import { SseClient } from "../test-support/sse.js";

/** The browser routes a page calls: publish, subscribe (SSE), client token, token connect. */
const ROUTES = [
  ["publish", "POST", "/acme/pubsub/alerts/publish"],
  ["legacy publish", "POST", "/acme/publish/alerts"],
  ["subscribe", "GET", "/acme/pubsub/alerts/subscribe"],
  ["client token", "POST", "/acme/pubsub/alerts/client"],
  ["token connect", "GET", `/acme/s/${"A".repeat(32)}`],
] as const;

/** A browser's preflight for `method` with Authorization and Content-Type, from `origin`. */
function preflight(base: string, path: string, method: string, origin: string): Promise<Answer> {
  return call(base, "OPTIONS", path, {
    headers: {
      Origin: origin,
      "Access-Control-Request-Method": method,
      "Access-Control-Request-Headers": "authorization,content-type",
    },
  });
}

/** Splits a comma-separated header into lower-case items. */
function items(value: string | null): string[] {
  return (value ?? "").split(",").map((item) => item.trim().toLowerCase()).filter((item) => item !== "");
}

function expectPreflightAllowed(res: Answer, origin: string): void {
  expect(res.status).toBe(204);
  expect(res.headers.get("access-control-allow-origin")).toBe(origin);
  expect(items(res.headers.get("access-control-allow-methods"))).toEqual(expect.arrayContaining(["get", "post"]));
  expect(items(res.headers.get("access-control-allow-headers"))).toEqual(expect.arrayContaining(["authorization", "content-type"]));
}

describe("CORS with the default CORS_ORIGINS (*)", () => {
  let t: TestNode;
  beforeAll(async () => {
    t = await startTestNode();
  });
  afterAll(() => t.cleanup());

  it.each(ROUTES)("answers a preflight of the %s route with 204 and the allow headers", async (_name, method, path) => {
    const res = await preflight(t.url, path, method, "http://anywhere.test");
    const allowOrigin = res.headers.get("access-control-allow-origin");
    expect(res.status).toBe(204);
    expect(allowOrigin === "*" || allowOrigin === "http://anywhere.test").toBe(true);
    expect(items(res.headers.get("access-control-allow-methods"))).toEqual(expect.arrayContaining(["post"]));
    expect(items(res.headers.get("access-control-allow-headers"))).toEqual(expect.arrayContaining(["authorization", "content-type"]));
  });

  it("answers a preflight of a real minted token path", async () => {
    const { path } = await mintPath(t.url, "acme", "alerts");
    const res = await preflight(t.url, path, "GET", "http://anywhere.test");
    expect(res.status).toBe(204);
    expect(res.headers.get("access-control-allow-origin")).not.toBeNull();
  });

  it("lets a browser read a 401 error answer: it carries Allow-Origin", async () => {
    const res = await call(t.url, "POST", "/acme/pubsub/alerts/publish", {
      headers: { Origin: "http://anywhere.test", "Content-Type": "application/json" },
      body: '{"message":1}',
    });
    expect(res.status).toBe(401);
    expect(res.body.error.code).toBe("missing_api_key");
    expect(res.headers.get("access-control-allow-origin")).not.toBeNull();
  });

  it("exposes Retry-After to browsers on answers", async () => {
    const res = await call(t.url, "POST", "/acme/pubsub/alerts/publish", {
      headers: { Origin: "http://anywhere.test", Authorization: `Bearer ${KEYS.acme}`, "Content-Type": "application/json" },
      body: '{"message":1}',
    });
    expect(res.status).toBe(200);
    expect(items(res.headers.get("access-control-expose-headers"))).toContain("retry-after");
  });
});

describe("CORS with CORS_ORIGINS=http://a.test,http://b.test", () => {
  let t: TestNode;
  beforeAll(async () => {
    t = await startTestNode({ CORS_ORIGINS: "http://a.test,http://b.test", PUBLISH_RATE_PER_S: "1", PUBLISH_BURST: "1" });
  });
  afterAll(() => t.cleanup());

  it.each(ROUTES)("echoes an allowed origin on a preflight of the %s route", async (_name, method, path) => {
    expectPreflightAllowed(await preflight(t.url, path, method, "http://a.test"), "http://a.test");
    expectPreflightAllowed(await preflight(t.url, path, method, "http://b.test"), "http://b.test");
  });

  it("gives a foreign origin no Allow-Origin, on preflights and on answers", async () => {
    for (const [, method, path] of ROUTES) {
      const res = await preflight(t.url, path, method, "http://evil.test");
      expect(res.headers.get("access-control-allow-origin"), path).toBeNull();
    }
    const answer = await call(t.url, "GET", "/healthz", { headers: { Origin: "http://evil.test" } });
    expect(answer.headers.get("access-control-allow-origin")).toBeNull();
    // Not a prefix match either.
    const lookalike = await preflight(t.url, "/acme/pubsub/alerts/publish", "POST", "http://a.test.evil.test");
    expect(lookalike.headers.get("access-control-allow-origin")).toBeNull();
  });

  it("puts the allowed origin on error answers (401, 404 token), so a browser can read them", async () => {
    const unauthorized = await call(t.url, "POST", "/acme/pubsub/alerts/publish", {
      headers: { Origin: "http://a.test", Authorization: "Bearer wrong-key", "Content-Type": "application/json" },
      body: '{"message":1}',
    });
    expect(unauthorized.status).toBe(401);
    expect(unauthorized.body.error.code).toBe("invalid_api_key");
    expect(unauthorized.headers.get("access-control-allow-origin")).toBe("http://a.test");

    const unknownToken = await call(t.url, "GET", `/acme/s/${"A".repeat(32)}`, { headers: { Origin: "http://b.test" } });
    expect(unknownToken.status).toBe(404);
    expect(unknownToken.body.error.code).toBe("invalid_client_socket");
    expect(unknownToken.headers.get("access-control-allow-origin")).toBe("http://b.test");
  });

  it("puts the allowed origin on SSE streams, with a key and with a client token", async () => {
    const withKey = await SseClient.open(`${t.url}/acme/pubsub/alerts/subscribe`, {
      Origin: "http://a.test",
      Authorization: `Bearer ${KEYS.acme}`,
    });
    const { path } = await mintPath(t.url, "acme", "alerts");
    const withToken = await SseClient.open(`${t.url}${path}`, { Origin: "http://b.test" });
    try {
      expect(withKey.status).toBe(200);
      expect(withKey.headers["access-control-allow-origin"]).toBe("http://a.test");
      expect(withToken.status).toBe(200);
      expect(withToken.headers["access-control-allow-origin"]).toBe("http://b.test");
    } finally {
      withKey.close();
      withToken.close();
    }
  });

  it("lets a browser read Retry-After on a 429: the header is there and exposed", async () => {
    const headers = { Origin: "http://a.test", Authorization: `Bearer ${KEYS.globex}`, "Content-Type": "application/json" };
    let limited: Answer | undefined;
    for (let i = 0; i < 5 && limited === undefined; i += 1) {
      const res = await call(t.url, "POST", "/globex/pubsub/alerts/publish", { headers, body: '{"message":1}' });
      if (res.status === 429) limited = res;
    }
    expect(limited).toBeDefined();
    expect(limited!.body.error.code).toBe("rate_limited");
    expect(limited!.headers.get("retry-after")).toMatch(/^\d+$/);
    expect(limited!.headers.get("access-control-allow-origin")).toBe("http://a.test");
    expect(items(limited!.headers.get("access-control-expose-headers"))).toContain("retry-after");
  });
});
