// wrk (C, epoll) as the closed-loop load generator: it needs a fraction of the CPU a Node.js client needs, so
// the load core is not what limits the node:http baseline. Found on PATH, installed with apt-get when allowed,
// or reported missing so the driver can fall back to its own generator.
import { spawn, spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { track } from "./processes.ts";
import type { LoadResult } from "./protocol.ts";

const script = fileURLToPath(new URL("../wrk-report.lua", import.meta.url));

function wrkVersion(): string | undefined {
  const probe = spawnSync("wrk", ["--version"], { encoding: "utf8" });
  if (probe.error !== undefined) return undefined;
  // wrk prints its version and usage, and exits 1.
  return /wrk \S+/.exec(`${probe.stdout}${probe.stderr}`)?.[0];
}

/**
 * Returns wrk's version, installing it with apt-get first when it is missing, `install` is true, and we are
 * root on a Debian-like system; otherwise undefined with the reason logged through `log`.
 */
export function ensureWrk(install: boolean, log: (message: string) => void): string | undefined {
  const found = wrkVersion();
  if (found !== undefined) return found;
  const canInstall = process.getuid?.() === 0 && spawnSync("apt-get", ["--version"]).error === undefined;
  if (!install || !canInstall) {
    log(
      `wrk not found${install ? " and cannot be installed here (needs root and apt-get)" : " (BENCH_NO_INSTALL=1)"}: ` +
        "falling back to the built-in Node.js load generator, which needs more CPU on the load core. " +
        "Install wrk (Debian: apt-get install -y wrk) for the intended setup.",
    );
    return undefined;
  }
  log("wrk not found: installing it with apt-get (set BENCH_NO_INSTALL=1 to skip)");
  const update = spawnSync("apt-get", ["update", "-qq"], { stdio: "inherit" });
  const installed =
    update.status === 0 &&
    spawnSync("apt-get", ["install", "-y", "-qq", "wrk"], { stdio: "inherit" }).status === 0;
  const version = installed ? wrkVersion() : undefined;
  if (version === undefined)
    log("installing wrk failed: falling back to the built-in Node.js load generator");
  return version;
}

export interface WrkJob {
  readonly port: number;
  readonly path: string;
  readonly authorizations: readonly string[];
  readonly connections: number;
  readonly durationMs: number;
  /** Core to pin wrk to, or undefined for no pinning. */
  readonly core: number | undefined;
  /** Directory for the Authorization file. */
  readonly temp: string;
}

interface WrkReport {
  readonly requests: number;
  readonly duration_us: number;
  readonly errors: Record<"connect" | "read" | "write" | "status" | "timeout", number>;
  readonly latency_us: Record<"mean" | "max" | "p50" | "p90" | "p99" | "p999", number>;
}

let fileCounter = 0;

/** One wrk run (1 thread); durations are whole seconds for wrk, rounded up from `durationMs`. */
export async function runWrk(job: WrkJob): Promise<LoadResult> {
  fileCounter += 1;
  const authFile = join(job.temp, `wrk-auth-${fileCounter}.txt`);
  writeFileSync(authFile, job.authorizations.map((value) => `${value}\n`).join(""));
  const seconds = Math.max(1, Math.ceil(job.durationMs / 1000));
  const wrkArgs = [
    "-t1",
    `-c${job.connections}`,
    `-d${seconds}s`,
    "--timeout",
    "10s",
    "-s",
    script,
    `http://127.0.0.1:${job.port}${job.path}`,
  ];
  const [command, args] =
    job.core === undefined ? ["wrk", wrkArgs] : ["taskset", ["-c", String(job.core), "wrk", ...wrkArgs]];
  const output = await new Promise<string>((resolve, reject) => {
    const child = spawn(command, args, {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, WRK_AUTH_FILE: authFile },
    });
    track(child);
    let text = "";
    child.stdout.on("data", (chunk: Buffer) => (text += chunk.toString("utf8")));
    child.stderr.on("data", (chunk: Buffer) => (text += chunk.toString("utf8")));
    child.once("error", reject);
    child.once("exit", (code) =>
      code === 0 ? resolve(text) : reject(new Error(`wrk exited ${code}: ${text}`)),
    );
  });
  const line = output.split("\n").find((candidate) => candidate.startsWith('{"wrk":true'));
  if (line === undefined) throw new Error(`wrk printed no report:\n${output}`);
  const report = JSON.parse(line) as WrkReport;
  const windowMs = report.duration_us / 1000;
  const errors = Object.values(report.errors).reduce((sum, value) => sum + value, 0);
  const us = report.latency_us;
  const statuses: Record<string, number> = { "2xx/3xx": report.requests - report.errors.status };
  for (const [kind, count] of Object.entries(report.errors)) if (count > 0) statuses[kind] = count;
  return {
    id: 0,
    completed: report.requests,
    completedTotal: report.requests,
    windowMs,
    rps: (report.requests / windowMs) * 1000,
    errors,
    statuses,
    latency: {
      count: report.requests,
      mean: us.mean / 1000,
      p50: us.p50 / 1000,
      p90: us.p90 / 1000,
      p99: us.p99 / 1000,
      p999: us.p999 / 1000,
      max: us.max / 1000,
    },
  };
}
