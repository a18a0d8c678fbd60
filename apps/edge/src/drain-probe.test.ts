import { connect } from "node:net";
import type { Socket } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { eventually, startTestNode } from "./test-support/node.js";
import type { TestNode } from "./test-support/node.js";

describe("a drain that begins as a connection is accepted", () => {
  let t: TestNode | undefined;
  afterEach(async () => {
    await t?.cleanup();
    t = undefined;
  });

  it("reads what that connection already sent and answers it 503 shutting_down, not as an idle connection to cut", async () => {
    t = await startTestNode();
    const node = t.node;
    // The drain starts in the poll phase that accepts the probe: Node has not read the probe's
    // socket yet, though its request line is there (sent as soon as it connected), as when a
    // SIGTERM and a load balancer's probe arrive together.
    node.server.once("connection", () => void node.drain());
    const probe: Socket = connect(Number(new URL(t.url).port), "127.0.0.1");
    let answer = "";
    let ended = false;
    probe.setEncoding("utf8").on("data", (chunk: string) => (answer += chunk));
    probe.on("close", () => (ended = true));
    probe.on("error", () => undefined);
    probe.write("GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    await new Promise((resolve) => setTimeout(resolve, 100));
    probe.write("Connection: close\r\n\r\n");
    expect(await eventually(() => ended, 5000)).toBe(true);
    expect(answer).toMatch(/^HTTP\/1\.1 503 /);
    expect(answer).toContain('"code":"shutting_down"');
  });
});
