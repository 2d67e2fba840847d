import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts', '{agent,coordinator,protocol,interpreters,sim,cli,net}/**/*.test.ts'],
    setupFiles: ['./runtime/polyfill.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Integration tests start real processes; two cores are shared by all of them.
    fileParallelism: true,
    maxWorkers: 2,
  },
})
