import { createHash } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KEYS, startTestNode } from "../test-support/node.js";
import type { TestNode } from "../test-support/node.js";

describe("the console", () => {
  let on: TestNode;
  let off: TestNode;
  beforeAll(async () => {
    on = await startTestNode();
    off = await startTestNode({ CONSOLE_ENABLED: "false" });
  });
  afterAll(async () => {
    await on.cleanup();
    await off.cleanup();
  });

  it("serves the page, and the client's modules to pages of any origin", async () => {
    const page = await fetch(`${on.url}/console`);
    expect([page.status, page.headers.get("content-type")]).toEqual([200, "text/html; charset=UTF-8"]);
    expect(await page.text()).toContain('import { PlateClient, PlateClientError, realtimePath } from "/console/client/index.js"');
    const entry = await fetch(`${on.url}/console/client/index.js`, { headers: { Origin: "https://app.example" } });
    expect([entry.status, entry.headers.get("content-type"), entry.headers.get("access-control-allow-origin")]).toEqual([
      200,
      "text/javascript; charset=utf-8",
      "*",
    ]);
    const text = await entry.text();
    expect(text).toContain("export { PlateClient, subscribePath }");
    expect(text).toMatch(/export \{[^}]*\brealtimePath\b[^}]*\} from "\.\/client\.js"/);
    // Every module the entry imports is served too.
    for (const [, file] of text.matchAll(/from "\.\/([\w-]+\.js)"/g)) {
      expect((await fetch(`${on.url}/console/client/${file}`)).status, file).toBe(200);
    }
  });

  it("serves the page with a Content-Security-Policy that runs only its own scripts and styles, connects to any node and forbids framing", async () => {
    const page = await fetch(`${on.url}/console`);
    const html = await page.text();
    const policy = directives(page.headers.get("content-security-policy"));
    expect(policy.get("default-src")).toEqual(["'none'"]);
    expect(policy.get("frame-ancestors")).toEqual(["'none'"]);
    expect(policy.get("base-uri")).toEqual(["'none'"]);
    expect(policy.get("form-action")).toEqual(["'none'"]);
    // The node the user types in may be another origin, over HTTP(S) or WebSocket.
    expect(policy.get("connect-src")).toEqual(expect.arrayContaining(["'self'", "http:", "https:", "ws:", "wss:"]));
    // Scripts: the client's modules from this origin, and the page's own inline module by its hash;
    // never an inline script the page does not hold (no 'unsafe-inline').
    const scripts = [...html.matchAll(/<script[^>]*>([\s\S]*?)<\/script>/g)].map((m) => m[1]!);
    const styles = [...html.matchAll(/<style[^>]*>([\s\S]*?)<\/style>/g)].map((m) => m[1]!);
    expect(scripts.length).toBeGreaterThan(0);
    expect(policy.get("script-src")?.sort()).toEqual(["'self'", ...scripts.map(hashSource)].sort());
    expect(policy.get("style-src")?.sort()).toEqual(styles.map(hashSource).sort());
    expect([page.headers.get("x-frame-options"), page.headers.get("x-content-type-options")]).toEqual(["DENY", "nosniff"]);
  });

  it("serves the client's modules with nosniff and no framing", async () => {
    const entry = await fetch(`${on.url}/console/client/index.js`);
    expect([entry.status, entry.headers.get("x-content-type-options"), entry.headers.get("x-frame-options")]).toEqual([200, "nosniff", "DENY"]);
    expect(directives(entry.headers.get("content-security-policy")).get("frame-ancestors")).toEqual(["'none'"]);
  });

  it("answers 404 not_found for a file the client does not have, and for everything when CONSOLE_ENABLED=false", async () => {
    const missing = await fetch(`${on.url}/console/client/index.d.ts`);
    expect([missing.status, ((await missing.json()) as any).error.code]).toEqual([404, "not_found"]);
    for (const path of ["/console", "/console/client/index.js"]) {
      const res = await fetch(`${off.url}${path}`);
      expect([res.status, ((await res.json()) as any).error.code], path).toEqual([404, "not_found"]);
    }
  });
});

describe("API answers", () => {
  let t: TestNode;
  beforeAll(async () => {
    t = await startTestNode();
  });
  afterAll(() => t.cleanup());

  it("carry X-Content-Type-Options: nosniff, on success and on error, on publish and on Hono's routes", async () => {
    const answers = await Promise.all([
      fetch(`${t.url}/healthz`),
      fetch(`${t.url}/no/such/route/here`),
      fetch(`${t.url}/acme/pubsub/a/publish`, { method: "POST", headers: { Authorization: `Bearer ${KEYS.acme}`, "Content-Type": "application/json" }, body: '{"message":1}' }),
      fetch(`${t.url}/acme/pubsub/a/publish`, { method: "POST", body: '{"message":1}' }),
    ]);
    expect(answers.map((res) => [res.status, res.headers.get("x-content-type-options")])).toEqual([
      [200, "nosniff"],
      [404, "nosniff"],
      [200, "nosniff"],
      [401, "nosniff"],
    ]);
  });
});

/** A Content-Security-Policy header as directive name → its sources. */
function directives(header: string | null): Map<string, string[]> {
  const policy = new Map<string, string[]>();
  for (const part of (header ?? "").split(";")) {
    const [name, ...sources] = part.trim().split(/\s+/);
    if (name) policy.set(name, sources);
  }
  return policy;
}

/** The CSP source that allows one inline element: the base64 SHA-256 of its text, as a browser computes it. */
function hashSource(text: string): string {
  return `'sha256-${createHash("sha256").update(text, "utf8").digest("base64")}'`;
}
