// `make crds`: writes crds/*.yaml from the zod schemas (src/resources/crd-definitions.ts builds them).
// `--check` writes nothing and exits 1 when a file differs, for CI.
import { readFile, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { crdGenerateCommand, renderCrdFiles } from "../src/resources/crd-definitions.ts";

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const checkOnly = process.argv.includes("--check");

const stale: string[] = [];
for (const file of renderCrdFiles()) {
  const target = join(repoRoot, file.path);
  const current = await readFile(target, "utf8").catch(() => undefined);
  if (current === file.content) continue;
  stale.push(file.path);
  if (!checkOnly) await writeFile(target, file.content);
}

if (checkOnly && stale.length > 0) {
  process.stderr.write(`out of date: ${stale.join(", ")}; run ${crdGenerateCommand}\n`);
  process.exitCode = 1;
} else {
  process.stdout.write(stale.length === 0 ? "crds/ is up to date\n" : `wrote ${stale.join(", ")}\n`);
}
