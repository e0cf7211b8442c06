import { defineConfig } from "vitest/config";

// End-to-end tests: a real browser (Debian chromium via playwright-core) against a real
// viewer at $VIEWER_URL. See ui/README.md for how to run them.
export default defineConfig({
  test: {
    environment: "node",
    include: ["e2e/**/*.e2e.test.ts"],
    fileParallelism: false,
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
