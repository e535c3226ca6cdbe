import { defineConfig } from 'vitest/config';

// Three tiers (test/README.md). unit: hermetic, any user, parallel. integration: root, real mounts, cgroups,
// netns and crun on this host, no VM; parallel (each file works in its own temp dirs and ids). e2e: QEMU VMs
// and containerd, one file at a time (2 cores, TCG).
export default defineConfig({
  test: {
    projects: [
      { test: { name: 'unit', include: ['test/unit/**/*.test.ts'], testTimeout: 30_000 } },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          testTimeout: 120_000,
          hookTimeout: 300_000,
          pool: 'forks',
        },
      },
      {
        test: {
          name: 'e2e',
          include: ['test/e2e/**/*.test.ts'],
          testTimeout: 600_000,
          hookTimeout: 900_000,
          pool: 'forks',
          poolOptions: { forks: { singleFork: true } },
        },
      },
    ],
  },
});
