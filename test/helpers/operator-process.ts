// Test harness: `phantomgate operator` as a real child process, its log in a file, started when it prints its
// "operator started" line (which carries the ports it bound).
import { spawn, type ChildProcess } from "node:child_process";
import { createWriteStream } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

const bin = fileURLToPath(new URL("../../bin/phantomgate.js", import.meta.url));
const repoRoot = fileURLToPath(new URL("../..", import.meta.url));

export interface SpawnedOperator {
  readonly identity: string;
  readonly child: ChildProcess;
  readonly logFile: string;
  readonly snapshotPort: number;
  readonly metricsPort: number;
  /** Sends `signal` (SIGTERM by default; SIGKILL after `forceAfterMs`) and waits for exit. */
  stop(signal?: NodeJS.Signals, forceAfterMs?: number): Promise<void>;
}

/** Spawns `phantomgate operator --kubeconfig K --identity I <args>`, logging to `<logDir>/<identity>.log`. */
export async function spawnOperator(options: {
  readonly identity: string;
  readonly kubeconfig: string;
  readonly logDir: string;
  readonly args: readonly string[];
  readonly startTimeoutMs?: number;
}): Promise<SpawnedOperator> {
  const { identity } = options;
  const logFile = join(options.logDir, `${identity}.log`);
  const log = createWriteStream(logFile, { flags: "a" });
  const args = [bin, "operator", "--kubeconfig", options.kubeconfig, "--identity", identity, ...options.args];
  const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"], cwd: repoRoot });
  child.stderr.pipe(log);
  const ports = await new Promise<{ snapshotPort: number; metricsPort: number }>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`operator ${identity} did not start; log: ${logFile}`)),
      options.startTimeoutMs ?? 90_000,
    );
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`operator ${identity} exited (${code ?? signal ?? "?"}); log: ${logFile}`));
    });
    // Keeps reading stdout for the process's life: a full pipe would block it.
    createInterface({ input: child.stdout }).on("line", (line) => {
      log.write(`${line}\n`);
      if (!line.includes('"operator started"')) return;
      clearTimeout(timer);
      child.removeAllListeners("exit");
      resolve(JSON.parse(line) as { snapshotPort: number; metricsPort: number });
    });
  });
  return {
    identity,
    child,
    logFile,
    snapshotPort: ports.snapshotPort,
    metricsPort: ports.metricsPort,
    stop: (signal = "SIGTERM", forceAfterMs = 20_000) =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) {
          resolve();
          return;
        }
        const force = setTimeout(() => child.kill("SIGKILL"), forceAfterMs);
        child.once("exit", () => {
          clearTimeout(force);
          resolve();
        });
        child.kill(signal);
      }),
  };
}
