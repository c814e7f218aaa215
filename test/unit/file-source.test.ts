// The file-mode snapshot source reports what it found to the gateway: problems by file and object, and how
// many files failed (not how many problems they hold).
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { startFileSource, type SourceUpdate } from "../../src/gateway/sources/file-source.ts";

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

describe("file source", () => {
  it("counts failed files, not problems, and keeps the last good snapshot out of a failed load", async () => {
    const dir = mkdtempSync(join(tmpdir(), "phantomgate-file-source-"));
    dirs.push(dir);
    // 30 lines of YAML errors in one file, one error in another.
    writeFileSync(
      join(dir, "many.yaml"),
      Array.from({ length: 30 }, (_, i) => `key${i}: [unclosed\n`).join(""),
    );
    writeFileSync(join(dir, "one.yaml"), "a: [\n");
    const updates: SourceUpdate[] = [];
    const source = await startFileSource(dir, (update) => updates.push(update), pino({ level: "silent" }), {
      debounceMs: 10,
    });
    source.close();
    const first = updates[0];
    expect(first?.snapshot).toBeUndefined();
    expect(first?.fileFailures).toBe(2);
    expect(first?.problems.length).toBeGreaterThan(2);
    expect(new Set(first?.problems.map((problem) => problem.file))).toEqual(
      new Set([join(dir, "many.yaml"), join(dir, "one.yaml")]),
    );
  });
});
