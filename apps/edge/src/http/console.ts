import { readFileSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Hono } from "hono";
import { PlateError } from "@plate/protocol";
import { CONSOLE_PAGE } from "./console-page.js";

/**
 * The console (`GET /console`): one page that subscribes, publishes and shows errors by their
 * codes, built on `@plate/client`, whose ES modules the node also serves under
 * `/console/client/` (so a page anywhere can `import { subscribePath } from
 * "<node>/console/client/index.js"`). Nothing on the page reaches the node but what the page
 * itself sends with the key or path typed into it.
 */
export function consoleRoutes(): Hono {
  const files = clientFiles();
  const app = new Hono();
  app.get("/", (c) => c.html(CONSOLE_PAGE, 200, { "Cache-Control": "no-cache" }));
  app.get("/client/:file", (c) => {
    const body = files.get(c.req.param("file"));
    if (body === undefined) throw new PlateError("not_found", "No such file of the client.");
    return c.body(body, 200, { "Content-Type": "text/javascript; charset=utf-8", "Cache-Control": "no-cache" });
  });
  return app;
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
