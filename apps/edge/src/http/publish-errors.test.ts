import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { call, createKey } from "../test-support/calls.js";
import type { Answer } from "../test-support/calls.js";
import { KEYS, publish, startTestNode } from "../test-support/node.js";
import type { TestNode } from "../test-support/node.js";
import { SseClient } from "../test-support/sse.js";
import { WsClient } from "../test-support/ws.js";

/** The publish limit of the node under test, small so that oversized bodies are cheap. */
const MAX_MESSAGE_BYTES = 1024;

/** Route 1 and its legacy alias 6, for a plate and channel as they appear in the path. */
const ROUTES = {
  "route 1": (plate: string, channel: string) => `/${plate}/pubsub/${channel}/publish`,
  "legacy route 6": (plate: string, channel: string) => `/${plate}/publish/${channel}`,
} as const;

const JSON_TYPE = { "Content-Type": "application/json" };

/** Checks the spec's error body: exactly `{"error":{"code","message"}}`, with `code` and a non-empty message. */
function expectError(res: Answer, status: number, code: string): void {
  expect(res.status, res.text).toBe(status);
  expect(Object.keys(res.body)).toEqual(["error"]);
  expect(Object.keys(res.body.error).sort()).toEqual(["code", "message"]);
  expect(res.body.error.code).toBe(code);
  expect(typeof res.body.error.message).toBe("string");
  expect(res.body.error.message.length).toBeGreaterThan(0);
}

describe("publish errors (route 1 and legacy route 6)", () => {
  let t: TestNode;
  beforeAll(async () => {
    t = await startTestNode({ MAX_MESSAGE_BYTES: String(MAX_MESSAGE_BYTES) });
  });
  afterAll(() => t.cleanup());

  /** POSTs `body` to `path` with the acme key (or `headers` as given). */
  const post = (path: string, body: string, headers: Record<string, string> = { Authorization: `Bearer ${KEYS.acme}`, ...JSON_TYPE }) =>
    call(t.url, "POST", path, { headers, body });

  describe.each(Object.entries(ROUTES))("on %s", (_name, route) => {
    it("refuses a malformed JSON body with 400 invalid_json", async () => {
      for (const body of ['{"message":', "{message: 1}", "not json", ""]) {
        expectError(await post(route("acme", "alerts"), body), 400, "invalid_json");
      }
    });

    it("refuses a body without a message member with 400 missing_message", async () => {
      for (const body of ["{}", '{"msg":1}', "[]", '"x"', "null", "42"]) {
        expectError(await post(route("acme", "alerts"), body), 400, "missing_message");
      }
    });

    it("refuses a channel name outside the allowed characters or length with 400 invalid_channel", async () => {
      for (const channel of ["a%20b", "%5B", "*", "a%3Fb", "x".repeat(201)]) {
        expectError(await post(route("acme", channel), '{"message":1}'), 400, "invalid_channel");
      }
    });

    it("refuses a plate id outside the allowed characters or length with 400 invalid_plate", async () => {
      for (const plate of ["p".repeat(65), "a.b"]) {
        expectError(await post(route(plate, "alerts"), '{"message":1}'), 400, "invalid_plate");
      }
    });

    it("refuses a request without an API key with 401 missing_api_key", async () => {
      expectError(await post(route("acme", "alerts"), '{"message":1}', JSON_TYPE), 401, "missing_api_key");
      expectError(await post(route("acme", "alerts"), '{"message":1}', { Authorization: "", ...JSON_TYPE }), 401, "missing_api_key");
    });

    it("refuses a wrong key with 401 invalid_api_key", async () => {
      const res = await post(route("acme", "alerts"), '{"message":1}', { Authorization: `Bearer ${KEYS.acme}x`, ...JSON_TYPE });
      expectError(res, 401, "invalid_api_key");
    });
  });

  it('refuses "Authorization: Bearer " with no key after it with 401 missing_api_key', async () => {
    for (const header of ["Bearer ", "Bearer", "bearer   "]) {
      const res = await post(ROUTES["route 1"]("acme", "alerts"), '{"message":1}', { Authorization: header, ...JSON_TYPE });
      expectError(res, 401, "missing_api_key");
    }
  });

  it("refuses the key of another plate with 401 invalid_api_key", async () => {
    const res = await post("/acme/pubsub/alerts/publish", '{"message":1}', { Authorization: `Bearer ${KEYS.globex}`, ...JSON_TYPE });
    expectError(res, 401, "invalid_api_key");
  });

  it("answers a plate that does not exist exactly as a wrong key on a real plate (no tenant enumeration)", async () => {
    const wrongKey = await post("/acme/pubsub/alerts/publish", '{"message":1}', { Authorization: "Bearer not-a-key-of-anyone", ...JSON_TYPE });
    expectError(wrongKey, 401, "invalid_api_key");
    for (const key of [KEYS.acme, "not-a-key-of-anyone"]) {
      for (const plate of ["nosuchplate", "n".repeat(64)]) {
        const res = await post(`/${plate}/pubsub/alerts/publish`, '{"message":1}', { Authorization: `Bearer ${key}`, ...JSON_TYPE });
        expectError(res, 401, "invalid_api_key");
        expect(res.body).toEqual(wrongKey.body);
      }
    }
  });

  it("refuses a key without the publish scope with 403 forbidden", async () => {
    const key = await createKey(t.url, "acme", { scopes: ["subscribe", "client"] });
    const headers = { Authorization: `Bearer ${key.secret}`, ...JSON_TYPE };
    expectError(await post("/acme/pubsub/alerts/publish", '{"message":1}', headers), 403, "forbidden");
    expectError(await post("/acme/publish/alerts", '{"message":1}', headers), 403, "forbidden");
  });

  it("refuses a key limited to user:* on another channel with 403 forbidden, and accepts it on user:1", async () => {
    const key = await createKey(t.url, "acme", { scopes: ["publish"], channels: ["user:*"] });
    const headers = { Authorization: `Bearer ${key.secret}`, ...JSON_TYPE };
    expectError(await post("/acme/pubsub/other/publish", '{"message":1}', headers), 403, "forbidden");
    expectError(await post("/acme/pubsub/users:1/publish", '{"message":1}', headers), 403, "forbidden");
    const ok = await post("/acme/pubsub/user:1/publish", '{"message":1}', headers);
    expect(ok.status, ok.text).toBe(200);
    expect(ok.body.data.channel).toBe("user:1");
  });

  it("accepts a body of exactly MAX_MESSAGE_BYTES and refuses one byte more with 413 payload_too_large", async () => {
    const frame = '{"message":""}';
    const exact = `{"message":"${"x".repeat(MAX_MESSAGE_BYTES - frame.length)}"}`;
    expect(Buffer.byteLength(exact)).toBe(MAX_MESSAGE_BYTES);
    expect((await post("/acme/pubsub/alerts/publish", exact)).status).toBe(200);
    const over = `{"message":"${"x".repeat(MAX_MESSAGE_BYTES - frame.length + 1)}"}`;
    expectError(await post("/acme/pubsub/alerts/publish", over), 413, "payload_too_large");
    expectError(await post("/acme/publish/alerts", over), 413, "payload_too_large");
  });

  it("refuses an oversized body sent chunked without Content-Length with 413 payload_too_large", async () => {
    const encoder = new TextEncoder();
    const parts = ['{"message":"', ..."abcd".split("").map((c) => c.repeat(400)), '"}'];
    const stream = new ReadableStream<Uint8Array>({
      pull(controller) {
        const part = parts.shift();
        if (part === undefined) controller.close();
        else controller.enqueue(encoder.encode(part));
      },
    });
    const res = await call(t.url, "POST", "/acme/pubsub/alerts/publish", {
      headers: { Authorization: `Bearer ${KEYS.acme}`, ...JSON_TYPE },
      body: stream,
    });
    expectError(res, 413, "payload_too_large");
  });

  it("accepts a small body sent chunked without Content-Length", async () => {
    const encoder = new TextEncoder();
    const parts = ['{"mess', 'age":', '"chunked"}'];
    const stream = new ReadableStream<Uint8Array>({
      pull(controller) {
        const part = parts.shift();
        if (part === undefined) controller.close();
        else controller.enqueue(encoder.encode(part));
      },
    });
    const res = await call(t.url, "POST", "/acme/pubsub/alerts/publish", {
      headers: { Authorization: `Bearer ${KEYS.acme}`, ...JSON_TYPE },
      body: stream,
    });
    expect(res.status, res.text).toBe(200);
  });

  it("refuses a body that is not declared application/json with 415 unsupported_media_type", async () => {
    const auth = { Authorization: `Bearer ${KEYS.acme}` };
    expectError(await post("/acme/pubsub/alerts/publish", '{"message":1}', { ...auth, "Content-Type": "text/plain" }), 415, "unsupported_media_type");
    expectError(await post("/acme/publish/alerts", '{"message":1}', { ...auth, "Content-Type": "text/plain" }), 415, "unsupported_media_type");
    // Bytes, so fetch adds no Content-Type of its own.
    const untyped = await call(t.url, "POST", "/acme/pubsub/alerts/publish", {
      headers: auth,
      body: new TextEncoder().encode('{"message":1}'),
    });
    expectError(untyped, 415, "unsupported_media_type");
  });

  it("accepts application/json with a charset parameter", async () => {
    const res = await post("/acme/pubsub/alerts/publish", '{"message":1}', {
      Authorization: `Bearer ${KEYS.acme}`,
      "Content-Type": "application/json; charset=utf-8",
    });
    expect(res.status, res.text).toBe(200);
  });

  it("accepts the longest channel name (200 characters)", async () => {
    const res = await post(`/acme/pubsub/${"c".repeat(200)}/publish`, '{"message":1}');
    expect(res.status, res.text).toBe(200);
  });

  it("answers unknown routes with 404 not_found in the error shape", async () => {
    expectError(await call(t.url, "GET", "/acme/pubsub/alerts/nope"), 404, "not_found");
    expectError(await call(t.url, "POST", "/acme/pubsub/alerts/publish/extra", { headers: JSON_TYPE, body: "{}" }), 404, "not_found");
    expectError(await call(t.url, "GET", "/"), 404, "not_found");
  });
});

describe("a published message reaches subscribers as the same JSON value", () => {
  let t: TestNode;
  beforeAll(async () => {
    t = await startTestNode();
  });
  afterAll(() => t.cleanup());

  it('accepts {"message": null} and delivers null', async () => {
    const sub = await SseClient.open(`${t.url}/acme/pubsub/nulls/subscribe`, { Authorization: `Bearer ${KEYS.acme}` });
    try {
      await sub.waitFor("ready");
      const res = await call(t.url, "POST", "/acme/pubsub/nulls/publish", {
        headers: { Authorization: `Bearer ${KEYS.acme}`, ...JSON_TYPE },
        body: '{"message":null}',
      });
      expect(res.status, res.text).toBe(200);
      const [envelope] = await sub.waitForMessages(1);
      expect(envelope).toBeDefined();
      expect(Object.hasOwn(envelope, "message")).toBe(true);
      expect(envelope.message).toBeNull();
    } finally {
      sub.close();
    }
  });

  it("delivers strings with unicode and quotes, numbers, booleans, arrays and nested objects unchanged, over SSE and WebSocket", async () => {
    const values: unknown[] = [
      'he said "hi" \\ \'there\' \n\t\u0000 — ünïcødé 日本語 🎉',
      "",
      0,
      -1.5,
      123456789012,
      1e21,
      true,
      false,
      [],
      [1, "two", [3, { four: 4 }], null],
      {},
      { nested: { deeper: { list: [true, false], text: "ok", n: 3.25 } }, "key with spaces": "v", "": "empty key" },
    ];
    const sse = await SseClient.open(`${t.url}/acme/pubsub/values/subscribe`, { Authorization: `Bearer ${KEYS.acme}` });
    const ws = await WsClient.connect(`${t.wsUrl}/acme/pubsub/values/ws`, { headers: { Authorization: `Bearer ${KEYS.acme}` } });
    try {
      await Promise.all([sse.waitFor("ready"), ws.waitFor("ready")]);
      for (const value of values) {
        const res = await publish(t.url, "acme", "values", value);
        expect(res.status).toBe(200);
      }
      const [fromSse, fromWs] = await Promise.all([sse.waitForMessages(values.length), ws.waitForMessages(values.length)]);
      expect(fromSse.map((e) => e.message)).toEqual(values);
      expect(fromWs.map((e) => e.message)).toEqual(values);
      for (const envelope of [...fromSse, ...fromWs]) expect(envelope.channel).toBe("values");
    } finally {
      sse.close();
      ws.close();
    }
  });
});
