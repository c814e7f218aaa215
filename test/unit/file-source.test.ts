// The file-mode snapshot source reports what it found to the gateway: problems by file and object, and how
// many files failed (not how many problems they hold).
import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
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

  it("a failed file keeps the rejections of the configuration still served in the report", async () => {
    const dir = mkdtempSync(join(tmpdir(), "phantomgate-file-source-"));
    dirs.push(dir);
    writeFileSync(join(dir, "route.yaml"), route("orphan", "nowhere"));
    const updates: SourceUpdate[] = [];
    const source = await startFileSource(dir, (update) => updates.push(update), pino({ level: "silent" }), {
      debounceMs: 10,
    });
    try {
      expect(updates[0]).toMatchObject({ fileFailures: 0, rejectedObjects: 1 });
      writeFileSync(join(dir, "zz-broken.yaml"), "a: [\n");
      await until(() => updates.length >= 2);
      expect(updates[1]?.snapshot).toBeUndefined();
      expect(updates[1]).toMatchObject({ fileFailures: 1, rejectedObjects: 1 });
      expect(updates[1]?.problems.map((problem) => problem.object ?? problem.file)).toEqual([
        join(dir, "zz-broken.yaml"),
        "ApiRoute default/orphan",
      ]);
    } finally {
      source.close();
    }
  });

  it("reloads when a manifest symlink's target outside the directory changes", async () => {
    const dir = mkdtempSync(join(tmpdir(), "phantomgate-file-source-"));
    const outside = mkdtempSync(join(tmpdir(), "phantomgate-file-source-target-"));
    dirs.push(dir, outside);
    writeFileSync(join(outside, "route.yaml"), route("linked", "first"));
    symlinkSync(join(outside, "route.yaml"), join(dir, "route.yaml"));
    const updates: SourceUpdate[] = [];
    const source = await startFileSource(dir, (update) => updates.push(update), pino({ level: "silent" }), {
      debounceMs: 10,
    });
    try {
      expect(updates[0]?.problems[0]?.message).toContain("default/first not found");
      await new Promise((resolve) => setTimeout(resolve, 300));
      writeFileSync(join(outside, "route.yaml"), route("linked", "second"));
      await until(() => updates.length >= 2, 5_000);
      expect(updates[1]?.problems[0]?.message).toContain("default/second not found");
    } finally {
      source.close();
    }
  });
});

/** An ApiRoute naming an AuthServer that does not exist (rejected: UnknownAuthServer). */
function route(name: string, authServer: string): string {
  return [
    "apiVersion: phantomgate.dev/v1alpha1",
    "kind: ApiRoute",
    `metadata: { name: ${name}, namespace: default }`,
    "spec:",
    `  authServerRef: { name: ${authServer} }`,
    "  rules:",
    "    - matches: [{ path: { value: /x } }]",
    "      authentication: { mode: phantom }",
    "      backendRefs: [{ url: 'http://127.0.0.1:1' }]",
    "",
  ].join("\n");
}

async function until(done: () => boolean, timeoutMs = 3_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!done()) {
    if (Date.now() > deadline) throw new Error("timed out");
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
