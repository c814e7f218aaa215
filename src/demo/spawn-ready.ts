// Starts a demo component as its own Node.js process and waits for the one-line JSON `{"ready":true,…}` it
// prints when listening, so the demo's numbers are not flattered by sharing the gateway's event loop.
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { WATCH_PARENT_ENV } from "./parent-watch.ts";

export interface ReadyChild {
  readonly child: ChildProcess;
  readonly ready: Record<string, unknown>;
  stop(): Promise<void>;
}

export function spawnReady(script: string, args: readonly string[], timeoutMs = 30_000): Promise<ReadyChild> {
  // The child's stdin is a pipe this process never writes to: it closes when this process exits, however it
  // exits, and the child stops then (parent-watch.ts).
  const child = spawn(process.execPath, [script, ...args], {
    stdio: ["pipe", "pipe", "inherit"],
    env: { ...process.env, [WATCH_PARENT_ENV]: "1" },
  });
  const stop = (): Promise<void> =>
    new Promise((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) {
        resolve();
        return;
      }
      child.once("exit", () => resolve());
      child.kill("SIGTERM");
      setTimeout(() => child.kill("SIGKILL"), 5_000).unref();
    });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      void stop();
      reject(new Error(`${script} did not become ready within ${timeoutMs} ms`));
    }, timeoutMs);
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      reject(
        new Error(
          `${script} exited before it was ready (code ${code ?? "none"}, signal ${signal ?? "none"})`,
        ),
      );
    });
    const lines = createInterface({ input: child.stdout });
    lines.on("line", (line) => {
      let parsed: unknown;
      try {
        parsed = JSON.parse(line);
      } catch {
        return;
      }
      if (typeof parsed === "object" && parsed !== null && (parsed as { ready?: unknown }).ready === true) {
        clearTimeout(timer);
        child.removeAllListeners("exit");
        resolve({ child, ready: parsed as Record<string, unknown>, stop });
      }
    });
  });
}
