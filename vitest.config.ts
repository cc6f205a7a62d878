import { defineConfig } from 'vitest/config';

// Two test files at a time, on any machine: the end-to-end tests boot TCG guests that mostly keep one
// core busy each and wait on them the rest of the time, so two files at once use a 2-core machine
// fully without starving each other (every wait in them is for a fact, not a duration).
export default defineConfig({
  test: {
    // test/install holds the long installs: `make test-install` runs them with vitest.install.config.ts.
    include: ['test/unit/**/*.test.ts', 'test/e2e/**/*.test.ts'],
    fileParallelism: true,
    maxWorkers: 2,
    // Generous: a test that starts the CLI or reads a few hundred MiB takes seconds on a quiet machine
    // and several times that beside CPU-heavy jobs (kiln verify of 8 artifacts passed 20 s at load 10).
    testTimeout: 120_000,
    hookTimeout: 60_000,
  },
});
