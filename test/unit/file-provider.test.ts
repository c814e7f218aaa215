// The file provider against real temporary directories: loading, per-file failures, and debounced watching.
import { mkdir, mkdtemp, rename, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  loadManifestDirectory,
  watchManifestDirectory,
  type ManifestWatcher,
} from "../../src/provider/file/index.ts";
import { maxManifestFileBytes } from "../../src/provider/file/load-manifests.ts";

let dir: string;
const cleanups: (() => unknown)[] = [];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "phantomgate-files-"));
});

afterEach(async () => {
  for (const cleanup of cleanups.splice(0)) await cleanup();
  await rm(dir, { recursive: true, force: true });
});

const policy = (name: string) =>
  `apiVersion: phantomgate.dev/v1alpha1\nkind: ScopePolicy\nmetadata: { name: ${name} }\n` +
  `spec: { domain: ${name}, scopes: [{ name: read }] }\n`;

function names(objects: readonly { object: unknown }[]): unknown[] {
  return objects.map((source) => (source.object as { metadata: { name: string } }).metadata.name);
}

describe("loadManifestDirectory", () => {
  it("reads *.yaml, *.yml and *.json in name order, every document with its origin", async () => {
    await writeFile(join(dir, "b.yaml"), `${policy("b1")}---\n${policy("b2")}---\n`);
    await writeFile(
      join(dir, "a.json"),
      JSON.stringify({ apiVersion: "v1", kind: "Secret", metadata: { name: "a" } }),
    );
    // The first document holds only a comment: skipped, but it keeps its number.
    await writeFile(join(dir, "c.yml"), `---\n# only a comment\n---\n${policy("c")}`);
    await writeFile(join(dir, "notes.txt"), policy("ignored"));
    await writeFile(join(dir, ".hidden.yaml"), policy("hidden"));
    await mkdir(join(dir, "nested.yaml"));
    await writeFile(join(dir, "nested.yaml", "inner.yaml"), policy("nested"));

    const loaded = await loadManifestDirectory(dir);

    expect(loaded.problems).toEqual([]);
    expect(names(loaded.objects)).toEqual(["a", "b1", "b2", "c"]);
    expect(loaded.objects.map((source) => source.origin)).toEqual([
      { file: join(dir, "a.json"), index: 0 },
      { file: join(dir, "b.yaml"), index: 0 },
      { file: join(dir, "b.yaml"), index: 1 },
      { file: join(dir, "c.yml"), index: 1 },
    ]);
  });

  it("follows symlinks, as ConfigMap volumes present their files", async () => {
    const data = await mkdtemp(join(tmpdir(), "phantomgate-data-"));
    cleanups.push(() => rm(data, { recursive: true, force: true }));
    await writeFile(join(data, "routes.yaml"), policy("linked"));
    await symlink(join(data, "routes.yaml"), join(dir, "routes.yaml"));
    await symlink(join(data, "missing.yaml"), join(dir, "dangling.yaml"));

    const loaded = await loadManifestDirectory(dir);

    expect(names(loaded.objects)).toEqual(["linked"]);
    // A link to nothing is not skipped without a word: what it pointed at may have held routes.
    expect(loaded.problems).toEqual([
      { file: join(dir, "dangling.yaml"), message: "symbolic link to a file that does not exist" },
    ]);
  });

  it("reports a directory without manifests, a name that is not UTF-8 and an unknown YAML tag", async () => {
    expect((await loadManifestDirectory(dir)).problems).toEqual([
      { file: dir, message: "no manifest files (*.yaml, *.yml, *.json) in this directory" },
    ]);
    await writeFile(join(dir, "routes.yaml.tmpl"), policy("template"));
    expect((await loadManifestDirectory(dir)).problems).toHaveLength(1);
    await writeFile(Buffer.from(`${dir}/bad-\xff.yaml`, "latin1"), policy("latin1"));
    await writeFile(join(dir, "tagged.yaml"), "apiVersion: v1\nkind: Secret\nmetadata:\n  name: !env NAME\n");
    const loaded = await loadManifestDirectory(dir);
    expect(loaded.objects).toEqual([]);
    expect(loaded.problems).toEqual([
      { file: join(dir, "bad-\ufffd.yaml"), message: "the file name is not UTF-8; rename the file" },
      { file: join(dir, "tagged.yaml"), message: "YAML problem at line 4, column 9: Unresolved tag" },
    ]);
  });

  it("reports a broken file as a problem of that file only, without quoting its content", async () => {
    await writeFile(join(dir, "good.yaml"), policy("good"));
    await writeFile(
      join(dir, "secret.yaml"),
      `${policy("also-dropped")}---\napiVersion: v1\nkind: Secret\nstringData:\n  key: "hunter2-secret\n  : [\n`,
    );
    await writeFile(join(dir, "dup.json"), '{"kind": "Secret", "kind": "Secret"}');

    const loaded = await loadManifestDirectory(dir);

    expect(names(loaded.objects)).toEqual(["good"]);
    expect(loaded.problems.map((problem) => problem.file)).toEqual([
      join(dir, "dup.json"),
      join(dir, "secret.yaml"),
    ]);
    for (const problem of loaded.problems) expect(problem.message).toMatch(/^YAML syntax error at line \d+/);
    expect(JSON.stringify(loaded.problems)).not.toContain("hunter2");
  });

  it("never quotes source text that yaml appends to some syntax errors, and lists at most 10 per file", async () => {
    await writeFile(
      join(dir, "secret.yaml"),
      `apiVersion: v1\nkind: Secret\nmetadata: { name: s }\nstringData:\n  key: |x hunter2-secret\n`,
    );
    await writeFile(join(dir, "noise.yaml"), "a: b\n" + "  c\n  : : ]\n".repeat(100));

    const loaded = await loadManifestDirectory(dir);

    const secret = loaded.problems.filter((problem) => problem.file === join(dir, "secret.yaml"));
    expect(secret.map((problem) => problem.message)).toEqual([
      "YAML syntax error at line 5, column 9: Block scalar header includes extra characters",
      "YAML syntax error at line 5, column 11: Not a YAML token",
    ]);
    const noise = loaded.problems.filter((problem) => problem.file === join(dir, "noise.yaml"));
    expect(noise).toHaveLength(11);
    expect(noise[10]?.message).toMatch(/^\d+ more YAML syntax errors not shown$/);
    expect(JSON.stringify(loaded.problems)).not.toContain("hunter2");
  });

  it("reports an alias bomb (billion laughs) as a problem of its file, and still loads the others", async () => {
    await writeFile(join(dir, "good.yaml"), policy("good"));
    const levels = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    const bomb = levels
      .map((level, i) =>
        i === 0
          ? `${level}: &${level} [lol, lol, lol, lol, lol, lol, lol, lol, lol]`
          : `${level}: &${level} [${Array.from({ length: 9 }, () => `*${levels[i - 1] ?? ""}`).join(", ")}]`,
      )
      .join("\n");
    await writeFile(join(dir, "laughs.yaml"), `${bomb}\n`);

    const loaded = await loadManifestDirectory(dir);

    expect(names(loaded.objects)).toEqual(["good"]);
    expect(loaded.problems).toEqual([
      {
        file: join(dir, "laughs.yaml"),
        message: expect.stringMatching(/^document 1: Excessive alias count/) as unknown,
      },
    ]);
  });

  it("reports a file that is not UTF-8 instead of replacing its bytes", async () => {
    await writeFile(join(dir, "good.yaml"), policy("good"));
    await writeFile(
      join(dir, "latin1.yaml"),
      Buffer.concat([Buffer.from(policy("latin")), Buffer.from("# caf\xe9\n", "latin1")]),
    );

    const loaded = await loadManifestDirectory(dir);

    expect(names(loaded.objects)).toEqual(["good"]);
    expect(loaded.problems).toEqual([
      { file: join(dir, "latin1.yaml"), message: "not UTF-8 text (first invalid byte on line 5)" },
    ]);
  });

  it("reports a file over the size limit without parsing it", async () => {
    await writeFile(join(dir, "good.yaml"), policy("good"));
    await writeFile(join(dir, "huge.yaml"), `${policy("huge")}#${"x".repeat(maxManifestFileBytes)}\n`);

    const loaded = await loadManifestDirectory(dir);

    expect(names(loaded.objects)).toEqual(["good"]);
    expect(loaded.problems).toEqual([
      {
        file: join(dir, "huge.yaml"),
        message: expect.stringMatching(/^file is larger than 16 MiB/) as unknown,
      },
    ]);
  });

  it("loads a file of 150,000 documents without overflowing the stack", async () => {
    await writeFile(join(dir, "many.yaml"), "{ kind: x }\n---\n".repeat(150_000));

    const loaded = await loadManifestDirectory(dir);

    expect(loaded.problems).toEqual([]);
    expect(loaded.objects).toHaveLength(150_000);
  });

  it("reports a symlink loop instead of skipping it silently", async () => {
    await writeFile(join(dir, "good.yaml"), policy("good"));
    await symlink("loop.yaml", join(dir, "loop.yaml"));

    const loaded = await loadManifestDirectory(dir);

    expect(names(loaded.objects)).toEqual(["good"]);
    expect(loaded.problems).toEqual([{ file: join(dir, "loop.yaml"), message: "cannot read file: ELOOP" }]);
  });

  it("rejects when the directory does not exist", async () => {
    await expect(loadManifestDirectory(join(dir, "missing"))).rejects.toThrow(/ENOENT/);
  });
});

describe("watchManifestDirectory", () => {
  function startWatch(onChange: () => void | Promise<void>, debounceMs = 50, pollMs = 1000): ManifestWatcher {
    const watcher = watchManifestDirectory(dir, onChange, { debounceMs, pollMs });
    cleanups.push(() => watcher.close());
    return watcher;
  }

  async function waitFor(condition: () => boolean, timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!condition()) {
      if (Date.now() > deadline) throw new Error("condition not met in time");
      await sleep(10);
    }
  }

  it("calls onChange once for a burst of writes", async () => {
    let calls = 0;
    startWatch(() => {
      calls += 1;
    });
    await writeFile(join(dir, "a.yaml"), policy("a"));
    await writeFile(join(dir, "b.yaml"), policy("b"));
    await writeFile(join(dir, "a.yaml"), policy("a2"));

    await waitFor(() => calls > 0);
    await sleep(200);
    expect(calls).toBe(1);
  });

  it("notices an editor-style save (write a temporary file, rename it over the original)", async () => {
    await writeFile(join(dir, "routes.yaml"), policy("before"));
    let loaded: unknown[] = [];
    startWatch(async () => {
      loaded = names((await loadManifestDirectory(dir)).objects);
    });
    await writeFile(join(dir, ".routes.yaml.swp"), policy("after"));
    await rename(join(dir, ".routes.yaml.swp"), join(dir, "routes.yaml"));

    await waitFor(() => loaded.includes("after"));
    expect(loaded).toEqual(["after"]);
  });

  it("never overlaps calls: a change during a slow reload schedules one more run", async () => {
    let running = 0;
    let maxRunning = 0;
    let calls = 0;
    startWatch(async () => {
      running += 1;
      maxRunning = Math.max(maxRunning, running);
      calls += 1;
      await sleep(300);
      running -= 1;
    }, 20);
    await writeFile(join(dir, "a.yaml"), policy("a"));
    await waitFor(() => calls === 1);
    await writeFile(join(dir, "b.yaml"), policy("b"));

    await waitFor(() => calls === 2);
    await waitFor(() => running === 0);
    expect(maxRunning).toBe(1);
  });

  it("keeps watching the path when the directory is removed and created again", async () => {
    let loaded: unknown[] | string = [];
    startWatch(
      async () => {
        loaded = await loadManifestDirectory(dir).then(
          (result) => names(result.objects),
          (error: unknown) => String(error),
        );
      },
      20,
      50,
    );
    await rm(dir, { recursive: true });
    await waitFor(() => typeof loaded === "string" && loaded.includes("ENOENT"));
    await mkdir(dir);
    await writeFile(join(dir, "a.yaml"), policy("recreated"));
    await waitFor(() => Array.isArray(loaded) && loaded.includes("recreated"));

    // The new directory is watched itself, not only polled.
    await writeFile(join(dir, "b.yaml"), policy("later"));
    await waitFor(() => Array.isArray(loaded) && loaded.includes("later"));
  });

  it("stops calling after close", async () => {
    let calls = 0;
    const watcher = startWatch(() => {
      calls += 1;
    });
    await writeFile(join(dir, "a.yaml"), policy("a"));
    watcher.close();
    await sleep(200);
    await writeFile(join(dir, "b.yaml"), policy("b"));
    await sleep(200);
    expect(calls).toBe(0);
  });
});

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
