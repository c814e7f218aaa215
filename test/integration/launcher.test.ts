// bin/phantomgate.js re-executes the long-running commands with their start-up settings (V8 semi-space size,
// --expose-gc, glibc malloc settings) in the same process, and leaves settings the user gave alone.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { programModules } from "../../src/cli/commands/compile-cache.ts";
import { afterEach, describe, expect, it } from "vitest";
import { spawnGateway, type SpawnedGateway } from "../helpers/gateway-process.ts";

const root = resolve(import.meta.dirname, "../..");
const examples = join(root, "examples");
const args = [
  "--config",
  examples,
  "--host",
  "127.0.0.1",
  "--port",
  "0",
  "--admin-port",
  "0",
  "--audit-log",
  "off",
];

function startup(pid: number): { argv: string[]; env: Map<string, string> } {
  const argv = readFileSync(`/proc/${pid}/cmdline`, "utf8")
    .split("\0")
    .filter((arg) => arg !== "");
  const env = new Map(
    readFileSync(`/proc/${pid}/environ`, "utf8")
      .split("\0")
      .filter((entry) => entry.includes("="))
      .map((entry) => [entry.slice(0, entry.indexOf("=")), entry.slice(entry.indexOf("=") + 1)] as const),
  );
  return { argv, env };
}

let running: SpawnedGateway | undefined;
afterEach(async () => {
  await running?.stop();
  running = undefined;
});

describe.skipIf(process.platform !== "linux")("launcher", () => {
  it("restarts the gateway in place with the semi-space, gc and malloc settings", async () => {
    const gateway = await spawnGateway(args, {
      unset: ["NODE_OPTIONS", "MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_"],
    });
    running = gateway;
    const { argv, env: environment } = startup(gateway.child.pid ?? 0);
    expect(argv).toContain("--max-semi-space-size=16");
    expect(argv).toContain("--expose-gc");
    expect(argv.slice(-args.length - 1)).toEqual(["gateway", ...args]);
    expect(environment.get("MALLOC_ARENA_MAX")).toBe("2");
    expect(environment.get("MALLOC_MMAP_THRESHOLD_")).toBe("131072");
  });

  it("keeps a semi-space size from NODE_OPTIONS and malloc settings from the environment", async () => {
    const gateway = await spawnGateway(args, {
      env: {
        NODE_OPTIONS: "--max-semi-space-size=32",
        MALLOC_ARENA_MAX: "4",
        MALLOC_MMAP_THRESHOLD_: "65536",
      },
    });
    running = gateway;
    const { argv, env } = startup(gateway.child.pid ?? 0);
    expect(argv.some((arg) => arg.startsWith("--max-semi-space-size"))).toBe(false);
    expect(argv).toContain("--expose-gc");
    expect(env.get("NODE_OPTIONS")).toBe("--max-semi-space-size=32");
    expect(env.get("MALLOC_ARENA_MAX")).toBe("4");
    expect(env.get("MALLOC_MMAP_THRESHOLD_")).toBe("65536");
  });

  it("leaves a process started under the inspector as it is", async () => {
    const gateway = await spawnGateway(args, {
      env: { NODE_OPTIONS: "--inspect=127.0.0.1:0" },
      unset: ["MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_"],
    });
    running = gateway;
    const { argv, env } = startup(gateway.child.pid ?? 0);
    expect(argv.some((arg) => arg.startsWith("--max-semi-space-size") || arg === "--expose-gc")).toBe(false);
    expect(env.has("MALLOC_ARENA_MAX")).toBe(false);
  });
});

describe("phantomgate compile-cache", () => {
  it("lists every program module except the entry-point scripts", () => {
    const modules = programModules().map((file) => file.slice(root.length + 1));
    expect(modules).toContain("src/cli/main.ts");
    expect(modules).toContain("src/gateway/sources/control-plane-source.ts");
    expect(modules).toContain("src/operator/operator.ts");
    expect(modules.filter((file) => file.endsWith("-main.ts"))).toEqual([]);
  });

  it("fills the cache directory a later gateway reads", () => {
    const dir = mkdtempSync(join(tmpdir(), "phantomgate-compile-cache-"));
    const run = spawnSync(process.execPath, [join(root, "bin/phantomgate.js"), "compile-cache"], {
      env: { ...process.env, NODE_COMPILE_CACHE: dir },
      encoding: "utf8",
      timeout: 60_000,
    });
    expect(run.stderr).toBe("");
    expect(run.status).toBe(0);
    expect(run.stdout).toMatch(new RegExp(`^compile cache: ${programModules().length} modules in ${dir}/`));
    // One directory per Node version and V8 flag set: the launcher before it re-executes itself (the launcher
    // file only), and the program under the gateway's flags (every module).
    const sizes = readdirSync(dir).map((versionDir) => readdirSync(join(dir, versionDir)).length);
    expect(Math.max(...sizes)).toBeGreaterThan(100);
  });
});
