// The Helm chart ships the CRDs in charts/phantomgate/crds/: they must be byte-for-byte the generated ones in
// crds/ (scripts/sync-chart-crds.sh copies them; `make chart-crds`).
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";

const root = join(import.meta.dirname, "../..");
const topLevel = join(root, "crds");
const inChart = join(root, "charts/phantomgate/crds");

const yamlFiles = (dir: string): string[] =>
  readdirSync(dir)
    .filter((name) => name.endsWith(".yaml"))
    .sort();

describe("chart CRDs", () => {
  it("are the same files as crds/ (run `make chart-crds` after `make crds`)", () => {
    expect(yamlFiles(inChart)).toEqual(yamlFiles(topLevel));
    expect(yamlFiles(topLevel).length).toBeGreaterThan(0);
  });

  it.each(yamlFiles(topLevel))("%s is identical (run `make chart-crds` after `make crds`)", (name) => {
    expect(readFileSync(join(inChart, name), "utf8")).toBe(readFileSync(join(topLevel, name), "utf8"));
  });

  it("holds only CRDs of the phantomgate.dev group", () => {
    for (const name of yamlFiles(inChart)) {
      const text = readFileSync(join(inChart, name), "utf8");
      expect(text, name).toMatch(/^kind: CustomResourceDefinition$/m);
      expect(text, name).toMatch(/^ {2}group: phantomgate\.dev$/m);
    }
  });
});
