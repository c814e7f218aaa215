// Gateway metrics on a prom-client registry owned by the gateway instance (never the global one).
//
// The per-request ones (requests by route/method/status/decision, in-flight requests) are plain counters here,
// read by prom-client at scrape time: prom-client's labels()/inc() build and hash a label object per call,
// which was ~1 µs of every request. The latency histogram is counted the same way: prom-client's observe() hashes
// its label object on every call, another ~1.5 µs; here a route keeps its own bucket counts.
import { Counter, Gauge, type Registry } from "prom-client";

export type Decision = "allow" | "deny" | "error" | "abort";

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
  readonly auditErrors: Counter<"code">;
  readonly auditDropped: Counter;
  readonly responsesCut: Counter<"route" | "reason">;
  readonly connectionsDropped: Counter;
}

type RequestLabels = Record<"route" | "method" | "status" | "decision", string>;

interface RequestCount {
  readonly labels: RequestLabels;
  n: number;
}

const decisionIndex: Record<Decision, number> = { allow: 0, deny: 1, error: 2, abort: 3 };

/** Upper bounds (seconds) of the latency histogram's buckets; +Inf is implied. */
const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** One route's counters and its latency histogram. */
interface RouteCounts {
  readonly route: string;
  /** method → (status × 4 + decision) → count: found without building a key per request. */
  readonly byMethod: Map<string, Map<number, RequestCount>>;
  /** Observations per bucket, not cumulative; the last slot is +Inf. */
  readonly buckets: Float64Array;
  sum: number;
}

/** A histogram metric in prom-client's registry whose values come from `routes` at scrape time. */
function latencyHistogram(
  routes: ReadonlyMap<string, RouteCounts>,
): Parameters<Registry["registerMetric"]>[0] {
  const name = "phantomgate_request_duration_seconds";
  const help = "Time from request start to response end, by route.";
  const get = () => {
    const values: { labels: Record<string, string | number>; value: number; metricName: string }[] = [];
    for (const { route, buckets, sum } of routes.values()) {
      let cumulative = 0;
      for (let i = 0; i < buckets.length; i++) {
        cumulative += buckets[i] ?? 0;
        values.push({
          labels: { le: i < LATENCY_BUCKETS.length ? (LATENCY_BUCKETS[i] ?? 0) : "+Inf", route },
          value: cumulative,
          metricName: `${name}_bucket`,
        });
      }
      values.push({ labels: { route }, value: sum, metricName: `${name}_sum` });
      values.push({ labels: { route }, value: cumulative, metricName: `${name}_count` });
    }
    return { name, help, type: "histogram" as const, values, aggregator: "sum" as const };
  };
  // The registry only calls get() and reads name, help and type; the rest of prom-client's Metric is not used.
  return { name, help, type: "histogram", aggregator: "sum", get } as unknown as Parameters<
    Registry["registerMetric"]
  >[0];
}

/** The bucket index of `seconds`: the first bound ≥ it, else the +Inf slot. */
function bucketOf(seconds: number): number {
  let i = 0;
  while (i < LATENCY_BUCKETS.length && seconds > (LATENCY_BUCKETS[i] ?? 0)) i++;
  return i;
}

function createRequestMetrics(registry: Registry): RequestMetrics {
  const registers = [registry];
  const routes = new Map<string, RouteCounts>();
  let inflight = 0;
  new Counter({
    name: "phantomgate_requests_total",
    help: "Requests handled, by route, method, status and decision (allow, deny, error, abort).",
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
  registry.registerMetric(latencyHistogram(routes));
  return {
    started() {
      inflight += 1;
    },
    finished(route, method, status, decision, seconds) {
      inflight -= 1;
      let counts = routes.get(route);
      if (counts === undefined) {
        counts = {
          route,
          byMethod: new Map(),
          buckets: new Float64Array(LATENCY_BUCKETS.length + 1),
          sum: 0,
        };
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
      const bucket = bucketOf(seconds);
      counts.buckets[bucket] = (counts.buckets[bucket] ?? 0) + 1;
      counts.sum += seconds;
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
    auditErrors: new Counter({
      name: "phantomgate_audit_write_errors_total",
      help: "Failed writes of audit lines, by error code (e.g. ENOSPC; EPIPE: the reader is gone, later lines are lost).",
      labelNames: ["code"],
      registers,
    }),
    responsesCut: new Counter({
      name: "phantomgate_responses_cut_total",
      help: "Responses cut after their status line went out (counted with that status in phantomgate_requests_total), by route and reason (PG_ERR_UPSTREAM_TIMEOUT, PG_ERR_UPSTREAM_UNAVAILABLE, PG_ERR_CLIENT_CLOSED, PG_ERR_CLIENT_TIMEOUT).",
      labelNames: ["route", "reason"],
      registers,
    }),
    connectionsDropped: new Counter({
      name: "phantomgate_connections_dropped_total",
      help: "Client connections closed on arrival because the public port held --max-connections already.",
      registers,
    }),
    auditDropped: new Counter({
      name: "phantomgate_audit_lines_dropped_total",
      help: "Audit lines dropped because the audit target fell too far behind (32 MiB waiting).",
      registers,
    }),
  };
}
