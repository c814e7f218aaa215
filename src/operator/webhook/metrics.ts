// Admission webhook metrics on a prom-client registry the caller owns (never the global one).
import { Counter, Histogram, type Registry } from "prom-client";

export interface WebhookMetrics {
  readonly reviews: Counter<"kind" | "operation" | "allowed">;
  readonly reviewDuration: Histogram<"kind" | "operation">;
  readonly invalidRequests: Counter;
}

/** Registers the webhook's metrics on `registry`. */
export function createWebhookMetrics(registry: Registry): WebhookMetrics {
  const registers = [registry];
  return {
    reviews: new Counter({
      name: "phantomgate_webhook_reviews_total",
      help: "Admission reviews answered, by kind, operation and whether the request was allowed.",
      labelNames: ["kind", "operation", "allowed"],
      registers,
    }),
    reviewDuration: new Histogram({
      name: "phantomgate_webhook_review_duration_seconds",
      help: "Time to answer one admission review (compile and any wait for the operator's store to catch up).",
      labelNames: ["kind", "operation"],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    }),
    invalidRequests: new Counter({
      name: "phantomgate_webhook_invalid_requests_total",
      help: "Requests to the webhook that were not an AdmissionReview (answered 400).",
      registers,
    }),
  };
}
