import { mkdtemp, rm } from "node:fs/promises";
import { connect } from "node:net";
import type { Socket } from "node:net";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { adminCall } from "./test-support/admin.js";
import { ADMIN_TOKEN, eventually } from "./test-support/node.js";
import { EdgeProcess } from "./test-support/process.js";
import { freePort } from "@plate/testing";
import { SseClient } from "./test-support/sse.js";
import { WsClient } from "./test-support/ws.js";

/** Answers the status of `GET path` on a new connection, or the error code of the connection (e.g. ECONNREFUSED). */
function getStatus(url: string): Promise<number | string> {
  return new Promise((resolve) => {
    const req = request(url, { agent: false }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on("error", (err: NodeJS.ErrnoException) => resolve(err.code ?? "error"));
    req.setTimeout(2000, () => req.destroy());
    req.end();
  });
}

/** The demo block the first start prints: the key and the two curl lines. */
function parseDemo(stdout: string): { plate: string; key: string; subscribeLine: string; publishLines: string } {
  const plate = /plate:\s+(\S+)/.exec(stdout)?.[1];
  const key = /key:\s+(\S+)/.exec(stdout)?.[1];
  const lines = stdout.split("\n");
  const subscribeLine = lines.find((line) => /\bcurl\b.*\s-N\s/.test(line));
  const publishIndex = lines.findIndex((line) => /\bcurl\b.*-X POST/.test(line));
  if (plate === undefined || key === undefined || subscribeLine === undefined || publishIndex === -1) {
    throw new Error(`no demo block in the output:\n${stdout}`);
  }
  // The publish command may continue on the next line (a trailing backslash).
  let publishLines = lines[publishIndex]!;
  for (let i = publishIndex; lines[i]?.trimEnd().endsWith("\\") && lines[i + 1] !== undefined; i++)
    publishLines += "\n" + lines[i + 1];
  return { plate, key, subscribeLine, publishLines };
}

/** The last http(s) URL in a command line. */
function lastUrl(command: string): string {
  const urls = command.match(/https?:\/\/[^\s'"]+/g);
  if (urls === null) throw new Error(`no URL in ${command}`);
  return urls[urls.length - 1]!;
}

/** Publishes through `publishUrl` and checks a subscriber of `subscribeUrl` (both with `key`) gets it. */
async function expectDelivery(subscribeUrl: string, publishUrl: string, key: string, message: unknown): Promise<void> {
  const sub = await SseClient.open(subscribeUrl, { Authorization: `Bearer ${key}` });
  try {
    expect(sub.status).toBe(200);
    await sub.waitFor("ready");
    const res = await fetch(publishUrl, {
      method: "POST",
      headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
      body: JSON.stringify({ message }),
    });
    expect(res.status).toBe(200);
    const { data } = (await res.json()) as any;
    const [envelope] = await sub.waitForMessages(1);
    expect(envelope).toMatchObject({ type: "message", id: data.id, message });
  } finally {
    sub.close();
  }
}

describe("node dist/main.js on the embedded default", () => {
  const processes: EdgeProcess[] = [];
  let dataDir: string;

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), "plate-main-"));
  });
  afterAll(async () => {
    for (const proc of processes) proc.kill();
    await rm(dataDir, { recursive: true, force: true });
  });

  async function start(env: Record<string, string> = {}): Promise<EdgeProcess> {
    const proc = new EdgeProcess(await freePort(), { DATA_DIR: dataDir, ADMIN_TOKEN, ...env });
    processes.push(proc);
    await proc.ready();
    return proc;
  }

  async function stop(proc: EdgeProcess): Promise<void> {
    proc.child.kill("SIGTERM");
    expect(await proc.exited(5000)).toBe(0);
  }

  let firstKey: string;
  let demoKeyId: string;

  it("prints plate demo, a key and curl publish and subscribe lines on its first start, and they work", async () => {
    const proc = await start();
    expect(
      await eventually(() => /key:\s+\S+/.test(proc.stdout) && /-X POST[\s\S]*\/publish/.test(proc.stdout), 5000),
    ).toBe(true);
    const demo = parseDemo(proc.stdout);
    expect(demo.plate).toBe("demo");
    firstKey = demo.key;
    for (const command of [demo.subscribeLine, demo.publishLines]) {
      expect(command).toContain(demo.key);
      expect(lastUrl(command).startsWith(`${proc.url}/demo/`)).toBe(true);
    }
    expect(lastUrl(demo.subscribeLine)).toMatch(/\/subscribe$/);
    expect(lastUrl(demo.publishLines)).toMatch(/\/publish$/);
    await expectDelivery(lastUrl(demo.subscribeLine), lastUrl(demo.publishLines), demo.key, { text: "hello" });
    const consoleUrl = `${proc.url}/console`;
    expect(proc.stdout).toContain(`    ${consoleUrl}\n`);
    expect((await fetch(consoleUrl)).status).toBe(200);

    const keys = await adminCall(proc.url, "GET", "/admin/plates/demo/keys");
    expect(keys.status).toBe(200);
    expect(keys.body.data).toHaveLength(1);
    demoKeyId = keys.body.data[0].id;
    await stop(proc);
  });

  it("does not create or print a new key on a second start on the same DATA_DIR, and the first key still works", async () => {
    expect(firstKey).toBeDefined();
    const proc = await start();
    // The demo block would be printed right after the node starts listening: give it time to show.
    await new Promise((r) => setTimeout(r, 300));
    expect(proc.stdout).not.toMatch(/key:\s+\S+/);
    expect(proc.stdout).not.toContain(firstKey);
    expect(proc.stdout).not.toMatch(/\bcurl\b/);
    const keys = await adminCall(proc.url, "GET", "/admin/plates/demo/keys");
    expect(keys.body.data.map((k: any) => k.id)).toEqual([demoKeyId]);
    const plates = await adminCall(proc.url, "GET", "/admin/plates");
    expect(plates.body.data.map((p: any) => p.id)).toEqual(["demo"]);
    await expectDelivery(
      `${proc.url}/demo/pubsub/alerts/subscribe`,
      `${proc.url}/demo/pubsub/alerts/publish`,
      firstKey,
      {
        again: true,
      },
    );
    await stop(proc);
  });
});

describe("node dist/main.js with a bad setting", () => {
  const processes: EdgeProcess[] = [];
  let dataDir: string;

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), "plate-main-"));
  });
  afterAll(async () => {
    for (const proc of processes) proc.kill();
    await rm(dataDir, { recursive: true, force: true });
  });

  it.each([
    ["MAX_MESSAGE_BYTES", "lots"],
    ["BOOTSTRAP_PLATES", '{"shop":"short"}'],
  ])("exits with a non-zero code and names %s=%s on stderr", async (variable, value) => {
    const proc = new EdgeProcess(await freePort(), { DATA_DIR: dataDir, [variable]: value });
    processes.push(proc);
    const code = await proc.exited(10_000);
    expect(proc.alive).toBe(false);
    expect(code).not.toBe(0);
    expect(code).not.toBeNull();
    expect(proc.stderr).toContain(variable);
    // It never started listening.
    expect(await getStatus(`${proc.url}/healthz`)).toBe("ECONNREFUSED");
  });
});

describe("node dist/main.js on SIGTERM", () => {
  const DRAIN_TIMEOUT_MS = 2000;
  const SECRET = "drain-secret-0123456789abcdefghij";
  const processes: EdgeProcess[] = [];
  const sockets: Socket[] = [];
  let dataDir: string;

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), "plate-main-"));
  });
  afterAll(async () => {
    for (const socket of sockets) socket.destroy();
    for (const proc of processes) proc.kill();
    await rm(dataDir, { recursive: true, force: true });
  });

  it("turns /readyz 503, closes WebSockets with 1001, ends SSE streams and exits 0 within DRAIN_TIMEOUT_MS", async () => {
    const proc = new EdgeProcess(await freePort(), {
      DATA_DIR: dataDir,
      DEMO_PLATE: "false",
      DRAIN_TIMEOUT_MS: String(DRAIN_TIMEOUT_MS),
      BOOTSTRAP_PLATES: JSON.stringify({ drain: SECRET }),
    });
    processes.push(proc);
    await proc.ready();
    expect(await getStatus(`${proc.url}/readyz`)).toBe(200);

    const auth = { Authorization: `Bearer ${SECRET}` };
    const sse = await SseClient.open(`${proc.url}/drain/pubsub/alerts/subscribe`, auth);
    const ws = await WsClient.connect(`${proc.url.replace(/^http/, "ws")}/drain/pubsub/alerts/ws`, { headers: auth });
    await Promise.all([sse.waitFor("ready"), ws.waitFor("ready")]);

    // A readiness probe already under way on its own connection (as a load balancer's would be):
    // its request line is sent now, the rest after the signal.
    const probe = connect(proc.port, "127.0.0.1");
    sockets.push(probe);
    let probeAnswer = "";
    probe.setEncoding("utf8").on("data", (chunk: string) => (probeAnswer += chunk));
    let probeEnded = false;
    probe.on("close", () => (probeEnded = true));
    probe.on("error", () => undefined);
    await new Promise<void>((resolve) => probe.once("connect", () => resolve()));
    probe.write("GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n");

    const signalledAt = Date.now();
    proc.child.kill("SIGTERM");
    // Right after the signal, on new connections: never ready again (503, or refused once the node stops listening).
    const polled: (number | string)[] = [];
    for (let i = 0; i < 5 && proc.alive; i++) polled.push(await getStatus(`${proc.url}/readyz`));

    // The WebSocket close proves the node has begun draining; then the probe's request completes.
    expect(await ws.waitForClose(DRAIN_TIMEOUT_MS + 1000)).toBe(1001);
    probe.write("Connection: close\r\n\r\n");
    expect(await eventually(() => probeEnded, 2000)).toBe(true);
    expect(probeAnswer).toMatch(/^HTTP\/1\.1 503 /);
    expect(probeAnswer).toContain('"code":"shutting_down"');
    probe.destroy();

    expect(await sse.waitForEnd(DRAIN_TIMEOUT_MS + 1000)).toBe(true);
    const code = await proc.exited(DRAIN_TIMEOUT_MS + 1000 - (Date.now() - signalledAt));
    expect(proc.alive).toBe(false);
    expect(code).toBe(0);
    expect(proc.exitedAt! - signalledAt).toBeLessThanOrEqual(DRAIN_TIMEOUT_MS + 1000);

    // Answers before the signal was handled may still be 200; none after a refusal or a 503.
    const firstNotReady = polled.findIndex((status) => status !== 200);
    if (firstNotReady !== -1) {
      for (const status of polled.slice(firstNotReady)) expect([503, "ECONNREFUSED", "ECONNRESET"]).toContain(status);
    }
    sse.close();
    ws.close();
  });
});
