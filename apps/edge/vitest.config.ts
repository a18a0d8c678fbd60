import { defineConfig } from "vitest/config";

/**
 * Files that flood a node on purpose (a tenant filling Redis, a 180 MB heap flood) take both cores
 * for tens of seconds: they run after every other file, one at a time, so that the tests whose
 * timing matters (failovers, leases) never share the machine with them.
 */
const FLOODS = ["src/noisy-tenant.test.ts", "src/history-budget.test.ts"];

export default defineConfig({
  test: {
    testTimeout: 20_000,
    hookTimeout: 20_000,
    projects: [
      {
        extends: true,
        test: { name: "edge", include: ["src/**/*.test.ts"], exclude: FLOODS, sequence: { groupOrder: 0 } },
      },
      {
        extends: true,
        test: { name: "floods", include: FLOODS, fileParallelism: false, sequence: { groupOrder: 1 } },
      },
    ],
  },
});
