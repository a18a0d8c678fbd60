import { defineConfig } from "vitest/config";

/**
 * Files that flood a node on purpose (a tenant filling Redis, a 180 MB heap flood) take both cores
 * for tens of seconds: they run after every other file, one at a time, so that the tests whose
 * timing matters (failovers, leases) never share the machine with them.
 */
const FLOODS = ["src/noisy-tenant.test.ts", "src/history-budget.test.ts"];

/**
 * Files run two at a time. Vitest's default is one fewer than the cores, so one at a time on the
 * 2-core machines CI runs on; these files mostly wait on sockets and timers (the suite used 1.4
 * cores at two at a time, and took 105 s instead of about 200).
 */
const EDGE_WORKERS = 2;

export default defineConfig({
  test: {
    testTimeout: 20_000,
    hookTimeout: 20_000,
    projects: [
      {
        extends: true,
        test: { name: "edge", include: ["src/**/*.test.ts"], exclude: FLOODS, maxWorkers: EDGE_WORKERS, sequence: { groupOrder: 0 } },
      },
      {
        extends: true,
        test: { name: "floods", include: FLOODS, fileParallelism: false, sequence: { groupOrder: 1 } },
      },
    ],
  },
});
