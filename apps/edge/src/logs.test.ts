import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "@plate/testing";
import { adminCall } from "./test-support/admin.js";
import { mintToken } from "./test-support/calls.js";
import { ADMIN_TOKEN, eventually } from "./test-support/node.js";
import { EdgeProcess } from "./test-support/process.js";
import { SseClient } from "./test-support/sse.js";
import { WsClient } from "./test-support/ws.js";

/**
 * The log as an operator reads it: `node dist/main.js` at LOG_LEVEL=debug (every line it can
 * write), through every way a secret reaches a node. No API key, client token or admin token may
 * appear in it; every line is one JSON object; request lines carry the request's id.
 */
const SECRET = "logs-secret-0123456789abcdefghijkl";
const WRONG_SECRET = "wrong-secret-0123456789abcdefghij";

describe("the node's log", () => {
  let dataDir: string;
  let proc: EdgeProcess;
  const secrets: string[] = [SECRET, WRONG_SECRET, ADMIN_TOKEN];

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), "plate-logs-"));
    proc = new EdgeProcess(await freePort(), {
      DATA_DIR: dataDir,
      DEMO_PLATE: "false",
      ADMIN_TOKEN,
      LOG_LEVEL: "debug",
      BOOTSTRAP_PLATES: JSON.stringify({ logs: SECRET }),
    });
    await proc.ready();
  });
  afterAll(async () => {
    proc.kill();
    await rm(dataDir, { recursive: true, force: true });
  });

  it("holds no key, token or admin token, whatever the requests carried", async () => {
    const auth = { Authorization: `Bearer ${SECRET}` };
    const publish = (key: string, requestId?: string) =>
      fetch(`${proc.url}/logs/pubsub/room/publish`, {
        method: "POST",
        headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json", ...(requestId ? { "X-Request-Id": requestId } : {}) },
        body: JSON.stringify({ message: "hi" }),
      });
    expect((await publish(SECRET)).status).toBe(200);
    expect((await publish(WRONG_SECRET)).status).toBe(401);
    const sse = await SseClient.open(`${proc.url}/logs/pubsub/room/subscribe`, auth);
    await sse.waitFor("ready");
    sse.close();
    const ws = await WsClient.connect(`${proc.url.replace("http", "ws")}/logs/pubsub/room/ws`, { auth: SECRET });
    await ws.waitFor("ready");
    ws.close();
    const refused = await WsClient.connect(`${proc.url.replace("http", "ws")}/logs/pubsub/room/ws`, { auth: WRONG_SECRET });
    expect(await refused.waitForClose()).toBe(4401);
    for (const transport of ["sse", "ws"]) {
      const minted = await mintToken(proc.url, "logs", "room", { max_uses: "1" }, SECRET);
      const token: string = minted.body.data.token;
      secrets.push(token);
      if (transport === "sse") {
        const client = await SseClient.open(`${proc.url}${minted.body.data.path}`);
        await client.waitFor("ready");
        client.close();
        // A second use is refused, and logged.
        expect((await SseClient.open(`${proc.url}${minted.body.data.path}`)).status).toBe(410);
      } else {
        const client = await WsClient.connect(`${proc.url.replace("http", "ws")}${minted.body.data.path}`);
        await client.waitFor("ready");
        client.close();
      }
    }
    const created = await adminCall(proc.url, "POST", "/admin/plates/logs/keys", { body: { name: "second" } });
    expect(created.status).toBe(201);
    secrets.push(created.body.data.secret);
    await adminCall(proc.url, "DELETE", `/admin/plates/logs/keys/${created.body.data.id}`);
    expect((await adminCall(proc.url, "GET", "/admin/plates", { token: WRONG_SECRET })).status).toBe(401);

    // Everything above is in the log once the closes have been noticed.
    expect(await eventually(() => proc.stdout.includes("connection ended") && proc.stdout.includes("websocket refused"), 3000)).toBe(true);
    const log = proc.stdout + proc.stderr;
    for (const secret of secrets) expect(log, `a secret in the log: ${secret.slice(0, 6)}…`).not.toContain(secret);
    expect(log).toContain("/logs/s/*");
  });

  it("holds no client token whose path was percent-encoded (/logs/%73/<token>), over SSE and WebSocket", async () => {
    const tokens: string[] = [];
    for (const transport of ["sse", "ws"]) {
      const minted = await mintToken(proc.url, "logs", "room", { max_uses: "1" }, SECRET);
      tokens.push(minted.body.data.token);
      const path = (minted.body.data.path as string).replace("/s/", "/%73/");
      // The first use connects; the second is refused, and the refusal is logged with the path.
      if (transport === "sse") {
        const client = await SseClient.open(`${proc.url}${path}`);
        await client.waitFor("ready");
        client.close();
        expect((await SseClient.open(`${proc.url}${path}`)).status).toBe(410);
      } else {
        const client = await WsClient.connect(`${proc.url.replace("http", "ws")}${path}`);
        await client.waitFor("ready");
        client.close();
        const refused = await WsClient.connect(`${proc.url.replace("http", "ws")}${path}`);
        expect(await refused.waitForClose()).toBe(4429);
      }
    }
    expect(await eventually(() => proc.stdout.includes("exhausted_client_socket"), 3000)).toBe(true);
    const log = proc.stdout + proc.stderr;
    for (const token of tokens) expect(log, `a token in the log: ${token.slice(0, 6)}…`).not.toContain(token);
    expect(log).toContain("/logs/%73/*");
  });

  it("writes one JSON object a line, with the request's id on the lines about a request", async () => {
    const res = await fetch(`${proc.url}/logs/pubsub/room/publish`, {
      method: "POST",
      headers: { Authorization: `Bearer ${SECRET}`, "Content-Type": "application/json", "X-Request-Id": "lb-abc-123" },
      body: JSON.stringify({ message: 1 }),
    });
    expect(res.headers.get("x-request-id")).toBe("lb-abc-123");
    const own = await fetch(`${proc.url}/healthz`);
    expect(own.headers.get("x-request-id")).toMatch(/^[A-Za-z0-9_-]{16}$/);
    // Each request the node names gets an id of its own.
    const ids = await Promise.all(Array.from({ length: 20 }, () => fetch(`${proc.url}/healthz`).then((r) => r.headers.get("x-request-id"))));
    expect(new Set([own.headers.get("x-request-id"), ...ids]).size).toBe(21);
    expect(await eventually(() => proc.stdout.includes("lb-abc-123"), 2000)).toBe(true);
    const lines = proc.stdout.trim().split("\n").map((line) => JSON.parse(line) as Record<string, unknown>);
    for (const line of lines) expect(line).toMatchObject({ time: expect.any(String), level: expect.any(String), msg: expect.any(String) });
    const aboutRequests = lines.filter((l) => ["request", "publish", "publish refused", "websocket refused", "connection ended"].includes(l.msg as string));
    expect(aboutRequests.length).toBeGreaterThan(5);
    for (const line of aboutRequests) expect(line.requestId, JSON.stringify(line)).toEqual(expect.any(String));
    expect(lines.find((l) => l.requestId === "lb-abc-123")).toMatchObject({ msg: "publish", status: 200 });
  });
});
