#!/usr/bin/env node
import { ConfigError, loadConfig } from "./config.js";
import { createLogger } from "./log.js";
import { startEdge } from "./node.js";
import type { EdgeNode } from "./node.js";
import type { PlateId } from "@plate/protocol";

/** The plate a first start on the embedded default creates, so a newcomer can publish at once. */
const DEMO_PLATE_ID = "demo" as PlateId;

async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig(process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`plate: bad setting ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const log = createLogger(config.logLevel);
  const node = await startEdge(config, { log });
  log.info("listening", { url: node.url, broker: config.redisUrl === undefined ? "embedded" : "redis" });
  if (config.redisUrl === undefined && config.demoPlate) await createDemo(node);

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info("draining", { signal, timeoutMs: config.drainTimeoutMs });
    node.close().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error("drain failed", { error: String(err) });
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
}

/** On a first start (no plates at all), creates plate `demo` and prints how to use it. */
async function createDemo(node: EdgeNode): Promise<void> {
  const { tenancy } = node.services;
  if ((await tenancy.listPlates()).length > 0) return;
  const { key } = await tenancy.createPlate({ id: DEMO_PLATE_ID, name: "Demo" });
  const base = node.url;
  // Printed once, to the terminal of the person who started the node; it is the only copy.
  process.stdout.write(
    [
      "",
      "  Plate is running on the embedded default. A demo plate was created:",
      "",
      `    plate: ${DEMO_PLATE_ID}`,
      `    key:   ${key.secret}`,
      "",
      "  Subscribe (in one terminal):",
      `    curl -N -H "Authorization: Bearer ${key.secret}" ${base}/${DEMO_PLATE_ID}/pubsub/alerts/subscribe`,
      "",
      "  Publish (in another):",
      `    curl -X POST -H "Authorization: Bearer ${key.secret}" -H "Content-Type: application/json" \\`,
      `      -d '{"message":{"text":"hello"}}' ${base}/${DEMO_PLATE_ID}/pubsub/alerts/publish`,
      "",
      ...(node.services.config.consoleEnabled ? ["  Or both from a browser, with the key pasted in:", `    ${base}/console`, ""] : []),
      "  Only a hash of the key is stored: save it now, it is not shown again.",
      "",
    ].join("\n") + "\n",
  );
}

main().catch((err: unknown) => {
  process.stderr.write(`plate: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
