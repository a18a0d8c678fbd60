import { describe, expect, it, onTestFinished } from "vitest";
import { startTestNode } from "./test-support/node.js";
import { rawExchange } from "./test-support/raw-http.js";

describe("a drain that begins as a connection is accepted", () => {
  it("reads what that connection already sent and answers it 503 shutting_down, not as an idle connection to cut", async () => {
    const t = await startTestNode();
    onTestFinished(() => t.cleanup());
    // The drain starts in the poll phase that accepts the probe: Node has not read the probe's
    // socket yet, though its request is there (sent as soon as it connected), as when a SIGTERM
    // and a load balancer's probe arrive together.
    t.node.server.once("connection", () => void t.node.drain());
    const answer = await rawExchange(t.url, "GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    expect(answer.text).toMatch(/^HTTP\/1\.1 503 /);
    expect(answer.body).toContain('"code":"shutting_down"');
  });
});
