// The webhook's HTTPS listener: POST /validate answers AdmissionReviews, with a serving certificate that can
// change while it runs (rotation) and metrics per review.
import { once } from "node:events";
import type { IncomingMessage, ServerResponse } from "node:http";
import { createServer } from "node:https";
import type { Socket } from "node:net";
import type { Logger } from "pino";
import { Registry } from "prom-client";
import type { SourceObject } from "../../compile/compile.ts";
import { phantomgateKinds } from "../../resources/common.ts";
import {
  InvalidAdmissionReviewError,
  parseAdmissionReview,
  type AdmissionReviewResponse,
} from "./admission-review.ts";
import { createWebhookMetrics, type WebhookMetrics } from "./metrics.ts";
import { crossObjectReasons, reviewAdmission } from "./review-admission.ts";

/** How long a closing webhook server lets reviews under way finish. */
const CLOSE_GRACE_MS = 5_000;

/** Where the API server sends AdmissionReviews (`clientConfig.service.path`, or the path of `url`). */
export const webhookPath = "/validate";

/** A PEM certificate chain and its private key. */
export interface ServingCertificate {
  readonly cert: string;
  readonly key: string;
}

export interface WebhookServerOptions {
  readonly host: string;
  /** 0 picks a free port (see the returned `port`). */
  readonly port: number;
  /**
   * The serving certificate, or a function giving the current one: it is asked on every new connection and a
   * changed certificate is used from then on (established keep-alive connections keep theirs).
   */
  readonly tls: ServingCertificate | (() => ServingCertificate);
  /** The objects the operator's store holds now; called on every review. */
  readonly world: () => readonly SourceObject[];
  readonly logger: Logger;
  /** Where the metrics go; default a private registry. */
  readonly registry?: Registry;
  /**
   * How long a denial that depends on other objects (unknown ScopePolicy, AuthServer or scope; a conflict) is
   * re-checked before it is sent, so that a change stored a moment earlier (e.g. by the same
   * `kubectl apply -f dir/`) has time to reach the store. Default 1000 ms; keep it well below the webhook's
   * timeoutSeconds.
   */
  readonly staleWorldGraceMs?: number;
  /** Largest accepted request body. Default 8 MiB (an object and its old version, each up to ~1.5 MB in etcd). */
  readonly maxBodyBytes?: number;
}

export interface WebhookServer {
  /** The port it listens on. */
  readonly port: number;
  /** Stops listening and closes every connection. */
  close(): Promise<void>;
}

/** Starts the validating admission webhook over TLS. */
export async function startWebhookServer(options: WebhookServerOptions): Promise<WebhookServer> {
  const { logger, world } = options;
  const metrics = createWebhookMetrics(options.registry ?? new Registry());
  const graceMs = options.staleWorldGraceMs ?? 1_000;
  const maxBodyBytes = options.maxBodyBytes ?? 8 * 1024 * 1024;
  const currentCertificate =
    typeof options.tls === "function" ? options.tls : () => options.tls as ServingCertificate;

  let served = currentCertificate();
  const server = createServer({ ...served, minVersion: "TLSv1.2" }, (req, res) => {
    handleRequest(req, res, { world, logger, metrics, graceMs, maxBodyBytes }).catch((error: unknown) => {
      logger.error({ err: error }, "webhook request failed");
      if (!res.headersSent) sendJson(res, 500, { message: "internal error" });
      else res.destroy();
    });
  });
  server.requestTimeout = 30_000;
  server.headersTimeout = 10_000;

  if (typeof options.tls === "function") {
    // Runs before the TLS layer wraps the socket, so a rotated certificate is used for this very handshake.
    server.prependListener("connection", (_socket: Socket) => {
      try {
        const next = currentCertificate();
        if (next.cert === served.cert && next.key === served.key) return;
        server.setSecureContext({ ...next, minVersion: "TLSv1.2" });
        served = next;
        logger.info("webhook serving certificate reloaded");
      } catch (error) {
        logger.error(
          { err: error },
          "webhook serving certificate could not be loaded; keeping the previous one",
        );
      }
    });
  }
  // A client that does not trust the certificate (a stale caBundle) shows up here, not as a request.
  server.on("tlsClientError", (error) => logger.debug({ err: error }, "webhook TLS handshake failed"));

  server.listen(options.port, options.host);
  await Promise.race([
    once(server, "listening"),
    once(server, "error").then(([error]: unknown[]) => Promise.reject(error as Error)),
  ]);
  const address = server.address();
  if (address === null || typeof address === "string") throw new Error("webhook server has no TCP address");
  logger.info({ host: options.host, port: address.port, path: webhookPath }, "admission webhook listening");

  return {
    port: address.port,
    close: async () => {
      // Reviews under way are answered (the API server would otherwise see a reset and, with failurePolicy
      // Fail, refuse the write); idle keep-alive connections close now, and anything left after a short grace.
      const closed = once(server, "close");
      server.close();
      server.closeIdleConnections();
      const cut = setTimeout(() => server.closeAllConnections(), CLOSE_GRACE_MS);
      await closed;
      clearTimeout(cut);
    },
  };
}

interface HandlerContext {
  readonly world: () => readonly SourceObject[];
  readonly logger: Logger;
  readonly metrics: WebhookMetrics;
  readonly graceMs: number;
  readonly maxBodyBytes: number;
}

async function handleRequest(
  req: IncomingMessage,
  res: ServerResponse,
  context: HandlerContext,
): Promise<void> {
  const { pathname, searchParams } = new URL(req.url ?? "/", "https://webhook.invalid");
  if (pathname === "/healthz") {
    sendJson(res, 200, { status: "ok" });
    return;
  }
  if (pathname !== webhookPath) {
    sendJson(res, 404, { message: `not found; AdmissionReviews go to POST ${webhookPath}` });
    return;
  }
  if (req.method !== "POST") {
    res.setHeader("allow", "POST");
    sendJson(res, 405, { message: "method not allowed; use POST" });
    return;
  }

  const body = await readBody(req, context.maxBodyBytes);
  if (body === undefined) {
    context.metrics.invalidRequests.inc();
    sendJson(res, 413, { message: `request body larger than ${context.maxBodyBytes} bytes` });
    return;
  }
  let review: unknown;
  let request: ReturnType<typeof parseAdmissionReview>;
  try {
    review = JSON.parse(body) as unknown;
    request = parseAdmissionReview(review);
  } catch (error) {
    context.metrics.invalidRequests.inc();
    const message = error instanceof InvalidAdmissionReviewError ? error.message : "request body is not JSON";
    sendJson(res, 400, { code: "PG_WEBHOOK_INVALID_REVIEW", message });
    return;
  }

  const kind = phantomgateKinds.some((known) => known === request.kind.kind) ? request.kind.kind : "other";
  const stopTimer = context.metrics.reviewDuration.startTimer({ kind, operation: request.operation });
  let answer: AdmissionReviewResponse;
  try {
    answer = await reviewPatiently(review, {
      ...context,
      graceMs: withinCallTimeout(context.graceMs, searchParams.get("timeout")),
    });
  } catch (error) {
    if (!(error instanceof InvalidAdmissionReviewError)) throw error;
    context.metrics.invalidRequests.inc();
    sendJson(res, 400, { code: error.code, message: error.message });
    return;
  } finally {
    stopTimer();
  }
  const { allowed, status, warnings } = answer.response;
  context.metrics.reviews.inc({ kind, operation: request.operation, allowed: String(allowed) });
  if (!allowed || warnings !== undefined) {
    // Identity and verdict only: objects can carry inline client secrets, so they are never logged.
    context.logger.info(
      {
        kind: request.kind.kind,
        namespace: request.namespace,
        name: request.name,
        operation: request.operation,
        dryRun: request.dryRun === true,
        allowed,
        reason: status?.reason,
        warnings: warnings?.length ?? 0,
      },
      allowed ? "admission allowed with warnings" : "admission denied",
    );
  }
  sendJson(res, 200, answer);
}

/** What the API server leaves the webhook to answer: its `?timeout=10s` less a margin for the way back. */
const TIMEOUT_MARGIN_MS = 300;

/**
 * The re-check grace, cut to fit the call's timeout when the API server states one (`?timeout=<n>s`): a
 * webhook with `timeoutSeconds: 1` gets a clear denial in time instead of timing out (and being failed or
 * ignored by the failurePolicy).
 */
export function withinCallTimeout(graceMs: number, timeout: string | null): number {
  const match = timeout === null ? null : /^(\d+(?:\.\d+)?)(ms|s|m)$/.exec(timeout);
  if (match === null) return graceMs;
  const unit = match[2] === "ms" ? 1 : match[2] === "s" ? 1_000 : 60_000;
  const budgetMs = Number(match[1]) * unit;
  return Math.max(0, Math.min(graceMs, budgetMs / 2, budgetMs - TIMEOUT_MARGIN_MS));
}

/**
 * Reviews, and while the denial depends on other objects, looks again with growing pauses until the grace is
 * used up: the store may not yet hold a change the API server stored a moment ago.
 */
async function reviewPatiently(
  review: unknown,
  { world, graceMs, logger }: Pick<HandlerContext, "world" | "graceMs" | "logger">,
): Promise<AdmissionReviewResponse> {
  const started = Date.now();
  const deadline = started + graceMs;
  for (let attempt = 1, pauseMs = 50; ; attempt++, pauseMs *= 2) {
    const answer = reviewAdmission(review, world);
    const reason = answer.response.status?.reason;
    const mayBeStale = reason !== undefined && (crossObjectReasons as ReadonlySet<string>).has(reason);
    const remainingMs = deadline - Date.now();
    if (answer.response.allowed || !mayBeStale || remainingMs <= 0) {
      if (attempt > 1 && answer.response.allowed) {
        logger.debug(
          { waitedMs: Date.now() - started, attempts: attempt },
          "admission allowed once the store caught up",
        );
      }
      return answer;
    }
    await new Promise((resolve) => setTimeout(resolve, Math.min(pauseMs, remainingMs)));
  }
}

/** The body as text, or undefined when it exceeds `limit` bytes (the rest is drained, so a 413 can be sent). */
function readBody(req: IncomingMessage, limit: number): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size <= limit) chunks.push(chunk);
    });
    req.on("end", () => resolve(size > limit ? undefined : Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}
