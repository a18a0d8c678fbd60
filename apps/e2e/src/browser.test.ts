import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Browser, Page } from "playwright-core";
import { PlateClient } from "@plate/client";
import { freePort, startRedis } from "@plate/testing";
import type { RedisServer } from "@plate/testing";
import { launchChromium, screenshot, startAppOrigin } from "./browser.js";
import type { AppOrigin } from "./browser.js";
import { KEYS, startNode } from "./support.js";
import type { Node } from "./support.js";

/**
 * What browsers do with Plate, in Debian's chromium: plain EventSource and WebSocket on client
 * paths from a page of another origin, the close codes a browser sees for refused paths,
 * EventSource's own reconnect across a node restart, the client's modules imported by a page, and
 * the console. Screenshots land in apps/e2e/test-artifacts/.
 */

let browser: Browser;
let node: Node;
let app: AppOrigin;
let plate: PlateClient;
let channels = 0;
const channel = () => `browser-${++channels}`;

beforeAll(async () => {
  browser = await launchChromium();
  node = await startNode();
  app = await startAppOrigin();
  plate = new PlateClient({ url: node.url, plate: "acme", key: KEYS.acme });
});
afterAll(async () => {
  await browser?.close();
  await node?.stop();
  await app?.close();
});

async function appPage(): Promise<Page> {
  const page = await browser.newPage();
  // A script error in the page fails the test that waits on it with the reason, not a timeout alone.
  page.on("pageerror", (error) => console.error(`page error: ${error.message}`));
  await page.goto(app.url);
  return page;
}

describe("a page on another origin", () => {
  it("receives messages published over HTTP with a plain new EventSource(node + clientPath)", async () => {
    const ch = channel();
    const { path } = await plate.clientPath(ch);
    const page = await appPage();
    await page.evaluate((url) => {
      const w = window as any;
      w.received = [];
      w.readies = 0;
      const source = new EventSource(url);
      source.addEventListener("ready", () => (w.readies += 1));
      source.onmessage = (event) => {
        const envelope = JSON.parse(event.data);
        w.received.push({ lastEventId: event.lastEventId, envelope });
        w.show(`${envelope.channel} ${JSON.stringify(envelope.message)}`);
      };
    }, node.url + path);
    await page.waitForFunction(() => (window as any).readies === 1);
    const ids = [];
    for (const text of ["one", "two", "three"]) ids.push((await plate.publish(ch, { text })).id);
    await page.waitForFunction(() => (window as any).received.length === 3);
    const received = await page.evaluate(() => (window as any).received);
    expect(received.map((r: any) => [r.lastEventId, r.envelope.type, r.envelope.channel, r.envelope.message.text])).toEqual([
      [ids[0], "message", ch, "one"],
      [ids[1], "message", ch, "two"],
      [ids[2], "message", ch, "three"],
    ]);
    await screenshot(page, "eventsource-cross-origin");
    await page.close();
  });

  it("is refused by the browser when the node's CORS_ORIGINS does not list the page's origin", async () => {
    const strict = await startNode({ CORS_ORIGINS: "https://only.example" });
    try {
      const ch = channel();
      const { path } = await new PlateClient({ url: strict.url, plate: "acme", key: KEYS.acme }).clientPath(ch, { maxUses: 0 });
      const page = await appPage();
      const state = await page.evaluate(
        (url) =>
          new Promise<{ readyState: number; messages: number }>((resolve) => {
            let messages = 0;
            const source = new EventSource(url);
            source.onmessage = () => (messages += 1);
            source.onerror = () => resolve({ readyState: source.readyState, messages });
          }),
        strict.url + path,
      );
      // CLOSED (2): a CORS failure is fatal for an EventSource; it does not retry.
      expect(state).toEqual({ readyState: 2, messages: 0 });
      // The path itself is good: the same request outside a browser is a stream, without the header.
      const controller = new AbortController();
      const res = await fetch(strict.url + path, { headers: { Origin: app.url.slice(0, -1) }, signal: controller.signal });
      expect([res.status, res.headers.get("content-type"), res.headers.get("access-control-allow-origin")]).toEqual([200, "text/event-stream; charset=utf-8", null]);
      controller.abort();
      await page.close();
    } finally {
      await strict.stop();
    }
  });

  it("receives messages with a browser WebSocket on a client path", async () => {
    const ch = channel();
    const { path } = await plate.clientPath(ch);
    const page = await appPage();
    await page.evaluate((url) => {
      const w = window as any;
      w.frames = [];
      const socket = new WebSocket(url);
      socket.onmessage = (event) => {
        const frame = JSON.parse(event.data);
        w.frames.push(frame);
        w.show(`${frame.type} ${frame.type === "message" ? JSON.stringify(frame.message) : ""}`);
      };
    }, node.url.replace("http", "ws") + path);
    await page.waitForFunction(() => (window as any).frames.length === 1);
    await plate.publish(ch, { text: "over a socket" });
    await page.waitForFunction(() => (window as any).frames.length === 2);
    const frames = await page.evaluate(() => (window as any).frames);
    expect(frames.map((f: any) => f.type)).toEqual(["ready", "message"]);
    expect([frames[1].channel, frames[1].message]).toEqual([ch, { text: "over a socket" }]);
    await screenshot(page, "websocket-cross-origin");
    await page.close();
  });

  it("sees close codes 4404, 4410 and 4429 (and the error frame's code) for unknown, expired and used-up paths", async () => {
    const ch = channel();
    const known = await plate.clientPath(ch);
    const unknown = known.path.slice(0, -4) + (known.path.endsWith("aaaa") ? "bbbb" : "aaaa");
    const expired = (await plate.clientPath(ch, { ttlMs: 1 })).path;
    const used = (await plate.clientPath(ch, { maxUses: 1 })).path;
    await new Promise((r) => setTimeout(r, 20));
    const page = await appPage();
    const ws = node.url.replace("http", "ws");
    const open = (url: string) =>
      page.evaluate(
        (u) =>
          new Promise<any>((resolve) => {
            const socket = new WebSocket(u);
            let error: string | undefined;
            socket.onmessage = (event) => {
              const frame = JSON.parse(event.data);
              if (frame.type === "error") error = frame.error.code;
            };
            socket.onclose = (event) => {
              (window as any).show(`${u.slice(-12)}: close ${event.code} ${event.reason}`);
              resolve({ code: event.code, reason: event.reason, error });
            };
            (window as any).lastSocket = socket;
          }),
        url,
      );
    // The single-use path, used once (left open), then again.
    await page.evaluate((u) => {
      (window as any).first = new WebSocket(u);
    }, ws + used);
    await page.waitForFunction(() => (window as any).first.readyState === WebSocket.OPEN);
    await new Promise((r) => setTimeout(r, 100));
    const results = [await open(ws + unknown), await open(ws + expired), await open(ws + used)];
    expect(results).toEqual([
      { code: 4404, reason: "invalid_client_socket", error: "invalid_client_socket" },
      { code: 4410, reason: "expired_client_socket", error: "expired_client_socket" },
      { code: 4429, reason: "exhausted_client_socket", error: "exhausted_client_socket" },
    ]);
    await screenshot(page, "refused-paths-close-codes");
    await page.close();
  });

  it("subscribes with @plate/client imported from the node (/console/client/index.js)", async () => {
    const ch = channel();
    const page = await appPage();
    // As the README's browser example: a module script of the page imports the client from the
    // node. (A backend would mint the path; here the page asks the node, as a server would.)
    await page.addScriptTag({
      type: "module",
      content: `
        import { subscribePath } from "${node.url}/console/client/index.js";
        const mint = async () => {
          const res = await fetch("${node.url}/acme/pubsub/${ch}/client", { method: "POST", headers: { Authorization: "Bearer ${KEYS.acme}" } });
          return (await res.json()).data.path;
        };
        window.got = [];
        window.states = [];
        subscribePath(mint, (m) => (window.got.push(m.message), window.show(JSON.stringify(m.message))), {
          base: "${node.url}",
          transport: "ws",
          onStateChange: (s) => window.states.push(s),
        });`,
    });
    await page.waitForFunction(() => (window as any).states?.includes("open"));
    await plate.publish(ch, 1);
    await plate.publish(ch, 2);
    await page.waitForFunction(() => (window as any).got.length === 2);
    expect(await page.evaluate(() => (window as any).got)).toEqual([1, 2]);
    await screenshot(page, "client-module-in-browser");
    await page.close();
  });
});

describe("@plate/client with a key, in a page on another origin", () => {
  it.each(["sse", "ws"] as const)("subscribes over %s and publishes (CORS preflights for Authorization and Idempotency-Key)", async (transport) => {
    const ch = channel();
    const page = await appPage();
    await page.addScriptTag({
      type: "module",
      content: `
        import { PlateClient } from "${node.url}/console/client/index.js";
        const plate = new PlateClient({ url: "${node.url}", plate: "acme", key: "${KEYS.acme}" });
        window.got = [];
        window.published = [];
        window.errors = [];
        plate.subscribe("${ch}", (m) => (window.got.push(m), window.show(JSON.stringify(m))), {
          transport: "${transport}",
          onError: (e) => window.errors.push(e.code),
          onReady: async () => {
            try {
              window.published.push(await plate.publish("${ch}", { from: "the page" }, { idempotencyKey: "page-${ch}" }));
              window.published.push(await plate.publish("${ch}", { from: "the page" }, { idempotencyKey: "page-${ch}" }));
            } catch (e) {
              window.errors.push(e.code);
            }
          },
        });`,
    });
    await page.waitForFunction(() => {
      const w = window as any;
      return (w.published?.length === 2 && w.got.length === 1) || w.errors?.length > 0;
    });
    await new Promise((r) => setTimeout(r, 200));
    const { got, published, errors } = await page.evaluate(() => ({ got: (window as any).got, published: (window as any).published, errors: (window as any).errors }));
    expect(errors).toEqual([]);
    // The retry with the same Idempotency-Key answered the same id and was not delivered again.
    expect(published[1].id).toBe(published[0].id);
    expect(got.map((m: any) => [m.id, m.channel, m.message])).toEqual([[published[0].id, ch, { from: "the page" }]]);
    await page.close();
  });
});

describe("EventSource's own reconnect", () => {
  let redis: RedisServer;
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    await redis?.stop();
  });

  it("comes back by itself after its node restarts and, with Last-Event-ID, gets what was published meanwhile, once", async () => {
    const env = { REDIS_URL: redis.url, PORT: String(await freePort()), SSE_RETRY_MS: "500" };
    let restarting = await startNode(env);
    const other = await startNode({ REDIS_URL: redis.url });
    const page = await appPage();
    try {
      const ch = channel();
      const via = new PlateClient({ url: other.url, plate: "acme", key: KEYS.acme });
      // Unlimited uses: the browser reconnects to the same URL.
      const { path } = await new PlateClient({ url: restarting.url, plate: "acme", key: KEYS.acme }).clientPath(ch, { maxUses: 0 });
      await page.evaluate((url) => {
        const w = window as any;
        w.received = [];
        w.readies = 0;
        w.errors = 0;
        const source = new EventSource(url);
        source.addEventListener("ready", () => (w.readies += 1));
        source.addEventListener("reset", () => w.show("reset"));
        source.onerror = () => (w.errors += 1, w.show(`error, readyState ${source.readyState}`));
        source.onmessage = (event) => (w.received.push(JSON.parse(event.data).message), w.show(event.data));
      }, restarting.url + path);
      await page.waitForFunction(() => (window as any).readies === 1);
      for (let n = 0; n < 3; n++) await via.publish(ch, n);
      await page.waitForFunction(() => (window as any).received.length === 3);

      await restarting.stop();
      await page.waitForFunction(() => (window as any).errors >= 1);
      for (let n = 3; n < 6; n++) await via.publish(ch, n);
      restarting = await startNode(env);
      await page.waitForFunction(() => (window as any).readies === 2, undefined, { timeout: 15_000 });
      await via.publish(ch, 6);
      await page.waitForFunction(() => (window as any).received.length >= 7);
      await new Promise((r) => setTimeout(r, 200));
      expect(await page.evaluate(() => (window as any).received)).toEqual([0, 1, 2, 3, 4, 5, 6]);
      await screenshot(page, "eventsource-reconnect-after-restart");
    } finally {
      await page.close();
      await restarting.stop();
      await other.stop();
    }
  });
});
