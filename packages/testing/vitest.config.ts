import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["src/**/*.test.ts"],
    // A cluster's masters report ok no sooner than 2 s after they start, and a failover takes seconds more.
    testTimeout: 20_000,
    hookTimeout: 20_000,
  },
});
