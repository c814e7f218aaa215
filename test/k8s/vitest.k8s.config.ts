// The Kubernetes tests: `vitest run --config test/k8s/vitest.k8s.config.ts`. A real etcd + kube-apiserver per
// test file (harness/cluster.ts); files run one at a time, since each starts its own control plane and the
// machine has 2 cores. Kept under test/ so tsconfig.json (and so type-checked lint) covers it.
import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

export default defineConfig({
  root: fileURLToPath(new URL("../..", import.meta.url)),
  test: {
    include: ["test/k8s/**/*.test.ts"],
    globalSetup: ["test/k8s/harness/global-setup.ts"],
    testTimeout: 120_000,
    hookTimeout: 300_000,
    fileParallelism: false,
    pool: "forks",
    typecheck: { enabled: false },
  },
});
