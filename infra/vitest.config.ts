import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["local/**/*.test.ts"],
    // Bringing five kinds of servers up (and Prometheus' first scrapes) takes seconds, not ms.
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
