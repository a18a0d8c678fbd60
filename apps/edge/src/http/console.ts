import { createHash } from "node:crypto";
import { readFileSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Hono } from "hono";
import { PlateError } from "@plate/protocol";
import { CONSOLE_PAGE } from "./console-page.js";

/**
 * The console (`GET /console`): one page that opens a realtime connection, adds and removes
 * subscriptions on it, publishes, and shows each message tagged with the subscriptions it matched
 * and errors by their codes. It is built on `@plate/client`, whose ES modules the node also serves
 * under `/console/client/` (so a page anywhere can `import { realtimePath } from
 * "<node>/console/client/index.js"`). Nothing on the page reaches the node but what the page
 * itself sends with the key or path typed into it.
 */
export function consoleRoutes(): Hono {
  const files = clientFiles();
  const app = new Hono();
  app.use("*", async (c, next) => {
    c.header("Content-Security-Policy", CONSOLE_POLICY);
    c.header("X-Frame-Options", "DENY");
    await next();
  });
  app.get("/", (c) => c.html(CONSOLE_PAGE, 200, { "Cache-Control": "no-cache" }));
  app.get("/client/:file", (c) => {
    const body = files.get(c.req.param("file"));
    if (body === undefined) throw new PlateError("not_found", "No such file of the client.");
    return c.body(body, 200, { "Content-Type": "text/javascript; charset=utf-8", "Cache-Control": "no-cache" });
  });
  return app;
}

/**
 * What the console may do in a browser. Scripts: the client's modules from this node, and the
 * page's own inline module and style, allowed by their hashes, so nothing injected into the page
 * could run. Connections: any node over HTTP(S) or WebSocket, since the node typed into the page
 * may be another origin. Nothing else: no plugins, frames, forms, `<base>`, and no framing by
 * other pages (the page holds a key: clickjacking). `X-Frame-Options` says the same to browsers
 * that predate `frame-ancestors`.
 */
const CONSOLE_POLICY = [
  "default-src 'none'",
  `script-src 'self' ${inlineHashes("script")}`,
  `style-src ${inlineHashes("style")}`,
  "connect-src 'self' http: https: ws: wss:",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

/** The CSP sources of the page's inline `<tag>` elements: base64 SHA-256 of each one's text. */
function inlineHashes(tag: "script" | "style"): string {
  const elements = CONSOLE_PAGE.matchAll(new RegExp(`<${tag}[^>]*>([\\s\\S]*?)</${tag}>`, "g"));
  return [...elements].map(([, text = ""]) => `'sha256-${createHash("sha256").update(text, "utf8").digest("base64")}'`).join(" ");
}

/** The client's built modules (`*.js`, no maps or declarations), read once at start. */
function clientFiles(): Map<string, string> {
  const dir = dirname(fileURLToPath(import.meta.resolve("@plate/client")));
  const files = new Map<string, string>();
  for (const name of readdirSync(dir)) {
    if (name.endsWith(".js")) files.set(name, readFileSync(join(dir, name), "utf8").replace(/\n\/\/# sourceMappingURL=.*$/, "\n"));
  }
  return files;
}
