// Test harness: runs `phantomgate gateway` as a real child process on free ports and collects its output.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

const bin = fileURLToPath(new URL("../../bin/phantomgate.js", import.meta.url));

export interface GatewayProcess {
  readonly child: ChildProcess;
  readonly port: number;
  readonly adminPort: number;
  readonly url: string;
  readonly adminUrl: string;
  readonly configDir: string;
  readonly auditFile: string;
  /** Everything the process wrote to stdout and stderr so far. */
  output(): string;
  /** Sends SIGTERM and waits for exit; resolves with the exit code. */
  stop(): Promise<number | null>;
}

export function makeConfigDir(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), "phantomgate-config-"));
  for (const [name, content] of Object.entries(files)) writeFileSync(join(dir, name), content);
  return dir;
}

/** A started `phantomgate gateway` child: its ports, its output, and a way to stop it. */
export interface SpawnedGateway {
  readonly child: ChildProcess;
  readonly port: number;
  readonly adminPort: number;
  output(): string;
  /** Sends `signal` (SIGTERM by default) and waits for exit; resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Spawns `phantomgate gateway <args>` and waits for its "gateway listening" log line. */
export async function spawnGateway(
  args: readonly string[],
  options: { env?: Record<string, string>; unset?: readonly string[]; label?: string } = {},
): Promise<SpawnedGateway> {
  const label = options.label ?? "gateway";
  const unset = new Set(options.unset);
  const env = Object.fromEntries(
    Object.entries({ ...process.env, ...options.env }).filter(([name]) => !unset.has(name)),
  );
  const child = spawn(process.execPath, [bin, "gateway", ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env,
  });
  let output = "";
  child.stderr.on("data", (chunk: Buffer) => {
    output += chunk.toString("utf8");
  });
  const ports = await new Promise<{ port: number; adminPort: number }>((resolve, reject) => {
    const timer = setTimeout(() => {
      // A gateway that neither started nor exited must not outlive the test.
      child.kill("SIGKILL");
      reject(new Error(`${label} did not start:\n${output}`));
    }, 20_000);
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`${label} exited with ${code ?? "signal"}:\n${output}`));
    });
    createInterface({ input: child.stdout }).on("line", (line) => {
      output += `${line}\n`;
      try {
        const parsed = JSON.parse(line) as { msg?: string; port?: number; adminPort?: number };
        if (
          parsed.msg === "gateway listening" &&
          parsed.port !== undefined &&
          parsed.adminPort !== undefined
        ) {
          clearTimeout(timer);
          child.removeAllListeners("exit");
          resolve({ port: parsed.port, adminPort: parsed.adminPort });
        }
      } catch {
        // not a log line
      }
    });
  });
  return {
    child,
    ...ports,
    output: () => output,
    stop: (signal = "SIGTERM") =>
      new Promise((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) {
          resolve(child.exitCode);
          return;
        }
        child.once("exit", (code) => resolve(code));
        child.kill(signal);
      }),
  };
}

export async function startGatewayProcess(
  configDir: string,
  extraArgs: readonly string[] = [],
  env: Record<string, string> = {},
): Promise<GatewayProcess> {
  const auditFile = join(mkdtempSync(join(tmpdir(), "phantomgate-audit-")), "audit.log");
  const gateway = await spawnGateway(
    [
      "--config",
      configDir,
      "--host",
      "127.0.0.1",
      "--port",
      "0",
      "--admin-port",
      "0",
      "--audit-log",
      auditFile,
      ...extraArgs,
    ],
    { env },
  );
  return {
    ...gateway,
    url: `http://127.0.0.1:${gateway.port}`,
    adminUrl: `http://127.0.0.1:${gateway.adminPort}`,
    configDir,
    auditFile,
    stop: () => gateway.stop(),
  };
}
