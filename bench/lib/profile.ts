// Summarises a V8 .cpuprofile (from `node --cpu-prof`): self time by function and by file or package.
// Also runnable on its own: `node bench/lib/profile.ts FILE.cpuprofile [TOP]`.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

interface ProfileNode {
  readonly id: number;
  readonly callFrame: {
    readonly functionName: string;
    readonly url: string;
    readonly lineNumber: number;
  };
  readonly hitCount?: number;
  readonly children?: readonly number[];
}

interface CpuProfile {
  readonly nodes: readonly ProfileNode[];
  readonly samples?: readonly number[];
  readonly timeDeltas?: readonly number[];
  readonly startTime: number;
  readonly endTime: number;
}

export interface HotSpot {
  readonly name: string;
  readonly selfMs: number;
  readonly selfPercent: number;
  /** For functions: the callers that self time came through, heaviest first (at most three). */
  readonly callers?: readonly string[];
}

export interface ProfileSummary {
  readonly totalMs: number;
  /** Share of samples not idle (the process was running JavaScript, GC or native code). */
  readonly busyPercent: number;
  readonly byFunction: readonly HotSpot[];
  readonly byFile: readonly HotSpot[];
}

const repoRoot = fileURLToPath(new URL("../../", import.meta.url));

/** A short place name: repo-relative path, `pkg:<package>` for dependencies, `node:<module>` for Node internals. */
export function placeOf(url: string): string {
  if (url === "") return "(native/vm)";
  const path = url.startsWith("file://") ? fileURLToPath(url) : url;
  const nodeModules = path.lastIndexOf("/node_modules/");
  if (nodeModules !== -1) {
    const rest = path.slice(nodeModules + "/node_modules/".length).split("/");
    const name = rest[0]?.startsWith("@") === true ? `${rest[0]}/${rest[1] ?? ""}` : (rest[0] ?? "");
    return `pkg:${name}`;
  }
  if (path.startsWith(repoRoot)) return path.slice(repoRoot.length);
  if (!path.startsWith("/")) return `node:${path.replace(/^node:/, "")}`;
  return path;
}

function top(map: Map<string, number>, totalMs: number, count: number): HotSpot[] {
  return [...map.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, count)
    .map(([name, selfMs]) => ({ name, selfMs, selfPercent: (selfMs / totalMs) * 100 }));
}

export function summariseProfile(file: string, count = 25): ProfileSummary {
  const profile = JSON.parse(readFileSync(file, "utf8")) as CpuProfile;
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const selfMs = new Map<number, number>();
  const samples = profile.samples ?? [];
  const deltas = profile.timeDeltas ?? [];
  // Each sample's duration is the gap to the next sample (µs).
  for (let index = 0; index < samples.length; index += 1) {
    const id = samples[index];
    if (id === undefined) continue;
    const duration = (deltas[index + 1] ?? 0) / 1000;
    selfMs.set(id, (selfMs.get(id) ?? 0) + duration);
  }
  const totalMs = [...selfMs.values()].reduce((sum, value) => sum + value, 0);
  const parents = new Map<number, ProfileNode>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parents.set(child, node);
  const nameOf = (node: ProfileNode): string => {
    const { functionName, url, lineNumber } = node.callFrame;
    return url === "" ? functionName : `${functionName || "(anonymous)"} ${placeOf(url)}:${lineNumber + 1}`;
  };
  const callers = new Map<string, Map<string, number>>();
  const functions = new Map<string, number>();
  const files = new Map<string, number>();
  let idleMs = 0;
  for (const [id, ms] of selfMs) {
    const node = byId.get(id);
    if (node === undefined) continue;
    const { functionName, url } = node.callFrame;
    if (functionName === "(idle)") {
      idleMs += ms;
      continue;
    }
    const name = nameOf(node);
    functions.set(name, (functions.get(name) ?? 0) + ms);
    const parent = parents.get(id);
    if (parent !== undefined) {
      const perCaller = callers.get(name) ?? new Map<string, number>();
      const callerName = nameOf(parent);
      perCaller.set(callerName, (perCaller.get(callerName) ?? 0) + ms);
      callers.set(name, perCaller);
    }
    const fileKey = url === "" ? functionName : placeOf(url);
    files.set(fileKey, (files.get(fileKey) ?? 0) + ms);
  }
  return {
    totalMs,
    busyPercent: totalMs === 0 ? 0 : ((totalMs - idleMs) / totalMs) * 100,
    byFunction: top(functions, totalMs, count).map((spot) => ({
      ...spot,
      callers: [...(callers.get(spot.name) ?? new Map<string, number>()).entries()]
        .sort((a, b) => b[1] - a[1])
        .slice(0, 3)
        .map(([caller, callerMs]) => `${caller} (${((callerMs / totalMs) * 100).toFixed(1)} %)`),
    })),
    byFile: top(files, totalMs, Math.ceil(count / 2)),
  };
}

export function formatProfile(summary: ProfileSummary): string {
  const lines = [
    `profile: ${(summary.totalMs / 1000).toFixed(1)} s sampled, ${summary.busyPercent.toFixed(1)} % busy (not idle)`,
    "",
    "self time by function (% of all samples, idle included):",
  ];
  for (const spot of summary.byFunction) {
    lines.push(`  ${spot.selfPercent.toFixed(1).padStart(5)} %  ${spot.name}`);
    if (spot.callers !== undefined && spot.callers.length > 0) {
      lines.push(`           ← ${spot.callers.join(", ")}`);
    }
  }
  lines.push("", "self time by file / package:");
  for (const spot of summary.byFile) {
    lines.push(`  ${spot.selfPercent.toFixed(1).padStart(5)} %  ${spot.name}`);
  }
  return lines.join("\n");
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const file = process.argv[2];
  if (file === undefined) {
    process.stderr.write("usage: node bench/lib/profile.ts FILE.cpuprofile [TOP]\n");
    process.exit(2);
  }
  console.log(formatProfile(summariseProfile(file, Number(process.argv[3] ?? "25"))));
}
