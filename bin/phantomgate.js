#!/usr/bin/env node
// Entry point: Node.js 24 runs the TypeScript sources directly (type stripping, no build step).
import { setFlagsFromString } from "node:v8";

// A proxy allocates short-lived objects per request; V8's allocation-site pretenuring misjudges them as long
// lived and promotes them, turning young-generation pauses of ~1 ms into 25–50 ms (docs/benchmarks.md).
// Set before any application code loads.
setFlagsFromString("--no-allocation-site-pretenuring");

const { main } = await import("../src/cli/main.ts");
process.exitCode = await main(process.argv.slice(2));
