// Messages between the benchmark driver and the load generator process (Node IPC, structured clone).

/** One measurement run. */
export interface LoadJob {
  readonly id: number;
  readonly port: number;
  /** Path plus query, e.g. `/hit/hello`. */
  readonly path: string;
  /**
   * Authorization header values to rotate through, one per request in order (request i uses
   * `authorizations[i % length]`). Empty: no Authorization header.
   */
  readonly authorizations: readonly string[];
  readonly connections: number;
  /**
   * `closed`: every connection sends its next request as soon as the last one is answered (max throughput).
   * `rate`: requests are scheduled at a fixed rate (open loop) over idle connections.
   * `burst`: connect every connection first, then write one request on each at once; no timing window.
   */
  readonly mode: "closed" | "rate" | "burst";
  /** Requests per second, for `rate`. */
  readonly rate?: number;
  /** Load before the measurement window (not recorded). */
  readonly warmupMs: number;
  /** The measurement window. */
  readonly durationMs: number;
  /** Status every response should have; anything else counts as an error. */
  readonly expectStatus: number;
}

export interface LatencySummary {
  readonly count: number;
  readonly mean: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly p999: number;
  readonly max: number;
}

export interface LoadResult {
  readonly id: number;
  /** Responses completed inside the measurement window. */
  readonly completed: number;
  /** Every response during warm-up, window and drain (for per-request ratios of server-side counters). */
  readonly completedTotal: number;
  readonly windowMs: number;
  readonly rps: number;
  /** Wrong status, connection reset or timeout, inside the window. */
  readonly errors: number;
  /** Status code → count, inside the window (burst: all). */
  readonly statuses: Record<string, number>;
  /** Milliseconds from writing the request to the last byte of the response. */
  readonly latency: LatencySummary;
  /** `rate` only: milliseconds from the scheduled send time (coordinated-omission corrected). */
  readonly scheduledLatency?: LatencySummary;
  /** `rate` only: requests that found no idle connection at their scheduled time. */
  readonly queued?: number;
}

export type GeneratorMessage =
  | { readonly type: "ready" }
  | { readonly type: "result"; readonly result: LoadResult }
  | { readonly type: "failed"; readonly id: number; readonly message: string };
