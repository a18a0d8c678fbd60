import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Browser, Page } from "playwright-core";
import { WebSocket } from "ws";
import { PlateClient } from "@plate/client";
import { eventually } from "@plate/testing";
import { launchChromium, screenshot } from "./browser.js";
import { KEYS, startNode } from "./support.js";
import type { Node } from "./support.js";

/**
 * The console (/console) in Debian's chromium: one realtime connection, subscriptions added and
 * removed while it is open, each message logged once with the subscriptions it matched, client
 * paths minted for several channels, a channel's presence members, filtered subscriptions.
 * Screenshots land in apps/e2e/test-artifacts/.
 */

let browser: Browser;
let node: Node;
let plate: PlateClient;
let channels = 0;
const channel = (what: string) => `console-${++channels}-${what}`;

beforeAll(async () => {
  browser = await launchChromium();
  node = await startNode();
  plate = new PlateClient({ url: node.url, plate: "acme", key: KEYS.acme });
});
afterAll(async () => {
  await browser?.close();
  await node?.stop();
});

/** Open connections by the node's own count (`plate_connections`, every transport). */
async function connections(): Promise<number> {
  const metrics = await (await fetch(`${node.url}/metrics`)).text();
  let total = 0;
  for (const [, value] of metrics.matchAll(/^plate_connections(?:\{[^}]*\})? (\d+)$/gm)) total += Number(value);
  return total;
}

async function consolePage(): Promise<Page> {
  const page = await browser.newPage();
  page.on("pageerror", (error) => console.error(`page error: ${error.message}`));
  await page.goto(`${node.url}/console`);
  return page;
}

/** The console, signed in to acme and connected over `transport`. */
async function connectedConsole(transport: "ws" | "sse"): Promise<Page> {
  const page = await consolePage();
  await page.fill("#plate", "acme");
  await page.fill("#key", KEYS.acme);
  await page.selectOption("#transport", transport);
  await page.click("#connect");
  await page.waitForSelector("#state[data-state=open]");
  return page;
}

async function add(page: Page, name: string, pattern = false): Promise<void> {
  await page.fill("#channel", name);
  await page.setChecked("#pattern", pattern);
  await page.click("#subscribe");
  await page.waitForSelector(`#subscriptions tr[data-name="${name}"][data-state=live]`);
}

/** The message rows of the log, oldest first: channel, the subscriptions it matched, message. */
async function messages(page: Page): Promise<[string, string[], string][]> {
  const rows = page.locator("#log tr[data-kind=message]");
  const out: [string, string[], string][] = [];
  for (const row of await rows.all()) {
    const cells = await row.locator("td").allTextContents();
    out.unshift([cells[2]!, await row.locator(".tag").allTextContents(), cells[5]!]);
  }
  return out;
}

describe("the console (/console)", () => {
  it.each(["ws", "sse"] as const)(
    "over %s, holds a channel and a pattern on one connection, tags each message with what it matched, and unsubscribes one live",
    async (transport) => {
      const base = channel(transport);
      const page = await connectedConsole(transport);
      await add(page, `${base}-a`);
      await add(page, `${base}-*`, true);
      expect(await eventually(async () => (await connections()) === 1)).toBe(true);

      // Published from the page, then from a backend.
      await page.fill("#pub-channel", `${base}-a`);
      await page.fill("#pub-message", '{"text": "from the console"}');
      await page.click("#publish");
      await page.locator("#log tr[data-kind=message]", { hasText: "from the console" }).waitFor();
      await plate.publish(`${base}-b`, { from: "a backend" });
      await page.locator("#log tr[data-kind=message]", { hasText: "a backend" }).waitFor();

      // The pattern goes; the channel stays, on the same connection.
      await page.click(`#subscriptions tr[data-name="${base}-*"] button.unsubscribe`);
      await page.locator("#log tr[data-kind=unsubscribed]").waitFor();
      await plate.publish(`${base}-b`, { after: "unsubscribe" });
      await plate.publish(`${base}-a`, { still: "subscribed" });
      await page.locator("#log tr[data-kind=message]", { hasText: "still" }).waitFor();
      await new Promise((r) => setTimeout(r, 200));
      expect(await messages(page)).toEqual([
        [`${base}-a`, [`${base}-a`, `${base}-*`], '{"text":"from the console"}'],
        [`${base}-b`, [`${base}-*`], '{"from":"a backend"}'],
        [`${base}-a`, [`${base}-a`], '{"still":"subscribed"}'],
      ]);
      expect(await page.locator(`#subscriptions tr[data-name="${base}-a"] .count`).textContent()).toBe("2 messages");
      expect(await connections()).toBe(1);
      await screenshot(page, `console-realtime-${transport}`);

      // Errors carry the spec's code.
      await page.fill("#pub-message", "{not json");
      await page.click("#publish");
      await page.locator("#log tr[data-kind=error]", { hasText: "invalid_json" }).waitFor();
      await page.fill("#pub-message", "1");
      await page.fill("#key", "a-wrong-key-0123456789abcdefgh");
      await page.click("#publish");
      await page.locator("#log tr[data-kind=error]", { hasText: "invalid_api_key" }).waitFor();

      await page.click("#connect");
      await page.waitForSelector("#state[data-state=closed]");
      expect(await eventually(async () => (await connections()) === 0)).toBe(true);
      await page.close();
    },
  );

  it.each(["ws", "sse"] as const)(
    "over %s, subscribes with a filter, logs only the messages that match it, and shows a refused filter by its code",
    async (transport) => {
      const ch = channel(`filtered-${transport}`);
      const page = await connectedConsole(transport);
      await page.fill("#filter", '{"equals": {"status": "paid"}}');
      await add(page, ch);
      expect(await page.locator(`#subscriptions tr[data-name="${ch}"] .filter`).textContent()).toBe('{"equals":{"status":"paid"}}');
      await plate.publish(ch, { status: "pending", n: 1 });
      await plate.publish(ch, { status: "paid", n: 2 }, { volatile: { trace: "t-2" } });
      await page.locator("#log tr[data-kind=message]", { hasText: '"n":2' }).waitFor();
      // In order per channel: had the first one been sent, it would be logged by now.
      expect(await messages(page)).toEqual([[ch, [ch], '{"status":"paid","n":2}  volatile: {"trace":"t-2"}']]);

      // A filter the service refuses closes that subscription with its code; the connection stays open.
      const bad = channel("bad-filter");
      await page.fill("#channel", bad);
      await page.fill("#filter", '{"nonsense": {}}');
      await page.click("#subscribe");
      await page.waitForSelector(`#subscriptions tr[data-name="${bad}"][data-state=closed]`);
      expect(await page.locator(`#subscriptions tr[data-name="${bad}"] .state`).textContent()).toBe("closed: invalid_filter");
      await page.locator("#log tr[data-kind=error]", { hasText: "invalid_filter" }).waitFor();
      // Not JSON: refused by the page, with nothing sent.
      await page.fill("#channel", channel("not-json"));
      await page.fill("#filter", "{status: paid");
      await page.click("#subscribe");
      await page.locator("#log tr[data-kind=error]", { hasText: "The filter is not JSON" }).waitFor();
      expect(await page.locator("#subscriptions tbody tr").count()).toBe(2);
      expect(await page.locator("#state").getAttribute("data-state")).toBe("open");
      await screenshot(page, `console-filter-${transport}`);
      await page.close();
    },
  );

  it("subscribing while disconnected connects first, with the whole list", async () => {
    const [a, b] = [channel("a"), channel("b")];
    const page = await consolePage();
    await page.fill("#plate", "acme");
    await page.fill("#key", KEYS.acme);
    await add(page, a);
    await page.click("#connect"); // disconnect: the list stays
    await page.waitForSelector("#state[data-state=closed]");
    await page.waitForSelector(`#subscriptions tr[data-name="${a}"][data-state=closed]`);
    await page.selectOption("#transport", "ws");
    await add(page, b);
    await page.waitForSelector(`#subscriptions tr[data-name="${a}"][data-state=live]`);
    await plate.publish(a, "first");
    await plate.publish(b, "second");
    await page.locator("#log tr[data-kind=message]", { hasText: "second" }).waitFor();
    expect(await messages(page)).toEqual([
      [a, [a], '"first"'],
      [b, [b], '"second"'],
    ]);
    await page.close();
  });

  it("connects with a client path minted for several channels, lists them, and shows a refusal by its code", async () => {
    const [a, b, p] = [channel("a"), channel("b"), channel("p")];
    const { path } = await plate.clientPath(a, { channels: [b], patterns: [`${p}:*`], maxUses: 0 });
    const page = await consolePage();
    await page.fill("#path", path);
    await page.selectOption("#transport", "sse");
    await page.click("#connect");
    await page.waitForSelector("#state[data-state=open]");
    for (const name of [a, b, `${p}:*`])
      await page.waitForSelector(`#subscriptions tr[data-name="${name}"][data-state=live]`);
    await plate.publish(b, "for b");
    await plate.publish(`${p}:1`, "for the pattern");
    await page.locator("#log tr[data-kind=message]", { hasText: "for the pattern" }).waitFor();
    expect(await messages(page)).toEqual([
      [b, [b], '"for b"'],
      [`${p}:1`, [`${p}:*`], '"for the pattern"'],
    ]);

    // Beyond what the path allows: refused, and the rest goes on.
    await page.fill("#channel", channel("elsewhere"));
    await page.setChecked("#pattern", false);
    await page.click("#subscribe");
    await page.locator("#log tr[data-kind=error]", { hasText: "forbidden" }).waitFor();
    await page.waitForSelector("#subscriptions tr[data-state=closed]");
    await plate.publish(a, "for a");
    await page.locator("#log tr[data-kind=message]", { hasText: "for a" }).waitFor();
    await screenshot(page, "console-realtime-client-path");
    await page.close();
  });

  it("lists a channel's presence members, asked with the key, and shows them gone once they leave", async () => {
    const ch = channel("presence");
    const rt = new PlateClient({ url: node.url, plate: "acme", key: KEYS.acme, WebSocket }).realtime({ transport: "ws" });
    const room = rt.subscribe(ch, () => undefined);
    await room.track({ typing: true });
    const page = await consolePage();
    await page.fill("#plate", "acme");
    await page.fill("#key", KEYS.acme);
    await page.fill("#presence-channel", ch);
    await page.click("#members-show");
    const row = page.locator(`#members tr[data-client-id="${rt.clientId}"]`);
    await row.waitFor();
    expect(await row.locator("td").allTextContents()).toEqual([rt.clientId, "", '{"typing":true}', expect.stringMatching(/^\d{4}-/)]);
    expect(await page.locator("#members-count").textContent()).toBe(` 1 member of ${ch}`);
    await screenshot(page, "console-presence-members");

    await room.untrack();
    await page.click("#members-show");
    await page.waitForSelector(`#members-count:text(" 0 members of ${ch}")`);
    expect(await page.locator("#members tbody tr").count()).toBe(0);
    // Refusals show their code.
    await page.fill("#presence-channel", "not a channel");
    await page.click("#members-show");
    await page.locator("#log tr[data-kind=error]", { hasText: "invalid_channel" }).waitFor();
    rt.close();
    await page.close();
  });
});
