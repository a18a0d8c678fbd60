import { randomBytes } from "node:crypto";
import { request } from "node:http";
import WebSocket from "ws";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { mintPath } from "../test-support/calls.js";
import { KEYS, eventually, startTestNode } from "../test-support/node.js";
import type { TestNode } from "../test-support/node.js";

const PER_ADDRESS = 3;
const TOTAL = 5;

/** What one upgrade request got: the handshake (101) or an HTTP answer. */
type Outcome =
  | { readonly upgraded: true }
  | { readonly upgraded: false; readonly status: number; readonly retryAfter: string | undefined; readonly body: any };

/**
 * Sends one WebSocket upgrade request from `localAddress` and answers what came back; an upgraded
 * socket is closed at once (it never authenticates, so it holds no place for long).
 */
function tryUpgrade(url: string, path: string, localAddress: string): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const req = request(`${url}${path}`, {
      localAddress,
      headers: {
        Connection: "Upgrade",
        Upgrade: "websocket",
        "Sec-WebSocket-Key": randomBytes(16).toString("base64"),
        "Sec-WebSocket-Version": "13",
      },
    });
    req.on("upgrade", (_res, socket) => {
      socket.destroy();
      resolve({ upgraded: true });
    });
    req.on("response", (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => (text += chunk));
      res.on("end", () => {
        const retryAfter = res.headers["retry-after"];
        resolve({ upgraded: false, status: res.statusCode ?? 0, retryAfter, body: JSON.parse(text) });
      });
    });
    req.on("error", reject);
    req.end();
  });
}

/**
 * A WebSocket that is open and has not authenticated yet (it sends nothing until told). Retried
 * while refused for a moment: the node hears of the closes of earlier sockets a little later.
 */
async function pending(url: string, path: string, localAddress: string): Promise<WebSocket> {
  const deadline = Date.now() + 2000;
  for (;;) {
    const ws = new WebSocket(`${url}${path}`, { localAddress });
    ws.on("error", () => undefined);
    const opened = await new Promise<boolean>((resolve) => {
      ws.once("open", () => resolve(true));
      ws.once("unexpected-response", () => resolve(false));
    });
    if (opened) return ws;
    ws.terminate();
    if (Date.now() > deadline) throw new Error(`${localAddress} was refused for 2 s`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Sends the auth frame and waits for the ready frame. */
async function authenticate(ws: WebSocket): Promise<void> {
  const ready = new Promise<void>((resolve) =>
    ws.on("message", (data: Buffer) => {
      if (JSON.parse(data.toString("utf8")).type === "ready") resolve();
    }),
  );
  ws.send(JSON.stringify({ auth: KEYS.acme }));
  await ready;
}

describe(`WebSockets not authenticated yet (MAX_PENDING_CONNECTIONS=${TOTAL}, MAX_PENDING_CONNECTIONS_PER_ADDRESS=${PER_ADDRESS})`, () => {
  let t: TestNode;
  const open: WebSocket[] = [];
  beforeAll(async () => {
    t = await startTestNode({
      MAX_PENDING_CONNECTIONS: String(TOTAL),
      MAX_PENDING_CONNECTIONS_PER_ADDRESS: String(PER_ADDRESS),
      WS_AUTH_TIMEOUT_MS: "10000",
    });
  });
  afterEach(() => {
    for (const ws of open.splice(0)) ws.terminate();
  });
  afterAll(() => t.cleanup());

  it("refuses an address's upgrade past its cap with HTTP 429 rate_limited and Retry-After, before the handshake; others still connect", async () => {
    for (let i = 0; i < PER_ADDRESS; i += 1) open.push(await pending(t.wsUrl, "/acme/pubsub/alerts/ws", "127.0.0.1"));
    const refused = await tryUpgrade(t.url, "/acme/pubsub/alerts/ws", "127.0.0.1");
    expect(refused).toEqual({
      upgraded: false,
      status: 429,
      retryAfter: expect.stringMatching(/^[1-9]\d*$/),
      body: { error: { code: "rate_limited", message: expect.any(String) } },
    });
    // The client-token route counts the same way.
    const { path } = await mintPath(t.url, "acme", "alerts");
    expect(await tryUpgrade(t.url, path, "127.0.0.1")).toMatchObject({ upgraded: false, status: 429 });
    // Another address has its own count.
    expect(await tryUpgrade(t.url, "/acme/pubsub/alerts/ws", "127.0.0.2")).toEqual({ upgraded: true });
  });

  it("accepts an address again once its pending WebSockets authenticate or close", async () => {
    for (let i = 0; i < PER_ADDRESS; i += 1) open.push(await pending(t.wsUrl, "/acme/pubsub/alerts/ws", "127.0.0.1"));
    expect(await tryUpgrade(t.url, "/acme/pubsub/alerts/ws", "127.0.0.1")).toMatchObject({ status: 429 });

    await authenticate(open[0]!);
    open.push(await pending(t.wsUrl, "/acme/pubsub/alerts/ws", "127.0.0.1"));
    expect(await tryUpgrade(t.url, "/acme/pubsub/alerts/ws", "127.0.0.1")).toMatchObject({ status: 429 });

    open[1]!.terminate();
    expect(
      await eventually(async () => (await tryUpgrade(t.url, "/acme/pubsub/alerts/ws", "127.0.0.1")).upgraded),
    ).toBe(true);
  });

  it("refuses any address's upgrade past the node's total cap, and accepts again once one authenticates", async () => {
    for (let i = 0; i < TOTAL; i += 1) open.push(await pending(t.wsUrl, "/acme/pubsub/alerts/ws", `127.0.0.${10 + i}`));
    expect(await tryUpgrade(t.url, "/acme/pubsub/alerts/ws", "127.0.0.20")).toMatchObject({
      upgraded: false,
      status: 429,
      body: { error: { code: "rate_limited" } },
    });
    // Authenticated connections are not pending: they do not count.
    await authenticate(open[0]!);
    expect(
      await eventually(async () => (await tryUpgrade(t.url, "/acme/pubsub/alerts/ws", "127.0.0.20")).upgraded),
    ).toBe(true);
  });
});
