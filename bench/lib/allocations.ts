// Summarises a V8 sampling heap profile (the inspector's HeapProfiler.stopSampling result, taken with the objects
// that were collected included): bytes allocated per request, by the function that allocated them.
import { placeOf } from "./profile.ts";

interface HeapProfileNode {
  readonly id: number;
  readonly callFrame: {
    readonly functionName: string;
    readonly url: string;
    readonly lineNumber: number;
  };
  /** Bytes this node allocated itself, as V8 estimates them from the samples (already scaled up). */
  readonly selfSize: number;
  readonly children: readonly HeapProfileNode[];
}

export interface SamplingHeapProfile {
  readonly head: HeapProfileNode;
}

export interface AllocationSpot {
  readonly name: string;
  readonly bytesPerRequest: number;
}

export interface AllocationSummary {
  readonly requests: number;
  readonly bytesPerRequest: number;
  readonly byFunction: readonly AllocationSpot[];
  readonly byFile: readonly AllocationSpot[];
}

function top(map: Map<string, number>, requests: number, count: number): AllocationSpot[] {
  return [...map.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, count)
    .map(([name, bytes]) => ({ name, bytesPerRequest: bytes / requests }));
}

/** Bytes per request over `requests` requests served while the profile was sampling. */
export function summariseAllocations(
  profile: SamplingHeapProfile,
  requests: number,
  count = 20,
): AllocationSummary {
  const functions = new Map<string, number>();
  const files = new Map<string, number>();
  let total = 0;
  const stack: HeapProfileNode[] = [profile.head];
  for (let node = stack.pop(); node !== undefined; node = stack.pop()) {
    stack.push(...node.children);
    if (node.selfSize === 0) continue;
    total += node.selfSize;
    const { functionName, url, lineNumber } = node.callFrame;
    const name =
      url === "" ? functionName : `${functionName || "(anonymous)"} ${placeOf(url)}:${lineNumber + 1}`;
    functions.set(name, (functions.get(name) ?? 0) + node.selfSize);
    const file = url === "" ? functionName : placeOf(url);
    files.set(file, (files.get(file) ?? 0) + node.selfSize);
  }
  const per = Math.max(1, requests);
  return {
    requests,
    bytesPerRequest: total / per,
    byFunction: top(functions, per, count),
    byFile: top(files, per, Math.ceil(count / 2)),
  };
}

export function formatAllocations(summary: AllocationSummary): string {
  const lines = [
    `${Math.round(summary.bytesPerRequest)} bytes allocated per request (${summary.requests} requests sampled)`,
    "",
    "bytes per request by the function that allocated them:",
  ];
  for (const spot of summary.byFunction) {
    lines.push(`  ${String(Math.round(spot.bytesPerRequest)).padStart(6)}  ${spot.name}`);
  }
  lines.push("", "by file / package:");
  for (const spot of summary.byFile) {
    lines.push(`  ${String(Math.round(spot.bytesPerRequest)).padStart(6)}  ${spot.name}`);
  }
  return lines.join("\n");
}
