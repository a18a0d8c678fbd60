import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { adminCall } from "../test-support/admin.js";
import { call } from "../test-support/calls.js";
import type { Answer } from "../test-support/calls.js";
import { ADMIN_TOKEN, KEYS, publish, startTestNode } from "../test-support/node.js";
import type { TestNode } from "../test-support/node.js";
import { SseClient } from "../test-support/sse.js";
import { MAX_JSON_DEPTH } from "./json.js";

/** Arrays nested `depth` deep: `[[…]]`, 2 bytes a level (20,000 levels fit in 64 KiB). */
function nested(depth: number): string {
  return "[".repeat(depth) + "]".repeat(depth);
}

const AUTH = { Authorization: `Bearer ${KEYS.acme}`, "Content-Type": "application/json" };
const ADMIN = { Authorization: `Bearer ${ADMIN_TOKEN}`, "Content-Type": "application/json" };

function expectInvalidJson(res: Answer, what: string): void {
  expect([res.status, res.body?.error?.code], `${what}: ${res.text.slice(0, 200)}`).toEqual([400, "invalid_json"]);
}

describe("JSON bodies nested 20,000 deep", () => {
  let t: TestNode;
  beforeAll(async () => {
    t = await startTestNode();
  });
  afterAll(() => t.cleanup());

  it("refuses a publish of such a message with 400 invalid_json, and publishes the next one", async () => {
    const body = `{"message":${nested(20_000)}}`;
    for (const path of ["/acme/pubsub/deep/publish", "/acme/publish/deep"]) {
      expectInvalidJson(await call(t.url, "POST", path, { headers: AUTH, body }), path);
    }
    expect((await publish(t.url, "acme", "deep", [[["fine"]]])).status).toBe(200);
  });

  it(`accepts a body nested MAX_JSON_DEPTH (${MAX_JSON_DEPTH}) deep and delivers its message unchanged, and refuses one level more`, async () => {
    const sub = await SseClient.open(`${t.url}/acme/pubsub/deepest/subscribe`, { Authorization: AUTH.Authorization });
    try {
      await sub.waitFor("ready");
      // The body's own object is the first level.
      const deepest = nested(MAX_JSON_DEPTH - 1);
      const accepted = await call(t.url, "POST", "/acme/pubsub/deepest/publish", {
        headers: AUTH,
        body: `{"message":${deepest}}`,
      });
      expect(accepted.status, accepted.text).toBe(200);
      const [envelope] = await sub.waitForMessages(1);
      expect(JSON.stringify(envelope.message)).toBe(deepest);
      const refused = await call(t.url, "POST", "/acme/pubsub/deepest/publish", {
        headers: AUTH,
        body: `{"message":[${deepest}]}`,
      });
      expectInvalidJson(refused, "one level more");
      // Brackets inside strings are text, not nesting.
      const text = await call(t.url, "POST", "/acme/pubsub/deepest/publish", {
        headers: AUTH,
        body: JSON.stringify({ message: nested(20_000) }),
      });
      expect(text.status, text.text).toBe(200);
    } finally {
      sub.close();
    }
  });

  it("refuses such a body on POST client and on the admin routes with 400 invalid_json", async () => {
    const deep = nested(20_000);
    const calls: [string, string, Record<string, string>, string][] = [
      ["POST", "/acme/pubsub/deep/client", AUTH, `{"max_uses":${deep}}`],
      ["POST", "/admin/plates", ADMIN, `{"name":${deep}}`],
      ["PATCH", "/admin/plates/acme", ADMIN, `{"history":${deep}}`],
      ["POST", "/admin/plates/acme/keys", ADMIN, `{"channels":["a",${deep}]}`],
    ];
    const answers: string[] = [];
    for (const [method, path, headers, body] of calls) {
      const res = await call(t.url, method, path, { headers, body });
      answers.push(`${method} ${path}: ${res.status} ${res.body?.error?.code}`);
    }
    expect(answers).toEqual(calls.map(([method, path]) => `${method} ${path}: 400 invalid_json`));
    expect((await adminCall(t.url, "GET", "/admin/plates/acme")).status).toBe(200);
  });
});
