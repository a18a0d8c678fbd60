import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Browser, Page } from "playwright-core";
import { eventually, startRedis } from "@plate/testing";
import type { RedisServer } from "@plate/testing";
import { launchChromium, screenshot, startAppOrigin } from "./browser.js";
import type { AppOrigin } from "./browser.js";
import { KEYS, startNode } from "./support.js";
import type { Node } from "./support.js";

/**
 * A client path minted for several channels and a pattern (route 4 with `channels` and
 * `patterns`), opened in Debian's chromium with nothing but `new EventSource(path)` from a page of
 * another origin: the named `ready` event lists every subscription, unnamed events carry the
 * messages of those channels only, and a backend changes the live stream's subscriptions with
 * route 9's POST (named `subscribed` / `unsubscribed` events). On the embedded broker with one
 * node, and on Redis with the stream on one node while the backend talks to another.
 * Screenshots land in apps/e2e/test-artifacts/.
 */

const PLATE = "acme";

let browser: Browser;
let app: AppOrigin;
let redis: RedisServer;
let runs = 0;

beforeAll(async () => {
  browser = await launchChromium();
  app = await startAppOrigin();
  redis = await startRedis();
});
afterAll(async () => {
  await browser?.close();
  await app?.close();
  await redis?.stop();
});

/** A backend's call to the node with the plate's key; answers the status and the parsed body. */
async function backend(base: string, path: string, body: unknown): Promise<{ status: number; body: any }> {
  const res = await fetch(`${base}/${PLATE}${path}`, {
    method: "POST",
    headers: { Authorization: `Bearer ${KEYS.acme}`, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

async function publish(base: string, channel: string, message: unknown): Promise<string> {
  const { status, body } = await backend(base, `/pubsub/${encodeURIComponent(channel)}/publish`, { message });
  expect([status, body.data?.id === undefined]).toEqual([200, false]);
  return body.data.id;
}

/** What the page's EventSource saw, in order: named events by name, unnamed ones as "message". */
interface Seen {
  readonly event: string;
  readonly data: any;
  readonly lastEventId: string;
}

async function seen(page: Page): Promise<Seen[]> {
  return page.evaluate(() => (window as any).seen);
}

const settle = () => new Promise((resolve) => setTimeout(resolve, 250));

const setups = [
  { name: "on the embedded broker", redis: false },
  { name: "on Redis, with the backend talking to another node than the stream's", redis: true },
] as const;

describe.each(setups)("a plain EventSource on a multi-channel client path, $name", (setup) => {
  let streamNode: Node;
  let backendNode: Node;
  let page: Page | undefined;

  beforeAll(async () => {
    streamNode = await startNode(setup.redis ? { REDIS_URL: redis.url } : {});
    backendNode = setup.redis ? await startNode({ REDIS_URL: redis.url }) : streamNode;
  });
  afterAll(async () => {
    await page?.evaluate(() => (window as any).source?.close()).catch(() => undefined);
    await page?.close();
    if (backendNode !== streamNode) await backendNode?.stop();
    await streamNode?.stop();
  });

  it("gets messages of each of its channels and its pattern only, and follows subscriptions a backend changes while it is open", async () => {
    const run = ++runs;
    const [alpha, beta, gamma1, delta] = [`alpha-${run}`, `beta-${run}`, `gamma-${run}:1`, `delta-${run}`];
    const gammaPattern = `gamma-${run}:*`;

    // The backend mints one path for alpha (in the URL), beta and gamma-N:* (in the body).
    const minted = await backend(streamNode.url, `/pubsub/${alpha}/client`, { channels: [beta], patterns: [gammaPattern], max_uses: 0 });
    expect(minted.status).toBe(200);
    const { path, token } = minted.body.data;
    expect(path).toBe(`/${PLATE}/s/${token}`);
    expect([minted.body.data.channels, minted.body.data.patterns]).toEqual([[alpha, beta], [gammaPattern]]);

    // The page, on another origin, opens it with no headers at all.
    page = await browser.newPage();
    page.on("pageerror", (error) => console.error(`page error: ${error.message}`));
    await page.goto(app.url);
    await page.evaluate((url) => {
      const w = window as any;
      w.seen = [];
      w.errors = 0;
      const source = new EventSource(url);
      w.source = source;
      const record = (name: string) => (event: MessageEvent) => {
        // A lost connection fires "error" without data; those are counted by onerror below.
        if (typeof event.data !== "string") return;
        const data = JSON.parse(event.data);
        w.seen.push({ event: name, data, lastEventId: event.lastEventId });
        w.show(`${name}: ${event.data}`);
      };
      for (const name of ["ready", "subscribed", "unsubscribed", "reset", "error"]) source.addEventListener(name, record(name) as EventListener);
      source.onmessage = record("message");
      source.onerror = () => (w.errors += 1);
    }, streamNode.url + path);
    await page.waitForFunction(() => (window as any).seen.length >= 1, undefined, { timeout: 5_000 });

    const [ready] = await seen(page);
    expect(ready!.event).toBe("ready");
    expect(ready!.data).toEqual({
      type: "ready",
      clientId: expect.any(String),
      subscriptions: [
        { channel: alpha, position: expect.any(String) },
        { channel: beta, position: expect.any(String) },
        { pattern: gammaPattern, position: expect.any(String) },
      ],
    });
    const clientId: string = ready!.data.clientId;

    // delta is published between the others: were it delivered, it would come before gamma-N:1.
    const ids = {
      [alpha]: await publish(backendNode.url, alpha, { n: 1 }),
      [beta]: await publish(backendNode.url, beta, { n: 2 }),
      [delta]: await publish(backendNode.url, delta, { n: 3 }),
      [gamma1]: await publish(backendNode.url, gamma1, { n: 4 }),
    };
    await page.waitForFunction((n) => (window as any).seen.filter((s: Seen) => s.event === "message").length >= n, 3, { timeout: 5_000 });
    await settle();
    const messages = (await seen(page)).filter((s) => s.event === "message");
    expect(messages.map((m) => [m.data.type, m.data.channel, m.data.message, m.data.id, m.lastEventId])).toEqual([
      ["message", alpha, { n: 1 }, ids[alpha], ids[alpha]],
      ["message", beta, { n: 2 }, ids[beta], ids[beta]],
      ["message", gamma1, { n: 4 }, ids[gamma1], ids[gamma1]],
    ]);
    expect(Object.keys(messages[0]!.data).sort()).toEqual(["channel", "id", "message", "timestamp", "type"]);
    expect(Number.isNaN(Date.parse(messages[0]!.data.timestamp))).toBe(false);
    await screenshot(page, `realtime-eventsource-multi-channel-${setup.redis ? "redis" : "embedded"}`);

    // The backend moves the live stream from alpha to delta.
    const changed = await backend(backendNode.url, `/realtime/${encodeURIComponent(clientId)}`, {
      subscribe: [{ channel: delta }],
      unsubscribe: [{ channel: alpha }],
    });
    expect(changed.status).toBe(200);
    const topicOf = (s: any) => (s.channel !== undefined ? `channel ${s.channel}` : `pattern ${s.pattern}`);
    const byTopic = (a: any, b: any) => topicOf(a).localeCompare(topicOf(b));
    expect([...changed.body.data.subscriptions].sort(byTopic)).toEqual(
      [
        { channel: beta, position: expect.any(String) },
        { channel: delta, position: expect.any(String) },
        { pattern: gammaPattern, position: expect.any(String) },
      ].sort(byTopic),
    );
    await page.waitForFunction(
      () => ["subscribed", "unsubscribed"].every((name) => (window as any).seen.some((s: Seen) => s.event === name)),
      undefined,
      { timeout: 5_000 },
    );
    const notices = (await seen(page)).filter((s) => s.event === "subscribed" || s.event === "unsubscribed");
    expect(notices.find((s) => s.event === "subscribed")!.data).toEqual({ type: "subscribed", channel: delta, position: expect.any(String) });
    expect(notices.find((s) => s.event === "unsubscribed")!.data).toEqual({ type: "unsubscribed", channel: alpha });
    expect(notices).toHaveLength(2);

    // alpha is published first: were it still delivered, it would come before delta.
    await publish(backendNode.url, alpha, { n: 5 });
    const deltaId = await publish(backendNode.url, delta, { n: 6 });
    await page.waitForFunction((n) => (window as any).seen.filter((s: Seen) => s.event === "message").length >= n, 4, { timeout: 5_000 });
    await settle();
    const all = await seen(page);
    expect(all.filter((s) => s.event === "message").slice(3).map((m) => [m.data.channel, m.data.message, m.data.id])).toEqual([[delta, { n: 6 }, deltaId]]);
    // One stream throughout: one ready, no error or reset, and the browser never reconnected.
    expect(all.map((s) => s.event).filter((e) => e !== "message")).toEqual(["ready", ...notices.map((s) => s.event)]);
    expect(await page.evaluate(() => (window as any).errors)).toBe(0);
    await screenshot(page, `realtime-eventsource-changed-${setup.redis ? "redis" : "embedded"}`);

    // Closed by the page: the node lets the stream go, and a change for it is then not_found.
    await page.evaluate(() => (window as any).source.close());
    expect(await page.evaluate(() => (window as any).source.readyState)).toBe(2);
    let after = changed;
    const gone = await eventually(async () => {
      after = await backend(backendNode.url, `/realtime/${encodeURIComponent(clientId)}`, { subscribe: [{ channel: delta }], unsubscribe: [] });
      return after.status !== 200;
    }, 5_000);
    expect([gone, after.status, after.body.error?.code]).toEqual([true, 404, "not_found"]);
  });
});
