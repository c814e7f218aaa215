// Gateway metrics on a prom-client registry owned by the gateway instance (never the global one).
import { Counter, Gauge, Histogram, type Registry } from "prom-client";

export interface GatewayMetrics {
  readonly requests: Counter<"route" | "method" | "status" | "decision">;
  readonly requestDuration: Histogram<"route">;
  readonly snapshotInfo: Gauge<"revision">;
  readonly snapshotSwaps: Counter;
  readonly configErrors: Counter<"kind">;
  readonly configProblems: Gauge;
  readonly inflight: Gauge;
}

export function createGatewayMetrics(registry: Registry): GatewayMetrics {
  const registers = [registry];
  return {
    requests: new Counter({
      name: "phantomgate_requests_total",
      help: "Requests handled, by route, method, status and decision (allow, deny, error).",
      labelNames: ["route", "method", "status", "decision"],
      registers,
    }),
    requestDuration: new Histogram({
      name: "phantomgate_request_duration_seconds",
      help: "Time from request start to response end, by route.",
      labelNames: ["route"],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    }),
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
    inflight: new Gauge({
      name: "phantomgate_inflight_requests",
      help: "Requests being handled now.",
      registers,
    }),
  };
}
