import { defineConfig } from 'vitest/config';

// End-to-end tests boot real guests under TCG on 2 cores: run test files one at a time, with long
// timeouts, so guests do not starve each other.
export default defineConfig({
  test: {
    // test/install holds the long installs: `make test-install` runs them with vitest.install.config.ts.
    include: ['test/unit/**/*.test.ts', 'test/e2e/**/*.test.ts'],
    fileParallelism: false,
    testTimeout: 20_000,
    hookTimeout: 60_000,
  },
});
