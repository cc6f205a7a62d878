import { defineConfig } from 'vitest/config';

// `make test-install`: installs that take many minutes under TCG, kept out of `make test`.
export default defineConfig({
  test: { include: ['test/install/**/*.test.ts'], fileParallelism: false, testTimeout: 3_600_000, hookTimeout: 60_000 },
});
