// Prometheus metrics of the token layer: calls to authorization servers and token-cache effectiveness. Registered
// on the registry the caller passes in (never the global one), so several gateways can live in one process.
import { Counter, Gauge, Histogram, type Registry } from "prom-client";

/** Which AS endpoint a call went to. */
export type AuthServerEndpoint = "discovery" | "introspection" | "token" | "jwks";

/**
 * How a call to the AS ended. `inactive` is a successful call saying "no"; `rejected` an OAuth error the gateway
 * cannot act on (bad client credentials, unsupported grant); the rest are failures that fail closed.
 */
export type AuthServerOutcome =
  | "ok"
  | "inactive"
  | "rejected"
  | "timeout"
  | "network_error"
  | "http_error"
  | "invalid_response"
  /** Not sent: the AS already had as many calls waiting or under way as the gateway allows. */
  | "overloaded";

/** Records calls to authorization servers. */
export interface AuthServerMetrics {
  observeRequest(
    authServer: string,
    endpoint: AuthServerEndpoint,
    outcome: AuthServerOutcome,
    seconds: number,
    /** Why a call failed (no token in it): for the failure log, not for metrics. */
    failure?: string,
  ): void;
}

/** Discards everything: used when no registry is configured. */
export const noAuthServerMetrics: AuthServerMetrics = { observeRequest: () => undefined };

/** Registers `phantomgate_as_requests_total` and `phantomgate_as_request_duration_seconds` on `registry`. */
export function createAuthServerMetrics(registry: Registry): AuthServerMetrics {
  const requests = new Counter({
    name: "phantomgate_as_requests_total",
    help: "Calls from the gateway to authorization servers, by endpoint and outcome.",
    labelNames: ["auth_server", "endpoint", "outcome"],
    registers: [registry],
  });
  const duration = new Histogram({
    name: "phantomgate_as_request_duration_seconds",
    help: "Duration of calls from the gateway to authorization servers.",
    labelNames: ["auth_server", "endpoint"],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  return {
    observeRequest(authServer, endpoint, outcome, seconds) {
      requests.inc({ auth_server: authServer, endpoint, outcome });
      // A call never sent has no duration: counting it would pull the histogram towards zero during an outage.
      if (outcome !== "overloaded") duration.observe({ auth_server: authServer, endpoint }, seconds);
    },
  };
}

/** Counters the token cache keeps as plain numbers (cheap on the hot path) and exposes at scrape time. */
export interface TokenCacheCounts {
  readonly hits: number;
  readonly misses: number;
  readonly negativeHits: number;
  /** Entries dropped to stay within the count or byte bound. */
  readonly evictions: number;
  /** Entries dropped because their token was revoked (or found inactive while cached). */
  readonly revocations: number;
  readonly entries: number;
  /** Estimated bytes held (claims, tokens and per-token overhead). */
  readonly bytes: number;
}

/**
 * Registers `phantomgate_token_cache_total{result}` (lookups only, so hit / sum is the hit ratio),
 * `phantomgate_token_cache_evictions_total{reason}`, `phantomgate_token_cache_entries` and
 * `phantomgate_token_cache_bytes`, all read from `read` when scraped: the request path only increments integers,
 * with no label hashing.
 */
export function registerTokenCacheMetrics(registry: Registry, read: () => TokenCacheCounts): void {
  new Counter({
    name: "phantomgate_token_cache_total",
    help: "Token cache lookups by result (hit, miss, negative_hit).",
    labelNames: ["result"],
    registers: [registry],
    collect() {
      const counts = read();
      this.reset();
      this.inc({ result: "hit" }, counts.hits);
      this.inc({ result: "miss" }, counts.misses);
      this.inc({ result: "negative_hit" }, counts.negativeHits);
    },
  });
  new Counter({
    name: "phantomgate_token_cache_evictions_total",
    help: "Token cache entries dropped before they expired: capacity (the AuthServer's cache.maxEntries or --token-cache-max-bytes; raise them when it climbs), revoked (a revocation, or the AS calling a cached token inactive when an exchange was refused).",
    labelNames: ["reason"],
    registers: [registry],
    collect() {
      const counts = read();
      this.reset();
      this.inc({ reason: "capacity" }, counts.evictions);
      this.inc({ reason: "revoked" }, counts.revocations);
    },
  });
  new Gauge({
    name: "phantomgate_token_cache_entries",
    help: "Entries (token facts and derived upstream tokens) held by the token cache.",
    registers: [registry],
    collect() {
      this.set(read().entries);
    },
  });
  new Gauge({
    name: "phantomgate_token_cache_bytes",
    help: "Estimated bytes held by the token cache (claims, tokens, per-token overhead), bounded by --token-cache-max-bytes.",
    registers: [registry],
    collect() {
      this.set(read().bytes);
    },
  });
}
