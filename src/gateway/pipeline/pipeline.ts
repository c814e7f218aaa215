// The request pipeline, read top to bottom: firewall → route → authenticate → authorize → (form body check) →
// forward, then audit.
// Each stage fills the request context or throws a GatewayError; the error becomes the response.
import type { IncomingMessage, ServerResponse } from "node:http";
import { Socket } from "node:net";
import type { Duplex } from "node:stream";
import type { TLSSocket } from "node:tls";
import type { Logger } from "pino";
import type { Dispatcher } from "undici";
import { GatewayError, isGatewayError, type ErrorCode } from "../../errors/catalogue.ts";
import type { TroubleLog } from "../../errors/trouble-log.ts";
import type { CompiledRoute } from "../../snapshot/snapshot.ts";
import { fingerprintToken } from "../../tokens/fingerprint.ts";
import { isoTime, newAuditTokenMemo, type AuditSink, type AuditTokenMemo } from "../audit/audit.ts";
import { authorizeAudience, authorizeScopes } from "../authorize/authorize.ts";
import {
  bodyInspection,
  extractBearerToken,
  forbiddenParameterError,
  inspectFraming,
  isEncodedBody,
  queryCarriesAccessToken,
  queryCarriesMethodOverride,
  type Firewall,
} from "../firewall/firewall.ts";
import { createMultipartRewriter, type BodyRewriter } from "../firewall/multipart-rewrite.ts";
import { buildUpstreamHeaders } from "../forward/headers.ts";
import type { UpstreamLoad, UpstreamSlot } from "../forward/upstream-load.ts";
import {
  checkDeclaredLength,
  clientClosed,
  forwardRequest,
  requestHasBody,
  type ForwardOutcome,
} from "../forward/forward.ts";
import type { Decision, GatewayMetrics } from "../metrics.ts";
import type { RuntimeHolder, RuntimeState } from "../runtime/runtime-state.ts";
import type { FormBudget } from "./form-budget.ts";
import { newRequestIds } from "./ids.ts";
import { isLingering, lingerOnClose } from "./linger.ts";
import { clientAddress, clientKey, type NewTokenLimiter } from "./new-tokens.ts";
import { sendError, sendErrorToSocket } from "./respond.ts";

/** What the authenticate stage gets from the token layer. */
interface TokenResult {
  readonly facts: {
    readonly sub?: string | undefined;
    readonly clientId?: string | undefined;
    readonly scopes: readonly string[];
    readonly audience?: readonly string[] | undefined;
  };
  /** `Bearer <token>`, the Authorization value the upstream receives. */
  readonly upstreamAuthorization: string;
  readonly cacheHit: boolean;
}

/** What the authenticate stage needs from the token layer. */
export interface TokenAuthenticator {
  /** The cached result, without waiting; undefined when not cached. */
  cached(fingerprint: string, route: CompiledRoute): TokenResult | undefined;
  /** After `cached` missed: asks the token layer without a second cache look-up. */
  loadUncached(token: string, route: CompiledRoute, fingerprint: string): Promise<TokenResult>;
  /** Whether `loadUncached` would start a call to the authorization server (not join one, not stay local). */
  asksAuthServer(fingerprint: string, route: CompiledRoute): boolean;
}

export interface PipelineDeps {
  readonly runtime: RuntimeHolder;
  readonly firewall: Firewall;
  readonly authenticator: TokenAuthenticator;
  readonly dispatcher: Dispatcher;
  readonly metrics: GatewayMetrics;
  readonly audit: AuditSink;
  readonly logger: Logger;
  readonly trustForwarded: boolean;
  /** `--client-send-timeout-ms`: how long a client may leave its response untaken before it is cut. */
  readonly clientSendTimeoutMs: number;
  /** `--min-body-rate`: bytes per second a streamed request body must average past the route's timeout. */
  readonly minBodyRate: number;
  /** Bounds the form-urlencoded bytes all requests hold at once while they are checked. */
  readonly formBudget: FormBudget;
  /** Where failing upstreams are logged, per route and upstream, without a line per request. */
  readonly upstreamTroubles: TroubleLog;
  /** Requests in flight per upstream origin, bounded by `--max-upstream-requests`. */
  readonly upstreamLoad: UpstreamLoad;
  /** Uncached tokens being checked per client, bounded by `--max-new-tokens-per-client`. */
  readonly newTokens: NewTokenLimiter;
}

/**
 * One request's state as the stages fill it in. A class whose fields all exist from the start: every request's
 * context has the same shape (V8 keeps the fields inside the object), instead of growing one field at a time.
 */
class RequestContext implements ForwardOutcome {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly deps: PipelineDeps;
  readonly startedAt: number;
  readonly requestId: string;
  readonly traceId: string;
  readonly traceparent: string;
  /** Read at the start: once the client is gone, node:http detaches the socket from the request. */
  readonly remoteAddress: string | undefined;
  readonly protocol: "http" | "https";
  state: RuntimeState | undefined = undefined;
  path: string | undefined = undefined;
  query: string | undefined = undefined;
  authorization: string | undefined = undefined;
  route: CompiledRoute | undefined = undefined;
  /** The connection's credential the request carried (with its encoded audit fields). */
  credential: Credential | undefined = undefined;
  cacheHit: boolean | undefined = undefined;
  sub: string | undefined = undefined;
  clientId: string | undefined = undefined;
  scopes: readonly string[] | undefined = undefined;
  /** The token's `aud`, for a rule's `acceptedAudiences`. */
  audience: readonly string[] | undefined = undefined;
  upstreamAuthorization: string | undefined = undefined;
  upstreamStatus: number | undefined = undefined;
  /** Why the response was cut after its status line went out (upstream or client failure). */
  cut: GatewayError | undefined = undefined;
  /** The upstream origin the request went to (for the failure log). */
  origin: string | undefined = undefined;
  /** The request's place among those in flight to its upstream, given back in `finish`. */
  upstreamSlot: UpstreamSlot | undefined = undefined;
  /** A form body read in full by inspectBody; forwarded instead of the request stream. */
  bufferedBody: Buffer | undefined = undefined;
  /** Bytes of the form body this request took from the process-wide budget; given back in `finish`. */
  heldFormBytes = 0;
  /** Checks a multipart body's field names as it streams upstream. */
  bodyRewriter: BodyRewriter | undefined = undefined;
  /** An OPTIONS request's Max-Forwards (RFC 9110 §7.6.2): 0 is answered by the gateway, more is decremented. */
  maxForwards: number | undefined = undefined;
  /**
   * The client sent `Expect: 100-continue` and holds its body until it gets 100 (Continue). The gateway sends it
   * only once the request passed its checks and the body is about to be read, so a refused request costs no
   * upload (RFC 9110 §10.1.1).
   */
  awaitingContinue: boolean;

  constructor(
    req: IncomingMessage,
    res: ServerResponse,
    deps: PipelineDeps,
    traceparentHeader: string | undefined,
    awaitingContinue: boolean,
  ) {
    this.req = req;
    this.res = res;
    this.deps = deps;
    this.awaitingContinue = awaitingContinue;
    this.startedAt = performance.now();
    this.remoteAddress = req.socket.remoteAddress;
    this.protocol = (req.socket as Partial<TLSSocket>).encrypted === true ? "https" : "http";
    const ids = newRequestIds(traceparentHeader);
    this.requestId = ids.requestId;
    this.traceId = ids.traceId;
    this.traceparent = ids.traceparent;
  }

  /**
   * Runs the stages from `from` on, then starts forwarding. Stages that settle synchronously (a cached token)
   * cost no promise; only one that starts asynchronous work (a cache miss, a form body) resumes the run later.
   */
  run(from: number): void {
    try {
      for (let i = from; i < stages.length; i++) {
        const pending = (stages[i] as Stage)(this, this.deps);
        if (pending !== undefined) {
          pending.then(
            () => this.run(i + 1),
            (error: unknown) => this.failed(error),
          );
          return;
        }
      }
      if (this.maxForwards === 0) answerOptions(this);
      else forward(this, this.deps);
    } catch (error) {
      this.failed(error);
    }
  }

  /** The exchange finished (or was cut after its status line): the upstream's status is the request's. */
  forwarded(status: number): void {
    this.upstreamStatus = status;
    const cut = this.cut;
    if (cut === undefined) {
      if (this.deps.upstreamTroubles.failing > 0) upstreamAnswered(this);
      finish(this, status, "allow", "ok");
      return;
    }
    this.deps.metrics.responsesCut.inc({ route: this.route?.id ?? "none", reason: cut.code });
    if (isUpstreamFailure(cut.code)) upstreamFailed(this, cut);
    finish(this, status, "allow", cut.code, cut.reason);
  }

  /** A stage refused the request or forwarding failed before anything was sent: the error is the answer. */
  failed(error: unknown): void {
    try {
      const failure = toGatewayError(error, this.deps, this);
      // A body not read to its end (held back for a 100 that never came, or cut off when forwarding failed)
      // leaves the connection unable to carry another request: it is closed after this answer.
      const unreadBody = requestHasBody(this.req) && !this.req.complete;
      const close =
        this.awaitingContinue || unreadBody || failure.code === "PG_ERR_HTTP_VERSION_NOT_SUPPORTED";
      // A client still sending its body gets the answer before the connection ends, not a reset.
      if (unreadBody && !this.awaitingContinue) lingerOnClose(this.req);
      sendError(this.res, failure, this.requestId, close);
      if (isUpstreamFailure(failure.code)) upstreamFailed(this, failure);
      finish(this, failure.status, decisionOf(failure.code), failure.code, failure.reason);
    } catch (crash) {
      crashed(this, crash);
    }
  }

  /**
   * The upstream began its answer, so it has the request: a form body read for the checks goes back to the budget
   * now, not when the client has taken the whole response (a client reading slowly would pin it).
   */
  responseStarted(): void {
    if (this.heldFormBytes === 0) return;
    this.deps.formBudget.give(this.heldFormBytes);
    this.heldFormBytes = 0;
    this.bufferedBody = undefined;
  }

  /**
   * The upstream finished its answer: its place among the requests in flight to it goes back now, not when a slow
   * client has taken the response (clients that do not read could otherwise fill an healthy upstream's places).
   */
  upstreamEnded(): void {
    releaseUpstreamSlot(this);
  }

  /** Sends the 100 (Continue) a client waits for before its body, once. */
  release(): void {
    if (!this.awaitingContinue) return;
    this.awaitingContinue = false;
    this.res.writeContinue();
  }
}

type Stage = (ctx: RequestContext, deps: PipelineDeps) => void | Promise<void>;

/** Limits, normalisation, token-placement rules; pins the serving state for the whole request. */
const firewall: Stage = (ctx, deps) => {
  const state = deps.runtime.current;
  if (state === undefined) throw new GatewayError("PG_ERR_NOT_READY", "no snapshot yet");
  ctx.state = state;
  const inspected = deps.firewall.inspectRequest({
    method: ctx.req.method ?? "GET",
    url: ctx.req.url ?? "/",
    rawHeaders: ctx.req.rawHeaders,
  });
  inspectFraming(ctx.req);
  ctx.path = inspected.path;
  ctx.query = inspected.query;
  ctx.authorization = inspected.authorization;
};

/** Host, normalised path and method → the most specific route of the pinned snapshot. */
const route: Stage = (ctx) => {
  const state = ctx.state;
  if (state === undefined || ctx.path === undefined) throw new Error("route stage ran before firewall");
  const method = ctx.req.method ?? "GET";
  const result = state.router.match(ctx.req.headers.host ?? "", ctx.path, method);
  if (result.kind === "not-found") throw new GatewayError("PG_ERR_ROUTE_NOT_FOUND", "no route");
  if (result.kind === "method-not-allowed") {
    throw new GatewayError("PG_ERR_METHOD_NOT_ALLOWED", "method not allowed", {
      allow: result.allow.filter((allowed) => !neverProxied.has(allowed)).join(", "),
    });
  }
  ctx.route = result.route;
  // An upstream that echoes TRACE would hand the internal JWT back to the client: refused on every route,
  // with the methods the route does take (audited with the route it matched).
  if (neverProxied.has(method)) {
    throw new GatewayError("PG_ERR_METHOD_NOT_ALLOWED", `${method} is never proxied`, {
      allow: allowedMethods(result.route),
    });
  }
  if (method === "OPTIONS") {
    const maxForwards = ctx.req.headers["max-forwards"];
    if (maxForwards !== undefined) {
      if (typeof maxForwards !== "string" || !/^\d{1,9}$/.test(maxForwards))
        throw new GatewayError("PG_ERR_BAD_REQUEST", "invalid Max-Forwards");
      ctx.maxForwards = Number(maxForwards);
    }
  }
};

/** The methods a route forwards, for `Allow`. */
function allowedMethods(matched: CompiledRoute): string {
  const methods = matched.methods.length > 0 ? matched.methods : proxiedMethods;
  return methods.filter((allowed) => !neverProxied.has(allowed)).join(", ");
}

/**
 * OPTIONS with `Max-Forwards: 0` (once the token and scopes passed): the gateway is the final recipient
 * (RFC 9110 §7.6.2) and answers with the route's methods instead of forwarding.
 */
function answerOptions(ctx: RequestContext): void {
  const matched = ctx.route;
  if (matched === undefined) throw new Error("answerOptions ran before route");
  ctx.res.writeHead(200, {
    allow: allowedMethods(matched),
    "content-length": "0",
    "cache-control": "no-store",
    "x-request-id": ctx.requestId,
  });
  ctx.res.end();
  finish(ctx, 200, "allow", "ok");
}

/**
 * Methods the gateway never forwards, whatever a route says. (CONNECT never reaches the pipeline: node:http hands
 * it to the `connect` listener; TRACK never gets past node:http's parser.)
 */
const neverProxied: ReadonlySet<string> = new Set(["TRACE", "CONNECT"]);
/** What a route without a method list takes (less the never-proxied ones). */
const proxiedMethods: readonly string[] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/**
 * A form body could carry an RFC 6750 §2.2 `access_token` or a `_method` override that frameworks (PHP, Laravel,
 * Symfony, Rails) honour, and the rule was checked for this request's method only. A form-urlencoded body (or one
 * without a Content-Type, a form to Rack) is read in full, within the route's limit and the process-wide budget,
 * and refused when it carries either, before any of it is forwarded. A multipart body is taken apart and
 * written again as it streams, every part's name checked (see createMultipartRewriter). JSON and other bodies
 * are not inspected.
 */
const inspectBody: Stage = (ctx, deps) => {
  const matched = ctx.route;
  if (matched === undefined) throw new Error("inspectBody stage ran before route");
  if (!requestHasBody(ctx.req)) return;
  const contentType = ctx.req.headers["content-type"];
  const inspection = bodyInspection(contentType, ctx.req.method ?? "");
  if (inspection === "none") return;
  // A compressed form body would hide an access_token from the check below, and the upstream might decode it.
  if (isEncodedBody(ctx.req.headers["content-encoding"])) {
    throw new GatewayError("PG_ERR_UNSUPPORTED_ENCODING", `${inspection} body with a Content-Encoding`);
  }
  if (inspection === "multipart") {
    ctx.bodyRewriter = createMultipartRewriter(contentType ?? "");
    return;
  }
  return readFormBody(ctx, deps.formBudget, matched.limits.maxBodyBytes, matched.timeouts.requestMs);
};

/**
 * Reads a form-urlencoded body whole, taking each chunk from `budget` as it arrives (503 when the process holds
 * too much already), and checks it. The bytes taken are the request's until `finish` gives them back, on every
 * path: forwarded, refused, or the client gone.
 */
function readFormBody(
  ctx: RequestContext,
  budget: FormBudget,
  limit: number,
  silenceMs: number,
): Promise<void> {
  checkDeclaredLength(ctx.req, limit);
  // A form larger than the whole budget never fits, however long the client waits: 413, not 503.
  const tooLarge = (): GatewayError =>
    new GatewayError(
      "PG_ERR_BODY_TOO_LARGE",
      `form body over the ${budget.limit} bytes the gateway holds for forms (--max-form-buffer-bytes)`,
    );
  if (Number(ctx.req.headers["content-length"] ?? 0) > budget.limit) throw tooLarge();
  ctx.release();
  const req = ctx.req;
  return new Promise((resolve, reject) => {
    let chunks: Buffer[] = [];
    let size = 0;
    // The rule's timeout as the longest silence between chunks: a client trickling a form holds budget only so
    // long (node's own request timeout is minutes).
    const stalled = setTimeout(() => {
      refuse(new GatewayError("PG_ERR_REQUEST_TIMEOUT", `form body silent for ${silenceMs} ms`));
    }, silenceMs);
    const stop = (): void => {
      clearTimeout(stalled);
      req.off("data", onData).off("end", onEnd).off("error", onBroken).off("close", onClose);
    };
    const refuse = (error: GatewayError): void => {
      stop();
      chunks = [];
      req.pause();
      reject(error);
    };
    const onData = (chunk: Buffer): void => {
      stalled.refresh();
      size += chunk.length;
      if (size > limit) {
        refuse(new GatewayError("PG_ERR_BODY_TOO_LARGE", `form body over ${limit} bytes`));
        return;
      }
      if (size > budget.limit) {
        refuse(tooLarge());
        return;
      }
      if (!budget.take(chunk.length)) {
        refuse(
          new GatewayError(
            "PG_ERR_FORM_BUDGET_EXHAUSTED",
            `form bodies would hold more than ${budget.limit} bytes across all requests`,
          ),
        );
        return;
      }
      ctx.heldFormBytes += chunk.length;
      chunks.push(chunk);
    };
    const onEnd = (): void => {
      stop();
      const body = chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, size);
      chunks = [];
      const refusal = formBodyRefusal(body);
      if (refusal !== undefined) {
        reject(refusal);
        return;
      }
      ctx.bufferedBody = body;
      resolve();
    };
    // The request stream breaking off: the client closed or reset the connection.
    const onBroken = (): void => refuse(clientClosed("form body broke off"));
    const onClose = (): void => {
      if (!req.complete) onBroken();
    };
    req.on("data", onData).on("end", onEnd).on("error", onBroken).on("close", onClose);
  });
}

function formBodyRefusal(body: Buffer): GatewayError | undefined {
  const form = body.toString("latin1");
  if (queryCarriesAccessToken(form)) return forbiddenParameterError("access_token", "a form body");
  // The rule was checked for this request's method; a form field telling the upstream to run another is refused.
  if (queryCarriesMethodOverride(form)) return forbiddenParameterError("_method", "a form body");
  return undefined;
}

/**
 * The route's token mode turns the client's credential into token facts and the token sent upstream. A cached
 * token is settled without waiting; only a miss goes to the token layer asynchronously.
 */
const authenticate: Stage = (ctx, deps) => {
  const matched = ctx.route;
  if (matched === undefined) throw new Error("authenticate stage ran before route");
  if (matched.auth.mode === "none") return;
  const credential = credentialOf(ctx);
  if (credential === undefined) throw new GatewayError("PG_ERR_TOKEN_MISSING", "no bearer token");
  const fingerprint = credential.fingerprint;
  ctx.credential = credential;
  let hit: TokenResult | undefined;
  try {
    hit = deps.authenticator.cached(fingerprint, matched);
  } catch (error) {
    // A refusal the cache held (an inactive or expired token): the audit line says it came from the cache.
    if (isGatewayError(error) && error.code === "PG_ERR_TOKEN_INVALID") ctx.cacheHit = true;
    throw error;
  }
  if (hit !== undefined) {
    takeTokenResult(ctx, hit);
    return;
  }
  const release = takeNewTokenPlace(ctx, deps, fingerprint, matched);
  ctx.cacheHit = false;
  // The place goes back when the check settles, also for a client that left meanwhile.
  return deps.authenticator.loadUncached(credential.token, matched, fingerprint).then(
    (result) => {
      release?.();
      takeTokenResult(ctx, result);
    },
    (error: unknown) => {
      release?.();
      throw error;
    },
  );
};

/**
 * A place among the tokens the request's client has being checked at the authorization server
 * (`--max-new-tokens-per-client`), when this token's check would start a call there; undefined when it joins a
 * check under way or stays in the gateway. Throws PG_ERR_TOO_MANY_NEW_TOKENS when the client has no place left.
 */
function takeNewTokenPlace(
  ctx: RequestContext,
  deps: PipelineDeps,
  fingerprint: string,
  route: CompiledRoute,
): (() => void) | undefined {
  const limiter = deps.newTokens;
  if (limiter.limit === 0 || !deps.authenticator.asksAuthServer(fingerprint, route)) return undefined;
  const client = clientKey(
    clientAddress(ctx.remoteAddress, ctx.req.headers["x-forwarded-for"], deps.trustForwarded),
  );
  const release = limiter.acquire(client, fingerprint);
  if (release === undefined) {
    throw new GatewayError(
      "PG_ERR_TOO_MANY_NEW_TOKENS",
      `tokens of this client (${client}) being checked at the authorization server already: ${limiter.limit} (--max-new-tokens-per-client)`,
    );
  }
  return release;
}

/** A bearer credential as the request carried it, with its token and the token's fingerprint. */
interface Credential {
  /** The whole Authorization header value. */
  readonly authorization: string;
  readonly token: string;
  readonly fingerprint: string;
  /** The audit line's token fields as last encoded on this connection. */
  readonly audit: AuditTokenMemo;
}

/** Where a connection keeps the last credential it carried. */
const lastCredential = Symbol("phantomgate.lastCredential");
type CredentialHolder = { [lastCredential]?: Credential };

/**
 * The request's bearer credential; undefined when it sent none. A keep-alive connection nearly always carries the
 * same Authorization header on every request, so the connection keeps the last one with its fingerprint, and
 * SHA-256 runs once per credential per connection rather than once per request (~1 µs of a cache hit). Only an
 * identical header reuses it: any other value is parsed and hashed as usual. The kept value is the client's own
 * credential on its own connection, held in memory only, and goes when the connection does; only equality with
 * it is ever looked at, never a part of it.
 */
function credentialOf(ctx: RequestContext): Credential | undefined {
  const authorization = ctx.authorization;
  if (authorization === undefined) return undefined;
  const connection = ctx.req.socket as (Socket & CredentialHolder) | null;
  const known = connection?.[lastCredential];
  if (known !== undefined && known.authorization === authorization) return known;
  const token = extractBearerToken(authorization);
  if (token === undefined) return undefined;
  const credential: Credential = {
    authorization,
    token,
    fingerprint: fingerprintToken(token),
    audit: newAuditTokenMemo(),
  };
  if (connection !== null) connection[lastCredential] = credential;
  return credential;
}

function takeTokenResult(ctx: RequestContext, result: TokenResult): void {
  ctx.cacheHit = result.cacheHit;
  ctx.sub = result.facts.sub;
  ctx.clientId = result.facts.clientId;
  ctx.scopes = result.facts.scopes;
  ctx.audience = result.facts.audience;
  ctx.upstreamAuthorization = result.upstreamAuthorization;
}

/** The token's audience and coarse scopes, checked on every request from the (possibly cached) token facts. */
const authorize: Stage = (ctx) => {
  const matched = ctx.route;
  if (matched === undefined) throw new Error("authorize stage ran before route");
  if (matched.auth.mode === "none") return;
  authorizeAudience(matched.auth.acceptedAudiences, ctx.audience);
  authorizeScopes(matched.requiredScopes, ctx.scopes ?? []);
};

/**
 * Credential swap and streaming to the upstream. The exchange reports back to the context (`forwarded` or
 * `failed`).
 */
function forward(ctx: RequestContext, deps: PipelineDeps): void {
  const matched = ctx.route;
  const state = ctx.state;
  if (matched === undefined || state === undefined || ctx.path === undefined) {
    throw new Error("forward stage ran before route");
  }
  const headers = buildUpstreamHeaders({
    incoming: ctx.req.headers,
    upstreamAuthorization: ctx.upstreamAuthorization,
    clientAddress: ctx.remoteAddress ?? "unknown",
    protocol: ctx.protocol,
    host: ctx.req.headers.host,
    requestId: ctx.requestId,
    traceparent: ctx.traceparent,
    trustForwarded: deps.trustForwarded,
  });
  if (ctx.maxForwards !== undefined) headers["max-forwards"] = String(ctx.maxForwards - 1);
  // The exchange holds the buffered body only while it sends it; the context lets go of it now.
  const bufferedBody = ctx.bufferedBody;
  ctx.bufferedBody = undefined;
  const origin = state.pickOrigin(matched);
  ctx.origin = origin;
  const slot = deps.upstreamLoad.acquire(origin);
  if (slot === undefined) {
    throw new GatewayError(
      "PG_ERR_UPSTREAM_OVERLOADED",
      `${deps.upstreamLoad.limit} requests in flight to the upstream already (--max-upstream-requests)`,
    );
  }
  ctx.upstreamSlot = slot;
  forwardRequest({
    req: ctx.req,
    res: ctx.res,
    dispatcher: deps.dispatcher,
    origin,
    pathAndQuery: ctx.query === undefined || ctx.query === "" ? ctx.path : `${ctx.path}?${ctx.query}`,
    headers,
    timeoutMs: matched.timeouts.requestMs,
    clientTimeoutMs: deps.clientSendTimeoutMs,
    maxBodyBytes: matched.limits.maxBodyBytes,
    minBodyRate: deps.minBodyRate,
    requestId: ctx.requestId,
    bufferedBody,
    bodyRewriter: ctx.bodyRewriter,
    outcome: ctx,
  });
}

/**
 * The pipeline up to forwarding, in order; forward comes last. A form body is read only after the token was
 * checked, so an unauthenticated client cannot make the gateway buffer bodies.
 */
const stages: readonly Stage[] = [firewall, route, authenticate, authorize, inspectBody];

// A route's path template, made once per compiled route (a snapshot swap brings new route objects).
const templates = new WeakMap<CompiledRoute, string>();

function pathTemplate(matched: CompiledRoute | undefined): string | undefined {
  if (matched === undefined) return undefined;
  let template = templates.get(matched);
  if (template === undefined) {
    template =
      matched.path.type === "Exact" ? matched.path.value : `${matched.path.value.replace(/\/$/, "")}/**`;
    templates.set(matched, template);
  }
  return template;
}

function toGatewayError(error: unknown, deps: PipelineDeps, ctx: RequestContext): GatewayError {
  if (isGatewayError(error)) return error;
  deps.logger.error({ err: error, requestId: ctx.requestId }, "request failed unexpectedly");
  return new GatewayError("PG_ERR_INTERNAL", "unexpected failure", {}, { cause: error });
}

/** Error codes that say the gateway or what it depends on failed; other refusals are the request's own doing. */
const GATEWAY_SIDE_FAILURES: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  "PG_ERR_AS_UNAVAILABLE",
  "PG_ERR_NOT_READY",
  "PG_ERR_UPSTREAM_TIMEOUT",
  "PG_ERR_UPSTREAM_UNAVAILABLE",
  "PG_ERR_UPSTREAM_OVERLOADED",
  "PG_ERR_FORM_BUDGET_EXHAUSTED",
  "PG_ERR_INTERNAL",
]);

/**
 * The decision a refusal records: `error` when the gateway or what it depends on failed, `abort` when the client
 * went away first, `deny` for everything the request itself caused (also 501 and 505 for what the gateway does
 * not take), so that clients cannot raise the gateway's error rate.
 */
function decisionOf(code: ErrorCode): Decision {
  if (code === "PG_ERR_CLIENT_CLOSED" || code === "PG_ERR_CONNECTION_CLOSING") return "abort";
  return GATEWAY_SIDE_FAILURES.has(code) ? "error" : "deny";
}

function isUpstreamFailure(code: ErrorCode): boolean {
  return (
    code === "PG_ERR_UPSTREAM_UNAVAILABLE" ||
    code === "PG_ERR_UPSTREAM_TIMEOUT" ||
    code === "PG_ERR_UPSTREAM_OVERLOADED"
  );
}

function upstreamKey(ctx: RequestContext): string {
  return `${ctx.route?.id ?? "none"} ${ctx.origin ?? ""}`;
}

/** Logs an upstream's failure: at once, then at most every 10 s per route and upstream while it goes on. */
function upstreamFailed(ctx: RequestContext, failure: GatewayError): void {
  ctx.deps.upstreamTroubles.failed(
    upstreamKey(ctx),
    { route: ctx.route?.id, upstream: ctx.origin, code: failure.code, reason: failure.reason },
    "upstream failed",
  );
}

/** After failures: logs once that the upstream answers again. */
function upstreamAnswered(ctx: RequestContext): void {
  ctx.deps.upstreamTroubles.succeeded(
    upstreamKey(ctx),
    { route: ctx.route?.id, upstream: ctx.origin },
    "upstream answering again",
  );
}

/** Longest header value (Host, X-Forwarded-For) an audit line carries (a client may send kilobytes): cut, marked …. */
const MAX_AUDIT_HEADER_CHARS = 256;
/** Longest `detail` an audit line carries. */
const MAX_AUDIT_DETAIL_CHARS = 512;

function capped(value: string | undefined, max: number): string | undefined {
  return value === undefined || value.length <= max ? value : `${value.slice(0, max)}…`;
}

/** The `X-Forwarded-For` the client's proxies sent (trusted with --trust-forwarded), for the audit line. */
function forwardedChain(req: IncomingMessage): string | undefined {
  const value = req.headers["x-forwarded-for"];
  return capped(typeof value === "string" && value !== "" ? value : undefined, MAX_AUDIT_HEADER_CHARS);
}

/** Gives the request's place among those in flight to its upstream back, once. */
function releaseUpstreamSlot(ctx: RequestContext): void {
  const slot = ctx.upstreamSlot;
  if (slot === undefined) return;
  slot.n -= 1;
  ctx.upstreamSlot = undefined;
}

/** Metrics and the audit line, once per request, whichever way it ended. Never throws (undici callbacks call it). */
function finish(
  ctx: RequestContext,
  status: number,
  decision: Decision,
  reason: string,
  detail?: string,
): void {
  // The request's form bytes go back to the budget however it ended, and its place at the upstream.
  releaseUpstreamSlot(ctx);
  ctx.bufferedBody = undefined;
  ctx.bodyRewriter = undefined;
  if (ctx.heldFormBytes > 0) {
    ctx.deps.formBudget.give(ctx.heldFormBytes);
    ctx.heldFormBytes = 0;
  }
  try {
    const { deps, req } = ctx;
    const endedAt = performance.now();
    const latencyMs = endedAt - ctx.startedAt;
    // Where a request the HTTP parser refuses later on this connection counts its time from.
    const connection = req.socket as (Socket & IdleSince) | null;
    if (connection !== null) connection[idleSince] = endedAt;
    deps.metrics.requests.finished(
      ctx.route?.id ?? "none",
      req.method ?? "",
      status,
      decision,
      latencyMs / 1000,
    );
    deps.audit.write(
      {
        time: isoTime(Date.now()),
        requestId: ctx.requestId,
        traceId: ctx.traceId,
        remoteAddress: ctx.remoteAddress,
        forwardedFor: deps.trustForwarded ? forwardedChain(req) : undefined,
        host: capped(req.headers.host, MAX_AUDIT_HEADER_CHARS),
        method: req.method ?? "",
        route: ctx.route?.id,
        pathTemplate: pathTemplate(ctx.route),
        authMode: ctx.route?.auth.mode,
        clientId: ctx.clientId,
        sub: ctx.sub,
        scopes: ctx.scopes,
        tokenFingerprint: ctx.credential?.fingerprint,
        cache: ctx.cacheHit === undefined ? undefined : ctx.cacheHit ? "hit" : "miss",
        decision,
        reason,
        detail: capped(detail, MAX_AUDIT_DETAIL_CHARS),
        status,
        upstreamStatus: ctx.upstreamStatus,
        latencyMs: Math.round(latencyMs * 1000) / 1000,
      },
      ctx.credential?.audit,
    );
  } catch (error) {
    ctx.deps.logger.error({ err: error, requestId: ctx.requestId }, "request accounting failed");
  }
}

/** Answers a request the handler itself failed on: 500 if still possible, else the connection is cut. */
function answerCrash(res: ServerResponse): void {
  try {
    if (!res.headersSent) res.writeHead(500).end();
    else res.destroy();
  } catch {
    res.destroy();
  }
}

/** A bug in the error path itself: a bare 500, and still one audit line with the in-flight count going down. */
function crashed(ctx: RequestContext, error: unknown): void {
  ctx.deps.logger.error({ err: error, requestId: ctx.requestId }, "request handler crashed");
  answerCrash(ctx.res);
  finish(ctx, 500, "error", "PG_ERR_INTERNAL");
}

type Listener = (req: IncomingMessage, res: ServerResponse) => void;

/** node:http's private reference from a connection to the response being written on it. */
interface HttpConnection extends Duplex {
  /** The response node:http is writing on this connection, if any. */
  readonly _httpMessage?: ServerResponse | null;
}

/**
 * Answers a request node:http holds no response object for (its parser refused it, or a CONNECT) with the
 * catalogue's problem+json, counted and audited like any other request, then closes the connection.
 */
function answerWithoutResponse(
  deps: PipelineDeps,
  socket: Duplex,
  method: string,
  error: GatewayError,
): void {
  const { requestId, traceId } = newRequestIds(undefined);
  deps.metrics.requests.started();
  // No request object: the time counts from when the connection last became idle (opened, or its last request
  // answered), which for a head that never completes is how long the client took not to send it.
  const now = performance.now();
  const latencyMs = now - ((socket as Duplex & IdleSince)[idleSince] ?? now);
  try {
    sendErrorToSocket(socket, error, requestId);
  } catch {
    socket.destroy();
  }
  recordWithoutRoute(deps, {
    requestId,
    traceId,
    remoteAddress: socket instanceof Socket ? socket.remoteAddress : undefined,
    forwardedFor: undefined,
    host: undefined,
    method,
    error,
    decision: "deny",
    latencyMs,
  });
}

/** A request that never reached a route (refused by the parser, a CONNECT, not run): counted and audited. */
interface RouteLessRecord {
  readonly requestId: string;
  readonly traceId: string;
  readonly remoteAddress: string | undefined;
  readonly forwardedFor: string | undefined;
  readonly host: string | undefined;
  readonly method: string;
  readonly error: GatewayError;
  readonly decision: Decision;
  readonly latencyMs: number;
}

/** Metrics and the audit line of a request no route took (`route` "none"); never throws. */
function recordWithoutRoute(deps: PipelineDeps, record: RouteLessRecord): void {
  const { error, latencyMs } = record;
  try {
    deps.metrics.requests.finished("none", record.method, error.status, record.decision, latencyMs / 1000);
    deps.audit.write({
      time: isoTime(Date.now()),
      requestId: record.requestId,
      traceId: record.traceId,
      remoteAddress: record.remoteAddress,
      forwardedFor: record.forwardedFor,
      host: record.host,
      method: record.method,
      route: undefined,
      pathTemplate: undefined,
      authMode: undefined,
      clientId: undefined,
      sub: undefined,
      scopes: undefined,
      tokenFingerprint: undefined,
      cache: undefined,
      decision: record.decision,
      reason: error.code,
      detail: error.reason,
      status: error.status,
      upstreamStatus: undefined,
      latencyMs: Math.round(latencyMs * 1000) / 1000,
    });
  } catch (failure) {
    deps.logger.error({ err: failure, requestId: record.requestId }, "request accounting failed");
  }
}

/** Set on a lingering connection once a request pipelined on it was recorded. */
const notRunRecorded = Symbol("phantomgate.notRunRecorded");

/**
 * A request pipelined on a lingering connection (see linger.ts): it gets no answer and is not run, but it arrived,
 * so it is counted and audited (decision `abort`: it ended without an answer). Only the first per connection: a
 * client could pipeline thousands of tiny requests into the lingering window, each costing a line ~15 times its
 * size.
 */
function recordNotRun(deps: PipelineDeps, req: IncomingMessage): void {
  const socket = req.socket as Socket & { [notRunRecorded]?: true };
  if (socket[notRunRecorded] === true) return;
  socket[notRunRecorded] = true;
  const error = new GatewayError(
    "PG_ERR_CONNECTION_CLOSING",
    "pipelined behind an answer that closed the connection; not run (requests after it on this connection are not recorded)",
  );
  const { requestId, traceId } = newRequestIds(undefined);
  deps.metrics.requests.started();
  recordWithoutRoute(deps, {
    requestId,
    traceId,
    remoteAddress: socket.remoteAddress,
    forwardedFor: deps.trustForwarded ? forwardedChain(req) : undefined,
    host: capped(req.headers.host, MAX_AUDIT_HEADER_CHARS),
    method: req.method ?? "",
    error,
    decision: decisionOf(error.code),
    latencyMs: 0,
  });
}

/**
 * node:http's `clientError`: what its parser refuses (conflicting Content-Length and Transfer-Encoding, a folded
 * header, a bad chunk, a header section over its limit) and requests that time out. Node would answer with an
 * empty 400/431/408; the gateway answers with its catalogue's problem+json and an audit line instead.
 */
export function createClientErrorListener(
  deps: PipelineDeps,
): (error: Error & { code?: string }, socket: Duplex) => void {
  return (error, socket) => {
    const inFlight = (socket as HttpConnection)._httpMessage ?? undefined;
    // The client reset the connection, or left or broke the framing in the middle of a request the pipeline is
    // handling (which records it, as the client's doing): nothing more is answered on it.
    if (
      error.code === "ECONNRESET" ||
      !socket.writable ||
      (inFlight !== undefined && !inFlight.req.complete)
    ) {
      socket.destroy();
      return;
    }
    const refusal =
      error.code === "HPE_HEADER_OVERFLOW"
        ? new GatewayError("PG_ERR_HEADERS_TOO_LARGE", "header section over the parser's limit")
        : error.code === "ERR_HTTP_REQUEST_TIMEOUT"
          ? new GatewayError("PG_ERR_REQUEST_TIMEOUT", "request not received in time")
          : error.code === "HPE_INVALID_METHOD"
            ? new GatewayError("PG_ERR_UNKNOWN_METHOD", "the HTTP parser does not know the method")
            : new GatewayError(
                "PG_ERR_BAD_REQUEST",
                `the HTTP parser refused the request (${error.code ?? "unknown"})`,
              );
    if (inFlight === undefined) {
      answerWithoutResponse(deps, socket, "", refusal);
      return;
    }
    // A pipelined request after one received whole and still being answered: that answer goes out first, then
    // this one, and the connection closes (its parser cannot go on).
    let answered = false;
    const answerAfter = (): void => {
      if (answered) return;
      answered = true;
      if (socket.writable) answerWithoutResponse(deps, socket, "", refusal);
      else socket.destroy();
    };
    inFlight.once("finish", answerAfter);
    inFlight.once("close", answerAfter);
  };
}

const idleSince = Symbol("phantomgate.idleSince");
/** When a connection was opened or its last request was answered (performance.now()). */
interface IdleSince {
  [idleSince]?: number;
}

/** node:http's `connection`: notes when the connection opened, for requests the parser refuses before any other. */
export function onConnection(socket: Duplex): void {
  (socket as Duplex & IdleSince)[idleSince] = performance.now();
}

/** node:http's `connect`: CONNECT is never proxied (without a listener node would drop the connection silently). */
export function createConnectListener(deps: PipelineDeps): (req: IncomingMessage, socket: Duplex) => void {
  return (_req, socket) => {
    answerWithoutResponse(
      deps,
      socket,
      "CONNECT",
      new GatewayError("PG_ERR_BAD_REQUEST", "CONNECT is not proxied"),
    );
  };
}

/**
 * The node:http listeners for the public port: `request`, and `checkContinue` for requests with
 * `Expect: 100-continue` (registering it stops node from sending 100 before the gateway's checks ran).
 */
export function createRequestListener(deps: PipelineDeps): {
  readonly request: Listener;
  readonly checkContinue: Listener;
} {
  const listener =
    (awaitingContinue: boolean): Listener =>
    (req, res) => {
      try {
        // A request pipelined behind a body the gateway refused and stopped reading: the connection's answer said
        // close, so this one is never run (nor forwarded); the connection goes once the lingering ends.
        if (isLingering(req.socket)) {
          req.resume();
          recordNotRun(deps, req);
          return;
        }
        const traceparent = typeof req.headers.traceparent === "string" ? req.headers.traceparent : undefined;
        const ctx = new RequestContext(req, res, deps, traceparent, awaitingContinue);
        deps.metrics.requests.started();
        ctx.run(0); // never throws: every failure becomes the request's answer
      } catch (error) {
        deps.logger.error({ err: error }, "request handler crashed");
        answerCrash(res);
      }
    };
  return { request: listener(false), checkContinue: listener(true) };
}
