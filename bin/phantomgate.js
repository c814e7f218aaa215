#!/usr/bin/env node
// Entry point: Node.js 24 runs the TypeScript sources directly (type stripping, no build step).
import { enableCompileCache } from "node:module";
import { setFlagsFromString } from "node:v8";
import { commandLineFlags, mallocEnv, runTimeFlag } from "./start-up-settings.js";

// The long-running commands get three start-up settings (./start-up-settings.js) that only work when the process
// starts, so the launcher re-executes itself with them (process.execve: same pid, same stdio, no second process):
// - a 16 MiB young-generation semi-space. V8 sizes it from the machine's RAM (64 MiB on a 24 GiB host, i.e. a
//   128 MiB new space) and keeps it grown after one large allocation such as a 10,000-route snapshot; 16 MiB
//   keeps the gateway under 200 MB with that snapshot at no measurable cost in throughput (docs/benchmarks.md).
// - `--expose-gc`, so a gateway can hand a replaced large snapshot back at once (src/gateway/runtime/memory.ts)
//   instead of whenever V8 next needs room.
// - glibc malloc settings: MALLOC_ARENA_MAX=2, since glibc otherwise gives each libuv worker thread its own arena
//   that fills with fragments of file and TLS buffers; and a fixed 128 KiB MALLOC_MMAP_THRESHOLD_, since glibc
//   otherwise raises that threshold to the largest block ever freed (a multi-MiB snapshot buffer), after which
//   such buffers come from the heap and fragment it instead of being returned to the system when freed.
// A flag already given on the command line or in NODE_OPTIONS, or a variable already set, wins. A process started
// under the inspector (--inspect…) is not re-executed: the debugger would be attached to the process that goes
// away, so give the settings yourself there.
// `compile-cache` gets them too: V8 keys its cache by these flags, so it must be filled under the same ones.
const LONG_RUNNING = new Set(["gateway", "operator", "demo", "compile-cache"]);
const command = process.argv[2];
const given = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? "").split(/\s+/)];
const inspected = given.some((arg) => arg.startsWith("--inspect"));
if (
  command !== undefined &&
  LONG_RUNNING.has(command) &&
  !inspected &&
  typeof process.execve === "function"
) {
  // A flag counts as given when its name is, whatever its value.
  const has = (name) => given.some((arg) => arg === name || arg.startsWith(`${name}=`));
  const flags = commandLineFlags.filter((flag) => !has(flag.split("=")[0]));
  const env = Object.fromEntries(
    Object.entries(mallocEnv).filter(([name]) => process.env[name] === undefined),
  );
  if (flags.length > 0 || Object.keys(env).length > 0) {
    process.execve(
      process.execPath,
      [process.execPath, ...flags, ...process.execArgv, ...process.argv.slice(1)],
      { ...process.env, ...env },
    );
  }
}

// A proxy allocates short-lived objects per request; V8's allocation-site pretenuring misjudges them as long
// lived and promotes them, turning young-generation pauses of ~1 ms into 25–50 ms (docs/benchmarks.md).
// Set before any application code loads.
setFlagsFromString(runTimeFlag);

// Node's compile cache also keeps the type-stripped sources, so once warm the TypeScript stripper (a WebAssembly
// module that keeps ~20 MiB for the process's lifetime) is never loaded. NODE_COMPILE_CACHE picks the directory
// (the image ships one filled by `phantomgate compile-cache`); otherwise Node uses one under the system temp dir.
enableCompileCache();

const { main } = await import("../src/cli/main.ts");
process.exitCode = await main(process.argv.slice(2));
