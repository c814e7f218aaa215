// In-process measurements of the two CPU-bound steps of propagation, on the same generated objects the cluster
// gets: the operator's `compile()` of N ApiRoutes, and the gateway's handling of one snapshot line — JSON.parse,
// stream-message and snapshot validation (the JSON Schema check of src/snapshot/check.ts), building the serving state (router, backend rotations) and the
// reference swap — the same functions the processes run, timed without the network or the other processes.
// Optionally a CPU profile of each (node:inspector), summarised by bench/lib/profile.ts.
import { writeFileSync } from "node:fs";
import { Session } from "node:inspector/promises";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { compile, type CompileResult } from "../../src/compile/compile.ts";
import { RuntimeHolder } from "../../src/gateway/runtime/runtime-state.ts";
import { encodeStreamMessage, streamMessageSchema } from "../../src/operator/distribute/protocol.ts";
import { checkSnapshot, describeSnapshotIssues } from "../../src/snapshot/check.ts";
import type { Snapshot } from "../../src/snapshot/snapshot.ts";
import { formatProfile, summariseProfile } from "../lib/profile.ts";
import { median } from "../lib/stats.ts";
import { baseObjects, generatedRoutes, type FixtureOptions, type KubeObject } from "./objects.ts";

export interface CompileFigures {
  readonly objects: number;
  readonly routes: number;
  readonly rejected: number;
  readonly runsMs: readonly number[];
  readonly medianMs: number;
  readonly snapshotBytes: number;
}

export interface SwapFigures {
  readonly routes: number;
  readonly snapshotBytes: number;
  /** Medians over the runs, ms. */
  readonly parseMs: number;
  readonly validateMs: number;
  readonly buildMs: number;
  readonly totalMs: number;
  readonly totalRunsMs: readonly number[];
}

/** Every object of a cluster holding `routes` generated ApiRoutes (generation 1), as compile input. */
export function fixtureObjects(o: FixtureOptions, routes: number): KubeObject[] {
  return [...baseObjects(o), ...generatedRoutes(o, 0, routes, 1)];
}

function compileObjects(objects: readonly KubeObject[]): CompileResult {
  return compile({ objects: objects.map((object) => ({ object })) });
}

// The gateway's steps as named functions, so a profile attributes JSON.parse (a builtin, no frame of its own)
// and the validation to them rather than to an anonymous caller.
function parseStreamLine(line: string): unknown {
  return JSON.parse(line);
}

function validateSnapshotMessage(json: unknown): Snapshot {
  const message = streamMessageSchema.parse(json);
  if (message.type !== "snapshot") throw new Error("not a snapshot message");
  const checked = checkSnapshot(message.snapshot);
  if (!checked.ok) throw new Error(describeSnapshotIssues(checked.issues));
  return checked.snapshot;
}

/** Median of `runs` compiles after one unmeasured warm-up. */
export function measureCompile(o: FixtureOptions, routes: number, runs: number): CompileFigures {
  const objects = fixtureObjects(o, routes);
  const warm = compileObjects(objects);
  const runsMs: number[] = [];
  for (let run = 0; run < runs; run += 1) {
    const started = performance.now();
    compileObjects(objects);
    runsMs.push(performance.now() - started);
  }
  return {
    objects: objects.length,
    routes: warm.snapshot.routes.length,
    rejected: warm.perObjectResults.filter((result) => !result.accepted).length,
    runsMs,
    medianMs: median(runsMs),
    snapshotBytes: Buffer.byteLength(encodeStreamMessage({ type: "snapshot", snapshot: warm.snapshot })),
  };
}

/** The gateway's work for one snapshot line, step by step; `runs` measured after one warm-up. */
export function measureSwap(o: FixtureOptions, routes: number, runs: number): SwapFigures {
  const { snapshot } = compileObjects(fixtureObjects(o, routes));
  const line = encodeStreamMessage({ type: "snapshot", snapshot });
  const holder = new RuntimeHolder();
  const once = (): { parse: number; validate: number; build: number } => {
    const t0 = performance.now();
    const json = parseStreamLine(line);
    const t1 = performance.now();
    const parsed = validateSnapshotMessage(json);
    const t2 = performance.now();
    holder.swap(parsed);
    const t3 = performance.now();
    return { parse: t1 - t0, validate: t2 - t1, build: t3 - t2 };
  };
  once();
  const samples = Array.from({ length: runs }, once);
  const totals = samples.map((s) => s.parse + s.validate + s.build);
  return {
    routes: snapshot.routes.length,
    snapshotBytes: Buffer.byteLength(line),
    parseMs: median(samples.map((s) => s.parse)),
    validateMs: median(samples.map((s) => s.validate)),
    buildMs: median(samples.map((s) => s.build)),
    totalMs: median(totals),
    totalRunsMs: totals,
  };
}

/** A `gc()` without --expose-gc on the command line (the flag set at run time, the function from a new context). */
function exposeGc(): () => void {
  setFlagsFromString("--expose-gc");
  return runInNewContext("gc") as () => void;
}

/**
 * Heap a gateway keeps for one snapshot of `routes` routes: the validated snapshot plus the serving state built
 * from it, measured as heapUsed after full GCs with and without them held (the line itself excluded).
 */
export function measureRetainedHeap(o: FixtureOptions, routes: number): number {
  const gc = exposeGc();
  const { snapshot } = compileObjects(fixtureObjects(o, routes));
  const line = encodeStreamMessage({ type: "snapshot", snapshot });
  const holder = new RuntimeHolder();
  gc();
  gc();
  const before = process.memoryUsage().heapUsed;
  holder.swap(validateSnapshotMessage(parseStreamLine(line)));
  gc();
  gc();
  const after = process.memoryUsage().heapUsed;
  // Keeps the holder (and the line, measured in both) alive up to here.
  if (holder.current === undefined || line.length === 0) throw new Error("unreachable");
  return after - before;
}

/** CPU profile of `runs` calls of `work`, written to `dir` and summarised. */
export async function profileWork(
  name: string,
  dir: string,
  runs: number,
  work: () => void,
): Promise<string> {
  const session = new Session();
  session.connect();
  try {
    await session.post("Profiler.enable");
    await session.post("Profiler.setSamplingInterval", { interval: 200 });
    await session.post("Profiler.start");
    for (let run = 0; run < runs; run += 1) work();
    const { profile } = await session.post("Profiler.stop");
    const file = join(dir, `${name}.cpuprofile`);
    writeFileSync(file, JSON.stringify(profile));
    return `${file}\n${formatProfile(summariseProfile(file, 15))}`;
  } finally {
    session.disconnect();
  }
}

/** Profiles compile and the gateway-side snapshot handling on `routes` routes. */
export async function profileInProcess(o: FixtureOptions, routes: number, dir: string): Promise<string> {
  const objects = fixtureObjects(o, routes);
  const compileReport = await profileWork("compile", dir, 3, () => {
    compileObjects(objects);
  });
  const { snapshot } = compileObjects(objects);
  const line = encodeStreamMessage({ type: "snapshot", snapshot });
  const holder = new RuntimeHolder();
  const swapReport = await profileWork("gateway-swap", dir, 5, () => {
    holder.swap(validateSnapshotMessage(parseStreamLine(line)));
  });
  return [
    `compile of ${routes} ApiRoutes (3 runs): ${compileReport}`,
    "",
    `gateway snapshot handling, ${routes} routes (5 runs): ${swapReport}`,
  ].join("\n");
}
