// Operator metrics, and the listener serving them with /healthz and /readyz, on a prom-client registry owned by the operator instance (never the global one). The
// distribution server and the webhook register theirs (connected gateways, ACK latency, admissions) on the same
// registry.
import { once } from "node:events";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { Counter, Gauge, Histogram, type Registry } from "prom-client";

export interface OperatorMetrics {
  readonly reconciles: Counter<"result">;
  readonly compileSeconds: Histogram;
  readonly snapshotRevision: Gauge<"revision">;
  readonly objects: Gauge<"kind" | "accepted">;
  readonly watchRestarts: Counter<"resource" | "reason">;
  readonly watchEvents: Counter<"resource" | "type">;
  readonly lists: Counter<"resource">;
  readonly statusWrites: Counter<"kind" | "result">;
  readonly events: Counter<"reason">;
  readonly leader: Gauge;
  readonly leaderTransitions: Counter;
}

export function createOperatorMetrics(registry: Registry): OperatorMetrics {
  const registers = [registry];
  return {
    reconciles: new Counter({
      name: "phantomgate_operator_reconciles_total",
      help: "Compiles of the watched objects, by result (published: a new revision; unchanged; error).",
      labelNames: ["result"],
      registers,
    }),
    compileSeconds: new Histogram({
      name: "phantomgate_operator_compile_seconds",
      help: "Time to compile the watched objects into a snapshot.",
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    }),
    snapshotRevision: new Gauge({
      name: "phantomgate_operator_snapshot_revision_info",
      help: "The revision of the snapshot the operator serves (value 1).",
      labelNames: ["revision"],
      registers,
    }),
    objects: new Gauge({
      name: "phantomgate_operator_objects",
      help: "Objects in the last compile, by kind and whether they were accepted.",
      labelNames: ["kind", "accepted"],
      registers,
    }),
    watchRestarts: new Counter({
      name: "phantomgate_operator_watch_restarts_total",
      help: "Watches that ended and were started again, by resource and reason (closed, expired, stall, relist, error).",
      labelNames: ["resource", "reason"],
      registers,
    }),
    watchEvents: new Counter({
      name: "phantomgate_operator_watch_events_total",
      help: "Watch events received, by resource and type (ADDED, MODIFIED, DELETED, BOOKMARK).",
      labelNames: ["resource", "type"],
      registers,
    }),
    lists: new Counter({
      name: "phantomgate_operator_lists_total",
      help: "Complete lists (initial, periodic relist, after 410 Gone), by resource.",
      labelNames: ["resource"],
      registers,
    }),
    statusWrites: new Counter({
      name: "phantomgate_operator_status_writes_total",
      help: "Status patches, by kind and result (ok, conflict, error).",
      labelNames: ["kind", "result"],
      registers,
    }),
    events: new Counter({
      name: "phantomgate_operator_events_total",
      help: "Kubernetes Events recorded, by reason.",
      labelNames: ["reason"],
      registers,
    }),
    leader: new Gauge({
      name: "phantomgate_operator_leader",
      help: "1 while this replica holds the leader Lease (writes status and Events), else 0.",
      registers,
    }),
    leaderTransitions: new Counter({
      name: "phantomgate_operator_leader_transitions_total",
      help: "Times this replica became leader.",
      registers,
    }),
  };
}

/** What /readyz reports. */
export interface OperatorHealth {
  readonly ready: boolean;
  readonly [detail: string]: unknown;
}

export interface MetricsServer {
  readonly port: number;
  close(): Promise<void>;
}

/** Serves /metrics (Prometheus), /healthz (the process is alive) and /readyz (`health().ready`). */
export async function startMetricsServer(options: {
  readonly host: string;
  readonly port: number;
  readonly registry: Registry;
  readonly health: () => OperatorHealth;
}): Promise<MetricsServer> {
  const { registry, health } = options;
  const server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    const json = (status: number, body: unknown): void => {
      res
        .writeHead(status, { "content-type": "application/json", "cache-control": "no-store" })
        .end(JSON.stringify(body));
    };
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD" }).end();
      return;
    }
    if (path === "/healthz") {
      json(200, { status: "ok" });
    } else if (path === "/readyz") {
      const body = health();
      json(body.ready ? 200 : 503, body);
    } else if (path === "/metrics") {
      registry
        .metrics()
        .then((text) => res.writeHead(200, { "content-type": registry.contentType }).end(text))
        .catch(() => json(500, { error: "metrics unavailable" }));
    } else {
      json(404, { error: "not found" });
    }
  });
  server.listen(options.port, options.host);
  await Promise.race([
    once(server, "listening"),
    once(server, "error").then(([error]: unknown[]) => Promise.reject(error as Error)),
  ]);
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
