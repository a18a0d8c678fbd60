import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfig } from "../config.js";
import type { SettingName } from "../config.js";
import { startEdge } from "../node.js";
import type { EdgeNode } from "../node.js";

/** Secrets of the plates every test node is bootstrapped with (all scopes). */
export const KEYS = {
  acme: "acme-secret-0123456789abcdefghij",
  globex: "globex-secret-0123456789abcdefgh",
} as const;

export const ADMIN_TOKEN = "admin-token-for-tests-0123456789";

/** A real edge node listening on a free port of 127.0.0.1, with its own data folder. */
export interface TestNode {
  readonly node: EdgeNode;
  readonly url: string;
  /** `ws://` form of `url`. */
  readonly wsUrl: string;
  readonly dataDir: string;
  /** Stops the node; the data folder is kept until `cleanup` (for restart tests). */
  stop(): Promise<void>;
  /** Stops the node and deletes its data folder. */
  cleanup(): Promise<void>;
}

/**
 * Starts a node exactly as `npm start` would (config from environment variables, the embedded
 * broker and store), with `env` overriding the test defaults.
 */
export async function startTestNode(
  env: Partial<Record<SettingName, string>> = {},
  dataDir?: string,
): Promise<TestNode> {
  const dir = dataDir ?? (await mkdtemp(join(tmpdir(), "plate-test-")));
  const config = loadConfig({
    PORT: "0",
    HOST: "127.0.0.1",
    DATA_DIR: dir,
    LOG_LEVEL: "silent",
    DEMO_PLATE: "false",
    ADMIN_TOKEN,
    BOOTSTRAP_PLATES: JSON.stringify(KEYS),
    ...env,
  });
  const node = await startEdge(config);
  let stopped: Promise<void> | undefined;
  const stop = () => (stopped ??= node.close());
  return {
    node,
    url: node.url,
    wsUrl: node.url.replace(/^http/, "ws"),
    dataDir: dir,
    stop,
    async cleanup() {
      await stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** POSTs a publish with `key`; answers the status and parsed body. */
export async function publish(
  base: string,
  plate: string,
  channel: string,
  message: unknown,
  key: string = KEYS.acme,
): Promise<{ status: number; body: any }> {
  const res = await fetch(`${base}/${plate}/pubsub/${channel}/publish`, {
    method: "POST",
    headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
    body: JSON.stringify({ message }),
  });
  return { status: res.status, body: await res.json() };
}

export { eventually } from "@plate/testing";
