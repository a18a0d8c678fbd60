import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { EDGE_NODE_FLAGS } from "./servers.js";

/** A file of the repository, by its path from the root. */
function repoFile(path: string): string {
  return readFileSync(fileURLToPath(new URL(`../../${path}`, import.meta.url)), "utf8");
}

describe("the node's start commands", () => {
  it("give Node the flags the harness measures the node with, in every way the project starts a node", () => {
    const commands: Record<string, string | undefined> = {
      "npm start": (JSON.parse(repoFile("package.json")) as { scripts: Record<string, string> }).scripts.start,
      "npm start in apps/edge": (JSON.parse(repoFile("apps/edge/package.json")) as { scripts: Record<string, string> }).scripts.start,
      "the Dockerfile's CMD": repoFile("infra/Dockerfile")
        .split("\n")
        .filter((line) => line.startsWith("CMD "))
        .at(-1),
      "infra/local/up.sh": repoFile("infra/local/up.sh")
        .split("\n")
        .find((line) => line.includes('"$EDGE_MAIN"') && line.includes(" node ")),
    };
    expect(EDGE_NODE_FLAGS.length).toBeGreaterThan(0);
    for (const [where, command] of Object.entries(commands)) {
      expect(command, where).toBeDefined();
      for (const flag of EDGE_NODE_FLAGS) expect(command, where).toContain(flag);
    }
  });
});
