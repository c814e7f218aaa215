// Golden tests for compile: every test/golden/<case>.in.yaml (and the demo examples/) against its
// <case>.out.json. `UPDATE_GOLDEN=1 npx vitest run test/unit/compile-golden.test.ts` rewrites the outputs.
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { compile, type SourceObject } from "../../src/compile/compile.ts";
import { loadManifestDirectory, parseManifestText } from "../../src/provider/file/index.ts";
import { snapshotSchema } from "../../src/snapshot/snapshot.ts";

const root = resolve(import.meta.dirname, "../..");
const goldenDir = join(root, "test/golden");
const update = process.env.UPDATE_GOLDEN === "1";

async function loadCase(name: string): Promise<SourceObject[]> {
  if (name === "demo-examples") {
    // The demo manifests are their own case, so the demo contract is pinned without a copy to drift.
    const loaded = await loadManifestDirectory(join(root, "examples"));
    expect(loaded.problems).toEqual([]);
    return loaded.objects.map((object) => ({
      object: object.object,
      origin: { file: relative(root, object.origin?.file ?? ""), index: object.origin?.index ?? 0 },
    }));
  }
  const file = `${name}.in.yaml`;
  const loaded = parseManifestText(readFileSync(join(goldenDir, file), "utf8"), file);
  expect(loaded.problems).toEqual([]);
  return loaded.objects;
}

const cases = [
  "demo-examples",
  ...readdirSync(goldenDir)
    .filter((file) => file.endsWith(".in.yaml"))
    .map((file) => file.slice(0, -".in.yaml".length))
    .sort(),
];

describe("compile golden files", () => {
  it.each(cases)("%s", async (name) => {
    const result = compile({ objects: await loadCase(name) });
    expect(() => snapshotSchema.parse(result.snapshot)).not.toThrow();

    const outFile = join(goldenDir, `${name}.out.json`);
    const actual = `${JSON.stringify(result, null, 2)}\n`;
    if (update) writeFileSync(outFile, actual);
    if (!existsSync(outFile)) {
      throw new Error(`${relative(root, outFile)} is missing; run with UPDATE_GOLDEN=1 to create it`);
    }
    expect(JSON.parse(actual)).toEqual(JSON.parse(readFileSync(outFile, "utf8")));
  });

  it("has no output without an input", () => {
    const outputs = readdirSync(goldenDir).filter((file) => file.endsWith(".out.json"));
    expect(outputs.map((file) => file.slice(0, -".out.json".length)).sort()).toEqual([...cases].sort());
  });
});
