// The conformance suite (its own CLI finds no test files with vitest 4, so
// its runner is named here) and our test of the official client. Both
// read the server's URL from CONFORMANCE_TEST_URL.
import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: [
      "node_modules/@durable-streams/server-conformance-tests/dist/test-runner.js",
      "client.test.mjs",
    ],
    // The default would leave out everything under node_modules.
    exclude: [],
    testTimeout: 30_000,
    hookTimeout: 30_000,
  },
});
