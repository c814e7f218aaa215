import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Kubernetes tests run under test/k8s/vitest.k8s.config.ts (a real API server, one file at a time).
    exclude: ["test/k8s/**", "node_modules/**"],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: "forks",
    typecheck: { enabled: false },
  },
});
