import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KEYS, publish, startTestNode } from "../test-support/node.js";
import type { TestNode } from "../test-support/node.js";
import { rawExchange } from "../test-support/raw-http.js";
import { SseClient } from "../test-support/sse.js";
import { WsClient } from "../test-support/ws.js";

/** The timeouts of the node under test: short, so that a stalled request is noticed quickly. */
const REQUEST_TIMEOUT_MS = 1000;
const HEADERS_TIMEOUT_MS = 500;
/**
 * What a close may take past its timeout: the node looks once a second (the fast lane's sweep, or
 * Node's check), plus a loaded test machine. A CI run beside the fuzz test once saw the test's own
 * timer fire first, 1500 ms past the timeout: these tests assert that a stalled request is
 * closed, not how fast.
 */
const SLACK_MS = 3000;

describe(`requests that stall (HTTP_REQUEST_TIMEOUT_MS=${REQUEST_TIMEOUT_MS}, HTTP_HEADERS_TIMEOUT_MS=${HEADERS_TIMEOUT_MS})`, () => {
  let t: TestNode;
  beforeAll(async () => {
    t = await startTestNode({
      HTTP_REQUEST_TIMEOUT_MS: String(REQUEST_TIMEOUT_MS),
      HTTP_HEADERS_TIMEOUT_MS: String(HEADERS_TIMEOUT_MS),
    });
  });
  afterAll(() => t.cleanup());

  it("closes a publish or POST client whose body never finishes within HTTP_REQUEST_TIMEOUT_MS, answering 408 if anything", async () => {
    const stalled = (path: string) =>
      rawExchange(
        t.url,
        `POST ${path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${KEYS.acme}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"message":`,
        REQUEST_TIMEOUT_MS + SLACK_MS,
      );
    const answers = await Promise.all([stalled("/acme/pubsub/stall/publish"), stalled("/acme/pubsub/stall/client")]);
    for (const answer of answers) {
      expect([0, 408]).toContain(answer.status);
      expect(answer.closedAfterMs).toBeGreaterThanOrEqual(REQUEST_TIMEOUT_MS - 100);
    }
    // The client's fault, not the node's: not counted (nor logged) as internal_error.
    const metrics = await (await fetch(`${t.url}/metrics`)).text();
    expect(metrics).not.toMatch(/plate_requests_rejected_total\{code="internal_error"\} [1-9]/);
  });

  it("closes a connection whose headers never finish within HTTP_HEADERS_TIMEOUT_MS", async () => {
    const answer = await rawExchange(t.url, "GET /healthz HTTP/1.1\r\nHost: x\r\n", HEADERS_TIMEOUT_MS + SLACK_MS);
    expect([0, 408]).toContain(answer.status);
  });

  it("keeps SSE streams and WebSockets open long past HTTP_REQUEST_TIMEOUT_MS, delivering to them", async () => {
    const auth = { Authorization: `Bearer ${KEYS.acme}` };
    const sse = await SseClient.open(`${t.url}/acme/pubsub/long/subscribe`, auth);
    const ws = await WsClient.connect(`${t.wsUrl}/acme/pubsub/long/ws`, { headers: auth });
    try {
      await Promise.all([sse.waitFor("ready"), ws.waitFor("ready")]);
      await new Promise((resolve) => setTimeout(resolve, 2 * REQUEST_TIMEOUT_MS + SLACK_MS));
      expect((await publish(t.url, "acme", "long", "still here")).status).toBe(200);
      const [[fromSse], [fromWs]] = await Promise.all([sse.waitForMessages(1), ws.waitForMessages(1)]);
      expect([fromSse.message, fromWs.message]).toEqual(["still here", "still here"]);
    } finally {
      sse.close();
      ws.close();
    }
  });
});
