import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfig, startEdge } from "@plate/edge";
import type { EdgeNode } from "@plate/edge";

/** The plates every node of these tests is bootstrapped with (all scopes). */
export const KEYS = { acme: "acme-secret-0123456789abcdefghij" } as const;

/** A real edge node on 127.0.0.1 (a free port unless `PORT` is given), as `npm start` runs it. */
export interface Node {
  readonly url: string;
  readonly edge: EdgeNode;
  /** Stops the node (drains: WebSockets close 1001, SSE streams end) and deletes its data folder. */
  stop(): Promise<void>;
}

export async function startNode(env: Record<string, string> = {}): Promise<Node> {
  const dataDir = await mkdtemp(join(tmpdir(), "plate-client-test-"));
  const edge = await startEdge(
    loadConfig({
      PORT: "0",
      HOST: "127.0.0.1",
      DATA_DIR: dataDir,
      LOG_LEVEL: "silent",
      DEMO_PLATE: "false",
      BOOTSTRAP_PLATES: JSON.stringify(KEYS),
      ...env,
    }),
  );
  return {
    url: edge.url,
    edge,
    async stop() {
      await edge.close();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}
