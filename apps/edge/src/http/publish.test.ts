import { connect } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { comparePositions, parsePosition } from "@plate/protocol";
import { KEYS, publish, startTestNode } from "../test-support/node.js";
import type { TestNode } from "../test-support/node.js";
import { SseClient } from "../test-support/sse.js";
import { WsClient } from "../test-support/ws.js";

describe("publish (route 1 and its legacy alias 6)", () => {
  let t: TestNode;
  beforeAll(async () => {
    t = await startTestNode({ MAX_MESSAGE_BYTES: "65536" });
  });
  afterAll(() => t.cleanup());

  it("answers the id, channel and timestamp once the message is accepted, and a subscriber gets the envelope", async () => {
    const sub = await SseClient.open(`${t.url}/acme/pubsub/alerts/subscribe`, { Authorization: `Bearer ${KEYS.acme}` });
    await sub.waitFor("ready");
    const { status, body } = await publish(t.url, "acme", "alerts", { text: "hi", n: [1, 2] });
    expect(status).toBe(200);
    expect(body.data).toMatchObject({ channel: "alerts" });
    expect(typeof body.data.id).toBe("string");
    expect(new Date(body.data.timestamp).toISOString()).toBe(body.data.timestamp);
    const [envelope] = await sub.waitForMessages(1);
    expect(envelope).toEqual({
      type: "message",
      id: body.data.id,
      channel: "alerts",
      message: { text: "hi", n: [1, 2] },
      timestamp: body.data.timestamp,
    });
    sub.close();
  });

  it("carries a named event in the envelope to SSE and WebSocket subscribers, and in what a resume replays", async () => {
    const sse = await SseClient.open(`${t.url}/acme/pubsub/typing/subscribe`, { Authorization: `Bearer ${KEYS.acme}` });
    const ws = await WsClient.connect(`${t.wsUrl}/acme/pubsub/typing/ws`, { auth: KEYS.acme });
    await sse.waitFor("ready");
    await ws.waitFor("ready");
    try {
      const first = await publish(t.url, "acme", "typing", "no event");
      const res = await fetch(`${t.url}/acme/pubsub/typing/publish`, {
        method: "POST",
        headers: { Authorization: `Bearer ${KEYS.acme}`, "Content-Type": "application/json" },
        body: JSON.stringify({ message: { user: "ann" }, event: "typing.start" }),
      });
      expect(res.status).toBe(200);
      const id = ((await res.json()) as { data: { id: string } }).data.id;
      for (const got of [await sse.waitForMessages(2), await ws.waitForMessages(2)]) {
        expect(got[0]).not.toHaveProperty("event");
        expect(got[1]).toEqual({ type: "message", id, channel: "typing", event: "typing.start", message: { user: "ann" }, timestamp: got[1].timestamp });
      }
      const resumed = await SseClient.open(`${t.url}/acme/pubsub/typing/subscribe`, { Authorization: `Bearer ${KEYS.acme}`, "Last-Event-ID": first.body.data.id });
      try {
        expect((await resumed.waitForMessages(1))[0]).toMatchObject({ id, event: "typing.start" });
      } finally {
        resumed.close();
      }
    } finally {
      sse.close();
      ws.close();
    }
  });

  it("refuses an event that is not a name with 400 invalid_parameter, and publishes nothing", async () => {
    for (const event of ["", "no spaces", 7, null, "x".repeat(201)]) {
      const res = await fetch(`${t.url}/acme/pubsub/typing/publish`, {
        method: "POST",
        headers: { Authorization: `Bearer ${KEYS.acme}`, "Content-Type": "application/json" },
        body: JSON.stringify({ message: 1, event }),
      });
      expect(res.status).toBe(400);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe("invalid_parameter");
    }
  });

  it("accepts the key without the Bearer prefix, on the legacy path too", async () => {
    const res = await fetch(`${t.url}/acme/publish/alerts`, {
      method: "POST",
      headers: { Authorization: KEYS.acme, "Content-Type": "application/json" },
      body: '{"message": null}',
    });
    expect(res.status).toBe(200);
  });

  it("refuses a body over MAX_MESSAGE_BYTES with 413 payload_too_large", async () => {
    const res = await fetch(`${t.url}/acme/pubsub/alerts/publish`, {
      method: "POST",
      headers: { Authorization: KEYS.acme, "Content-Type": "application/json" },
      body: JSON.stringify({ message: "x".repeat(65536) }),
    });
    expect(res.status).toBe(413);
    expect(((await res.json()) as any).error.code).toBe("payload_too_large");
  });

  it("answers pipelined publishes on one connection in order, beside publishes on other connections, each once", async () => {
    // Answers are written together at the end of the event loop's turn (turn-answers.ts): every
    // request read in one turn is answered, on its own connection, in the order it was sent.
    const sub = await WsClient.connect(`${t.wsUrl}/acme/pubsub/piped/ws`, { auth: KEYS.acme });
    await sub.waitFor("ready");
    const PIPELINED = 30;
    const request = (n: number) => {
      const body = JSON.stringify({ message: { n } });
      return (
        `POST /acme/pubsub/piped/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${KEYS.acme}\r\n` +
        `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`
      );
    };
    const socket = connect(Number(new URL(t.url).port), "127.0.0.1");
    let raw = "";
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => (raw += chunk));
    const others = Promise.all(Array.from({ length: 10 }, (_, i) => publish(t.url, "acme", "piped", { other: i })));
    socket.write(Array.from({ length: PIPELINED }, (_, n) => request(n)).join(""));
    const answered = await others;
    await expect.poll(() => raw.split("HTTP/1.1 ").length - 1, { timeout: 5000 }).toBe(PIPELINED);
    socket.destroy();
    expect(answered.map((a) => a.status)).toEqual(answered.map(() => 200));
    const answers = raw.split("HTTP/1.1 ").slice(1);
    expect(answers.every((a) => a.startsWith("200 "))).toBe(true);
    const ids = answers.map((a) => (JSON.parse(a.slice(a.indexOf("\r\n\r\n") + 4)) as { data: { id: string } }).data.id);
    // In the order sent: each id after the one before.
    for (let i = 1; i < ids.length; i++) expect(comparePositions(parsePosition(ids[i - 1]!)!, parsePosition(ids[i]!)!)).toBeLessThan(0);
    // The subscriber got each publish once: the pipelined ones in the order sent.
    const got = await sub.waitForMessages(PIPELINED + 10);
    expect(got.length).toBe(PIPELINED + 10);
    expect(got.map((m) => (m.message as { n?: number }).n).filter((n) => n !== undefined)).toEqual(Array.from({ length: PIPELINED }, (_, n) => n));
    expect(new Set(got.map((m) => m.id)).size).toBe(PIPELINED + 10);
    sub.close();
  });
});
