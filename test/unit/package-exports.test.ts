// package.json's exports map points only at modules `npm run build` emits: each `./dist/…js` target maps back
// (through tsconfig.build.json's outDir and rootDir) to a source file the build includes.
import { existsSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { describe, expect, it } from "vitest";

const root = join(import.meta.dirname, "../..");
const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as {
  exports: Record<string, unknown>;
};
const build = JSON.parse(readFileSync(join(root, "tsconfig.build.json"), "utf8")) as {
  compilerOptions: { outDir: string; rootDir: string };
  include: string[];
};

/** Every file target of an export entry, through nested conditions. */
function targets(entry: unknown): string[] {
  if (typeof entry === "string") return [entry];
  if (entry !== null && typeof entry === "object") return Object.values(entry).flatMap(targets);
  return [];
}

/** The source file `npm run build` compiles into `target`, or undefined when no source can. */
function sourceOf(target: string): string | undefined {
  const out = join(root, build.compilerOptions.outDir);
  const emitted = relative(out, join(root, target));
  if (emitted.startsWith("..") || !emitted.endsWith(".js")) return undefined;
  const source = join(root, build.compilerOptions.rootDir, emitted.replace(/\.js$/, ".ts"));
  const included = build.include.some((dir) => !relative(join(root, dir), source).startsWith(".."));
  return included && existsSync(source) ? source : undefined;
}

describe("package exports", () => {
  it("keeps the documented phantomgate/sdk entry", () => {
    expect(pkg.exports["./sdk"]).toBe("./dist/src/sdk/index.js");
  });

  it.each(Object.entries(pkg.exports))("%s maps to a source file the build emits", (_name, entry) => {
    const files = targets(entry);
    expect(files.length).toBeGreaterThan(0);
    for (const target of files) expect(sourceOf(target), target).toBeDefined();
  });
});
