import { createServer } from "node:http";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Browser, Page } from "playwright-core";
import { launchChromium, screenshot, startAppOrigin } from "./browser.js";
import type { AppOrigin } from "./browser.js";
import { startNode } from "./support.js";
import type { Node } from "./support.js";
import { createSigningKey, mintToken } from "./tokens.js";
import type { SigningKey } from "./tokens.js";

/**
 * Two users chat in Debian's chromium, each in a page of an app's origin that imports @plate/client
 * from the node (`/console/client/index.js`): the page's `tokenProvider` fetches a signed token
 * from the app's backend (another origin, CORS), which mints it with jose for its user, and
 * publishes on a WebSocket of route 9. Tokens live 4 s, so each page refreshes its token while
 * the chat goes on. Screenshots land in apps/e2e/test-artifacts/.
 */

const ADMIN_TOKEN = "admin-token-for-browser-token-tests-01";
const ROOM = "chat.room-1";
const TOKEN_SECONDS = 4;
const USERS = ["ann", "bob"] as const;

/** The app's backend: `GET /token?user=ann` answers a token for that user (who may read and write the room). */
interface TokenBackend {
  readonly url: string;
  /** Tokens minted, by user. */
  readonly minted: Record<string, number>;
  close(): Promise<void>;
}

async function startTokenBackend(key: SigningKey, appOrigin: string): Promise<TokenBackend> {
  const minted: Record<string, number> = {};
  const server: Server = createServer((req, res) => {
    const user = new URL(req.url ?? "/", "http://backend").searchParams.get("user") ?? "";
    // The page is on another origin: the browser reads the answer only with this header.
    const cors = { "Access-Control-Allow-Origin": appOrigin };
    if (!(USERS as readonly string[]).includes(user)) {
      res.writeHead(403, cors).end();
      return;
    }
    mintToken(key, { sub: user, channels: [ROOM], publish: [ROOM] }, TOKEN_SECONDS).then(
      (token) => {
        minted[user] = (minted[user] ?? 0) + 1;
        res.writeHead(200, { ...cors, "Content-Type": "text/plain", "Cache-Control": "no-store" }).end(token);
      },
      () => res.writeHead(500, cors).end(),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    minted,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

let browser: Browser;
let node: Node;
let app: AppOrigin;
let backend: TokenBackend;

beforeAll(async () => {
  browser = await launchChromium();
  node = await startNode({ ADMIN_TOKEN, SIGNED_TOKEN_CLOCK_SKEW_S: "0" });
  app = await startAppOrigin();
  backend = await startTokenBackend(await createSigningKey(node.url, "acme", ADMIN_TOKEN), app.url.slice(0, -1));
});
afterAll(async () => {
  await browser?.close();
  await backend?.close();
  await app?.close();
  await node?.stop();
});

/** A page of `user`: its connection, `window.say(text)` to publish, and what it received in `window.got`. */
async function chatPage(user: string): Promise<Page> {
  const page = await browser.newPage();
  page.on("pageerror", (error) => console.error(`page error (${user}): ${error.message}`));
  await page.goto(app.url);
  await page.addScriptTag({
    type: "module",
    content: `
      import { realtimeWithToken } from "${node.url}/console/client/index.js";
      window.got = [];
      window.errors = [];
      window.states = [];
      window.tokens = 0;
      const rt = realtimeWithToken({
        url: "${node.url}",
        plate: "acme",
        transport: "ws",
        tokenProvider: async () => {
          const res = await fetch("${backend.url}/token?user=${user}");
          if (!res.ok) throw new Error("HTTP " + res.status);
          window.tokens += 1;
          return res.text();
        },
        onError: (e) => window.errors.push(e.code),
        onStateChange: (s) => window.states.push(s),
      });
      window.rt = rt;
      rt.subscribe("${ROOM}", (m) => {
        window.got.push({ id: m.id, channel: m.channel, from: m.from, message: m.message });
        window.show(m.from.user + ": " + m.message.text);
      }, { self: false, onSubscribed: () => (window.subscribed = true) });
      window.say = async (text) => {
        const { id } = await rt.publish("${ROOM}", { text });
        window.show("(me) " + text);
        return id;
      };`,
  });
  await page.waitForFunction(() => (window as any).subscribed === true, undefined, { timeout: 5_000 });
  return page;
}

/** Publishes `texts` from the page, one after the other; answers their ids. */
function say(page: Page, texts: string[]): Promise<string[]> {
  return page.evaluate(async (all) => {
    const ids: string[] = [];
    for (const text of all) ids.push(await (window as any).say(text));
    return ids;
  }, texts);
}

interface Got {
  readonly id: string;
  readonly channel: string;
  readonly from: { clientId: string; user?: string };
  readonly message: { text: string };
}

describe("two pages chatting with tokens from their backend", () => {
  it("each gets the other's messages once and in order, from its user, across token refreshes", async () => {
    const [annPage, bobPage] = [await chatPage("ann"), await chatPage("bob")];
    const clientIds = await Promise.all(
      [annPage, bobPage].map((p) => p.evaluate(() => (window as any).rt.clientId as string)),
    );
    const lines = (who: string, from: number) => [0, 1, 2, 3, 4].map((n) => `${who} ${from + n}`);

    // Both talk at once, then again once each page has refreshed its token on the live socket.
    const first = await Promise.all([say(annPage, lines("ann", 0)), say(bobPage, lines("bob", 0))]);
    for (const page of [annPage, bobPage]) {
      await page.waitForFunction(() => (window as any).tokens >= 2, undefined, {
        timeout: TOKEN_SECONDS * 1000 + 5_000,
      });
    }
    const second = await Promise.all([say(annPage, lines("ann", 5)), say(bobPage, lines("bob", 5))]);
    const sent = { ann: [...first[0], ...second[0]], bob: [...first[1], ...second[1]] };
    for (const page of [annPage, bobPage]) await page.waitForFunction(() => (window as any).got.length >= 10);
    await new Promise((r) => setTimeout(r, 300));

    const got = (page: Page) => page.evaluate(() => (window as any).got as Got[]);
    const [annGot, bobGot] = [await got(annPage), await got(bobPage)];
    // Exactly the other's ten, in the order they were said, with the ids their publish answered.
    expect(bobGot.map((m) => [m.id, m.channel, m.from, m.message.text])).toEqual(
      sent.ann.map((id, n) => [id, ROOM, { clientId: clientIds[0], user: "ann" }, `ann ${n}`]),
    );
    expect(annGot.map((m) => [m.id, m.channel, m.from, m.message.text])).toEqual(
      sent.bob.map((id, n) => [id, ROOM, { clientId: clientIds[1], user: "bob" }, `bob ${n}`]),
    );
    // One socket each for the whole chat: refreshed, never dropped.
    for (const page of [annPage, bobPage]) {
      const { errors, states } = await page.evaluate(() => ({
        errors: (window as any).errors,
        states: (window as any).states,
      }));
      expect({ errors, states }).toEqual({ errors: [], states: ["connecting", "open"] });
    }
    expect(backend.minted.ann).toBeGreaterThanOrEqual(2);
    expect(backend.minted.bob).toBeGreaterThanOrEqual(2);
    await screenshot(annPage, "realtime-token-chat-ann");
    await screenshot(bobPage, "realtime-token-chat-bob");
    await Promise.all([annPage, bobPage].map((p) => p.evaluate(() => (window as any).rt.close())));
    await Promise.all([annPage.close(), bobPage.close()]);
  }, 30_000);
});
