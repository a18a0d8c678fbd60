import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestNode } from "../test-support/node.js";
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
    expect(await page.text()).toContain('from "/console/client/index.js"');
    const entry = await fetch(`${on.url}/console/client/index.js`, { headers: { Origin: "https://app.example" } });
    expect([entry.status, entry.headers.get("content-type"), entry.headers.get("access-control-allow-origin")]).toEqual([
      200,
      "text/javascript; charset=utf-8",
      "*",
    ]);
    const text = await entry.text();
    expect(text).toContain("export { PlateClient, subscribePath }");
    // Every module the entry imports is served too.
    for (const [, file] of text.matchAll(/from "\.\/([\w-]+\.js)"/g)) {
      expect((await fetch(`${on.url}/console/client/${file}`)).status, file).toBe(200);
    }
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
