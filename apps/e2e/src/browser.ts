import { mkdir } from "node:fs/promises";
import { createServer } from "node:http";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import type { Browser, Page } from "playwright-core";

/**
 * Debian's chromium (`apt-get install chromium`, done by .ci/run), or the one `CHROMIUM_PATH` names.
 * Flags: headless as root in a container (`--no-sandbox`), no GPU, and none of Chromium's own calls
 * home, which this machine's closed network refuses (Google's hosts, component updates, sync).
 */
export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const CHROMIUM_FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-quic",
  "--no-first-run",
  "--disable-component-update",
  "--disable-sync",
];

export function launchChromium(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM_PATH, headless: true, args: CHROMIUM_FLAGS });
}

/** Where screenshots go: `apps/e2e/test-artifacts/` (git-ignored; CI keeps it as an artifact). */
export const ARTIFACTS = fileURLToPath(new URL("../test-artifacts/", import.meta.url));

/** Saves a full-page screenshot as `test-artifacts/<name>.png`. */
export async function screenshot(page: Page, name: string): Promise<void> {
  await mkdir(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: `${ARTIFACTS}${name}.png`, fullPage: true });
}

/**
 * A web app on its own origin (another port of 127.0.0.1 than the node's), serving one empty page
 * with a log list that the tests' page scripts write into, so that screenshots show what arrived.
 */
export interface AppOrigin {
  readonly url: string;
  close(): Promise<void>;
}

const APP_PAGE = `<!doctype html><html><head><meta charset="utf-8"><title>An app on another origin</title>
<style>body{font:14px system-ui;margin:16px} li{font-family:monospace}</style></head>
<body><h1>An app on another origin</h1><p id="origin"></p><ol id="log"></ol>
<script>document.getElementById("origin").textContent = "origin: " + location.origin;
window.show = (text) => { const li = document.createElement("li"); li.textContent = text; document.getElementById("log").append(li); };</script>
</body></html>`;

export async function startAppOrigin(): Promise<AppOrigin> {
  const server: Server = createServer((_req, res) => {
    res.writeHead(200, { "Content-Type": "text/html; charset=utf-8" });
    res.end(APP_PAGE);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    // Another port than the node's is another origin: the browser applies CORS between them.
    url: `http://127.0.0.1:${port}/`,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
