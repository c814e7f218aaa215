// `phantomgate demo` refuses bad flags and a config path it cannot read before it starts anything: a usage error
// (exit 2) with a hint, not a failure after the authorization server and the APIs came up.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { demoCommand } from "../../src/cli/commands/demo.ts";
import { MemoryStream } from "../helpers/memory-stream.ts";

async function runDemo(...argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const stdout = new MemoryStream();
  const stderr = new MemoryStream();
  const code = await demoCommand.run(argv, { stdout, stderr, env: {} });
  return { code, stdout: stdout.text, stderr: stderr.text };
}

describe("phantomgate demo usage errors", () => {
  it("an unknown flag: exit 2 with the help hint", async () => {
    const { code, stdout, stderr } = await runDemo("--bogus");
    expect(code).toBe(2);
    expect(stderr).toMatch(
      /^phantomgate demo: .*'--bogus'.*\nRun 'phantomgate demo --help' for the flags\.\n$/,
    );
    expect(stdout).toBe("");
  });

  it("a config directory that does not exist, or a file: exit 2 naming --config, before anything starts", async () => {
    const dir = mkdtempSync(join(tmpdir(), "phantomgate-demo-"));
    try {
      const missing = join(dir, "nowhere");
      const absent = await runDemo("--config", missing);
      expect(absent.code).toBe(2);
      expect(absent.stderr).toBe(`phantomgate demo: --config: cannot read ${missing}: no such directory\n`);
      expect(absent.stdout).toBe("");
      const file = join(dir, "routes.yaml");
      writeFileSync(file, "kind: ApiRoute\n");
      const notDir = await runDemo("--config", file);
      expect(notDir.code).toBe(2);
      expect(notDir.stderr).toBe(`phantomgate demo: --config: cannot read ${file}: not a directory\n`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
