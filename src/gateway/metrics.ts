// Gateway metrics on a prom-client registry owned by the gateway instance (never the global one).
//
// The per-request ones (requests by route/method/status/decision, in-flight requests) are plain counters here,
// read by prom-client at scrape time: prom-client's labels()/inc() build and hash a label object per call,
// which was ~1 µs of every request. The latency histogram keeps one label object per route.
import { Counter, Gauge, Histogram, type Registry } from "prom-client";

export type Decision = "allow" | "deny" | "error";

/** The per-request metrics, recorded once per request. */
export interface RequestMetrics {
  started(): void;
  finished(route: string, method: string, status: number, decision: Decision, seconds: number): void;
}

export interface GatewayMetrics {
  readonly requests: RequestMetrics;
  readonly snapshotInfo: Gauge<"revision">;
  readonly snapshotSwaps: Counter;
  readonly configErrors: Counter<"kind">;
  readonly configProblems: Gauge;
}

type RequestLabels = Record<"route" | "method" | "status" | "decision", string>;

interface RequestCount {
  readonly labels: RequestLabels;
  n: number;
}

const decisionIndex: Record<Decision, number> = { allow: 0, deny: 1, error: 2 };

/** One route's counters and its latency histogram labels. */
interface RouteCounts {
  readonly labels: { readonly route: string };
  /** method → (status × 4 + decision) → count: found without building a key per request. */
  readonly byMethod: Map<string, Map<number, RequestCount>>;
}

function createRequestMetrics(registry: Registry): RequestMetrics {
  const registers = [registry];
  const routes = new Map<string, RouteCounts>();
  let inflight = 0;
  new Counter({
    name: "phantomgate_requests_total",
    help: "Requests handled, by route, method, status and decision (allow, deny, error).",
    labelNames: ["route", "method", "status", "decision"],
    registers,
    collect() {
      this.reset();
      for (const route of routes.values()) {
        for (const byStatus of route.byMethod.values()) {
          for (const { labels, n } of byStatus.values()) this.inc(labels, n);
        }
      }
    },
  });
  new Gauge({
    name: "phantomgate_inflight_requests",
    help: "Requests being handled now.",
    registers,
    collect() {
      this.set(inflight);
    },
  });
  const duration = new Histogram({
    name: "phantomgate_request_duration_seconds",
    help: "Time from request start to response end, by route.",
    labelNames: ["route"],
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers,
  });
  return {
    started() {
      inflight += 1;
    },
    finished(route, method, status, decision, seconds) {
      inflight -= 1;
      let counts = routes.get(route);
      if (counts === undefined) {
        counts = { labels: { route }, byMethod: new Map() };
        routes.set(route, counts);
      }
      let byStatus = counts.byMethod.get(method);
      if (byStatus === undefined) {
        byStatus = new Map();
        counts.byMethod.set(method, byStatus);
      }
      const key = status * 4 + decisionIndex[decision];
      const entry = byStatus.get(key);
      if (entry === undefined) {
        byStatus.set(key, { labels: { route, method, status: String(status), decision }, n: 1 });
      } else {
        entry.n += 1;
      }
      duration.observe(counts.labels, seconds);
    },
  };
}

export function createGatewayMetrics(registry: Registry): GatewayMetrics {
  const registers = [registry];
  return {
    requests: createRequestMetrics(registry),
    snapshotInfo: new Gauge({
      name: "phantomgate_snapshot_info",
      help: "The revision of the snapshot being served (value 1).",
      labelNames: ["revision"],
      registers,
    }),
    snapshotSwaps: new Counter({
      name: "phantomgate_snapshot_swaps_total",
      help: "Snapshots swapped in.",
      registers,
    }),
    configErrors: new Counter({
      name: "phantomgate_config_errors_total",
      help: "Configuration loads that failed (file: unreadable or unparsable manifests; object: rejected objects).",
      labelNames: ["kind"],
      registers,
    }),
    configProblems: new Gauge({
      name: "phantomgate_config_problems",
      help: "Problems in the configuration last loaded (files and objects).",
      registers,
    }),
  };
}
