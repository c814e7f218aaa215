// Child processes of the benchmark: spawned pinned to a core with taskset, tracked so every one of them is
// stopped on exit, Ctrl-C or a crash of the driver, and inspected through /proc (CPU time, RSS).
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { createWriteStream, mkdirSync, readFileSync, type WriteStream } from "node:fs";
import { join } from "node:path";
import { availableParallelism } from "node:os";
import { createInterface } from "node:readline";

const children = new Set<ChildProcess>();
let pinningEnabled = true;

/** Whether `taskset` (util-linux) is usable and the machine has at least two cores. */
export function checkPinning(): { ok: true } | { ok: false; reason: string } {
  if (availableParallelism() < 2) return { ok: false, reason: `only ${availableParallelism()} core(s)` };
  const probe = spawnSync("taskset", ["--version"], { encoding: "utf8" });
  if (probe.error !== undefined || probe.status !== 0) {
    return { ok: false, reason: "taskset not found (Debian: apt-get install -y util-linux)" };
  }
  return { ok: true };
}

export function setPinning(enabled: boolean): void {
  pinningEnabled = enabled;
}

/** Pins every thread of an existing process (e.g. the driver itself) to `core`. */
export function pinProcess(pid: number, core: number): void {
  if (!pinningEnabled) return;
  const result = spawnSync("taskset", ["-a", "-p", "-c", String(core), String(pid)], { encoding: "utf8" });
  if (result.status !== 0) throw new Error(`taskset -p ${pid} failed: ${result.stderr}`);
}

export interface Spawned {
  readonly name: string;
  readonly child: ChildProcess;
  readonly pid: number;
  /** The parsed line that signalled readiness. */
  readonly ready: Record<string, unknown>;
  /** Last lines of stdout and stderr, for diagnostics. */
  tail(): string;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves on exit. */
  stop(graceMs?: number): Promise<void>;
  /** Resolves when the process exits on its own. */
  readonly exited: Promise<number | null>;
}

export interface SpawnOptions {
  readonly name: string;
  /** Core to pin to (ignored when pinning is off). */
  readonly core: number;
  /** Arguments after the node executable (node flags, script, script arguments). */
  readonly args: readonly string[];
  /** Returns true for the stdout JSON line that means "ready". */
  readonly isReady: (line: Record<string, unknown>) => boolean;
  readonly timeoutMs?: number;
  readonly env?: Record<string, string>;
}

/** The file that keeps a child's output when BENCH_CHILD_OUTPUT names a directory (made when missing). */
function keepOutput(name: string): WriteStream | undefined {
  const dir = process.env["BENCH_CHILD_OUTPUT"];
  if (dir === undefined || dir === "") return undefined;
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${name}.log`);
  const stream = createWriteStream(file);
  // A failing log file must not end the benchmark: say so once and stop keeping that output.
  let reported = false;
  stream.on("error", (error) => {
    if (!reported) console.error(`BENCH_CHILD_OUTPUT: cannot write ${file}: ${error.message}`);
    reported = true;
  });
  return stream;
}

/** Spawns `node …args` under `taskset -c core` and waits for its ready line on stdout. */
export function spawnPinned(options: SpawnOptions): Promise<Spawned> {
  const command = pinningEnabled ? "taskset" : process.execPath;
  const args = pinningEnabled
    ? ["-c", String(options.core), process.execPath, ...options.args]
    : [...options.args];
  // taskset execs node in place, so the child's pid is node's pid (signals and /proc reach node itself).
  const child = spawn(command, args, {
    stdio: ["pipe", "pipe", "pipe"],
    env: { ...process.env, ...options.env },
  });
  children.add(child);
  const lines: string[] = [];
  const remember = (line: string): void => {
    lines.push(line);
    if (lines.length > 40) lines.shift();
  };
  const tail = (): string => lines.join("\n");
  const kept = keepOutput(options.name);
  createInterface({ input: child.stderr }).on("line", (line) => {
    remember(`[stderr] ${line}`);
    kept?.write(`[stderr] ${line}\n`);
  });
  const exited = new Promise<number | null>((resolve) => {
    child.once("exit", (code) => {
      kept?.end();
      children.delete(child);
      resolve(code);
    });
  });
  const stop = (graceMs = 5_000): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
    child.kill("SIGTERM");
    const killer = setTimeout(() => child.kill("SIGKILL"), graceMs);
    return exited.then(() => clearTimeout(killer));
  };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      void stop(500);
      reject(new Error(`${options.name} did not become ready in time:\n${tail()}`));
    }, options.timeoutMs ?? 30_000);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`${options.name} exited (${code ?? "signal"}) before it was ready:\n${tail()}`));
    });
    createInterface({ input: child.stdout }).on("line", (line) => {
      remember(line);
      kept?.write(`${line}\n`);
      let parsed: unknown;
      try {
        parsed = JSON.parse(line);
      } catch {
        return;
      }
      if (typeof parsed !== "object" || parsed === null) return;
      if (!options.isReady(parsed as Record<string, unknown>)) return;
      clearTimeout(timer);
      const pid = child.pid;
      if (pid === undefined) {
        reject(new Error(`${options.name} has no pid`));
        return;
      }
      resolve({
        name: options.name,
        child,
        pid,
        ready: parsed as Record<string, unknown>,
        tail,
        stop,
        exited,
      });
    });
  });
}

/** Tracks a child started elsewhere (e.g. the forked load generator) for cleanup. */
export function track(child: ChildProcess): void {
  children.add(child);
  child.once("exit", () => children.delete(child));
}

/** Stops every tracked child: SIGTERM, then SIGKILL for those still alive after `graceMs`. */
export async function stopAll(graceMs = 5_000): Promise<void> {
  const alive = [...children].filter((child) => child.exitCode === null && child.signalCode === null);
  await Promise.all(
    alive.map(
      (child) =>
        new Promise<void>((resolve) => {
          const killer = setTimeout(() => child.kill("SIGKILL"), graceMs);
          child.once("exit", () => {
            clearTimeout(killer);
            resolve();
          });
          child.kill("SIGTERM");
        }),
    ),
  );
}

/** Last resort at process exit (synchronous): SIGKILL whatever is left. */
export function killAllNow(): void {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  }
}

/** Clock ticks per second of /proc/<pid>/stat times (USER_HZ; 100 on Linux everywhere in practice). */
const USER_HZ = 100;

/**
 * User + system CPU seconds consumed so far by a process (0 when it is gone); with `withReaped`, plus those of
 * its children that have exited and been waited for (how a short-lived child such as wrk is accounted).
 */
export function cpuSeconds(pid: number, withReaped = false): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the command name (which may contain spaces) start at ") ": state is field 3, utime 14.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const own = Number(fields[11]) + Number(fields[12]);
    return (withReaped ? own + Number(fields[13]) + Number(fields[14]) : own) / USER_HZ;
  } catch {
    return 0;
  }
}

/** CPU seconds of this driver, its reaped children and every live tracked child: all the benchmark's own work. */
export function benchCpuSeconds(): number {
  let total = cpuSeconds(process.pid, true);
  for (const child of children) if (child.pid !== undefined) total += cpuSeconds(child.pid);
  return total;
}

/** Busy and total CPU seconds per core from /proc/stat. */
export function coreTimes(): { busy: number; total: number }[] {
  const cores: { busy: number; total: number }[] = [];
  for (const line of readFileSync("/proc/stat", "utf8").split("\n")) {
    const match = /^cpu(\d+) (.*)$/.exec(line);
    if (match === null) continue;
    const values = (match[2] ?? "").trim().split(/\s+/).map(Number);
    const total = values.reduce((sum, value) => sum + value, 0);
    const idle = (values[3] ?? 0) + (values[4] ?? 0);
    cores[Number(match[1])] = { busy: (total - idle) / USER_HZ, total: total / USER_HZ };
  }
  return cores;
}

/** VmRSS and VmHWM of a process in bytes, from /proc/<pid>/status. */
export function memory(pid: number): { rss: number; hwm: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (field: string): number =>
    Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? NaN);
  return { rss: kb("VmRSS") * 1024, hwm: kb("VmHWM") * 1024 };
}

/**
 * Runs `phantomgate compile-cache`, so every gateway and operator the benchmark starts reads the program from
 * Node's compile cache as the image's processes do (no type stripping at start, ~20 MiB less RSS). Returns its
 * one-line report.
 */
export function warmCompileCache(): string {
  const bin = new URL("../../bin/phantomgate.js", import.meta.url).pathname;
  const result = spawnSync(process.execPath, [bin, "compile-cache"], { encoding: "utf8", timeout: 120_000 });
  if (result.status !== 0) {
    throw new Error(`phantomgate compile-cache failed (${result.status ?? result.signal}): ${result.stderr}`);
  }
  return result.stdout.trim();
}
