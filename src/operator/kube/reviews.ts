// Who is calling the operator: TokenReview (is this bearer token valid, for our audience, and whose is it?) and
// SubjectAccessReview (may that user create revocations?), both answered by the Kubernetes API server. Positive
// answers are cached briefly, keyed by the token's fingerprint — never the token — so a reconnect storm or a
// stream of ACKs does not become a stream of reviews; negative answers are never cached.
import type { KubeConfig } from "@kubernetes/client-node";
import {
  AuthenticationV1Api,
  AuthorizationV1Api,
  V1ResourceAttributes,
  V1SubjectAccessReview,
  V1SubjectAccessReviewSpec,
  V1TokenReview,
  V1TokenReviewSpec,
} from "@kubernetes/client-node";
import { LRUCache } from "lru-cache";
import { systemClock, type Clock } from "../../tokens/clock.ts";
import { fingerprintToken } from "../../tokens/fingerprint.ts";

/** The answer of a token review, reduced to what the operator uses. */
export interface TokenReviewResult {
  readonly authenticated: boolean;
  readonly username?: string;
  readonly groups?: string[];
  /** Why the token was not accepted (from the API server or our audience check); never contains the token. */
  readonly error?: string;
}

/** Authenticates and authorises callers of the distribution server. */
export interface TokenReviewer {
  /**
   * Reviews a bearer token for `audiences`. Resolves `{ authenticated: false }` for tokens the API server
   * rejects; rejects with {@link ReviewUnavailableError} when the API server cannot answer.
   */
  reviewToken(token: string, audiences: readonly string[]): Promise<TokenReviewResult>;
  /** Whether `user` (with `groups`) may `create` `revocations.phantomgate.dev`. Rejects when it cannot tell. */
  canCreateRevocations(user: string, groups: readonly string[]): Promise<boolean>;
}

/** The API server could not be asked (network, timeout, 5xx, or the operator lacks RBAC for reviews). */
export class ReviewUnavailableError extends Error {
  override readonly name = "ReviewUnavailableError";
  readonly code = "PG_ERR_REVIEW_UNAVAILABLE";
}

/** The raw API calls, so the caching layer can be exercised without an API server. */
export interface ReviewBackend {
  tokenReview(
    token: string,
    audiences: readonly string[],
  ): Promise<{
    authenticated: boolean;
    audiences: readonly string[];
    username?: string | undefined;
    groups?: readonly string[] | undefined;
    error?: string | undefined;
  }>;
  subjectAccessReview(spec: {
    user: string;
    groups: readonly string[];
    namespace: string | undefined;
    verb: string;
    group: string;
    resource: string;
  }): Promise<boolean>;
}

export interface TokenReviewerOptions {
  /** How long a positive review is reused. Default 30 s (and never past the token's own `exp`). */
  readonly cacheTtlMs?: number;
  /** Bound on cached reviews. Default 10,000. */
  readonly maxEntries?: number;
  /** Each review call gives up after this long. Default 5 s. */
  readonly timeoutMs?: number;
  /**
   * Namespace of the revocation permission check. When set, a Role in that namespace (the operator's) or a
   * ClusterRole binding grants it; when unset, only a ClusterRole binding does.
   */
  readonly revocationNamespace?: string | undefined;
  readonly clock?: Clock;
}

/** The group and resource a revocation caller needs `create` on (a virtual resource: only RBAC knows it). */
export const REVOCATION_PERMISSION = {
  group: "phantomgate.dev",
  resource: "revocations",
  verb: "create",
} as const;

function describeFailure(error: unknown): string {
  // Never pass on a library's message verbatim: it may quote a request. Status codes and error codes only.
  if (typeof error === "object" && error !== null) {
    const record = error as { code?: unknown; name?: unknown };
    if (typeof record.code === "number") return `API server answered HTTP ${record.code}`;
    if (typeof record.code === "string") return `API server unreachable (${record.code})`;
    if (record.name === "TimeoutError") return "API server did not answer in time";
  }
  return "API server request failed";
}

async function withTimeout<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => {
      reject(new ReviewUnavailableError(`${what}: API server did not answer within ${timeoutMs} ms`));
    }, timeoutMs);
  });
  try {
    return await Promise.race([promise, timeout]);
  } catch (error) {
    if (error instanceof ReviewUnavailableError) throw error;
    throw new ReviewUnavailableError(`${what}: ${describeFailure(error)}`);
  } finally {
    clearTimeout(timer);
  }
}

/** `exp` of a JWT in epoch ms, read without verification: used only to shorten how long a review is cached. */
function jwtExpiryMs(token: string): number | undefined {
  const payload = token.split(".")[1];
  if (payload === undefined) return undefined;
  try {
    const claims = JSON.parse(Buffer.from(payload, "base64url").toString("utf8")) as { exp?: unknown };
    return typeof claims.exp === "number" ? claims.exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}

/** Reviews through the Kubernetes API with the operator's own credentials. */
export function createKubeReviewBackend(kubeConfig: KubeConfig): ReviewBackend {
  const authentication = kubeConfig.makeApiClient(AuthenticationV1Api);
  const authorization = kubeConfig.makeApiClient(AuthorizationV1Api);
  return {
    async tokenReview(token, audiences) {
      // The generated client wants its model classes, not object literals.
      const body = new V1TokenReview();
      body.apiVersion = "authentication.k8s.io/v1";
      body.kind = "TokenReview";
      body.spec = new V1TokenReviewSpec();
      body.spec.token = token;
      body.spec.audiences = [...audiences];
      const status = (await authentication.createTokenReview({ body })).status;
      return {
        authenticated: status?.authenticated === true,
        audiences: status?.audiences ?? [],
        username: status?.user?.username,
        groups: status?.user?.groups,
        error: status?.error,
      };
    },
    async subjectAccessReview(spec) {
      const attributes = new V1ResourceAttributes();
      if (spec.namespace !== undefined) attributes.namespace = spec.namespace;
      attributes.verb = spec.verb;
      attributes.group = spec.group;
      attributes.resource = spec.resource;
      const body = new V1SubjectAccessReview();
      body.apiVersion = "authorization.k8s.io/v1";
      body.kind = "SubjectAccessReview";
      body.spec = new V1SubjectAccessReviewSpec();
      body.spec.user = spec.user;
      body.spec.groups = [...spec.groups];
      body.spec.resourceAttributes = attributes;
      const status = (await authorization.createSubjectAccessReview({ body })).status;
      return status?.allowed === true && status.denied !== true;
    },
  };
}

/** Adds audience checking, timeouts and a short positive cache to a {@link ReviewBackend}. */
export function createCachingTokenReviewer(
  backend: ReviewBackend,
  options: TokenReviewerOptions = {},
): TokenReviewer {
  const clock = options.clock ?? systemClock;
  const ttlMs = options.cacheTtlMs ?? 30_000;
  const timeoutMs = options.timeoutMs ?? 5_000;
  const maxEntries = options.maxEntries ?? 10_000;
  const tokens = new LRUCache<string, { result: TokenReviewResult; expiresAtMs: number }>({
    max: maxEntries,
  });
  const permissions = new LRUCache<string, { expiresAtMs: number }>({ max: maxEntries });

  return {
    async reviewToken(token, audiences) {
      const key = `${fingerprintToken(token)}\0${audiences.join("\0")}`;
      const nowMs = clock.now();
      const cached = tokens.get(key);
      if (cached !== undefined && cached.expiresAtMs > nowMs) return cached.result;
      const status = await withTimeout(backend.tokenReview(token, audiences), timeoutMs, "TokenReview");
      if (!status.authenticated) {
        return { authenticated: false, error: status.error ?? "token not authenticated" };
      }
      // An authenticator that is not audience-aware answers with no audiences: then the token is only good for
      // the API server itself, not for us (see the TokenReview API reference).
      if (audiences.length > 0 && !status.audiences.some((a) => audiences.includes(a))) {
        return { authenticated: false, error: "token is not valid for this audience" };
      }
      if (status.username === undefined || status.username === "") {
        return { authenticated: false, error: "token review named no user" };
      }
      const result: TokenReviewResult = {
        authenticated: true,
        username: status.username,
        groups: [...(status.groups ?? [])],
      };
      const expiresAtMs = Math.min(nowMs + ttlMs, jwtExpiryMs(token) ?? Number.POSITIVE_INFINITY);
      if (expiresAtMs > nowMs) tokens.set(key, { result, expiresAtMs });
      return result;
    },
    async canCreateRevocations(user, groups) {
      const key = `${user}\0${[...groups].sort().join("\0")}`;
      const nowMs = clock.now();
      const cached = permissions.get(key);
      if (cached !== undefined && cached.expiresAtMs > nowMs) return true;
      const allowed = await withTimeout(
        backend.subjectAccessReview({
          user,
          groups,
          namespace: options.revocationNamespace,
          ...REVOCATION_PERMISSION,
        }),
        timeoutMs,
        "SubjectAccessReview",
      );
      if (allowed) permissions.set(key, { expiresAtMs: nowMs + ttlMs });
      return allowed;
    },
  };
}

/** A {@link TokenReviewer} backed by the API server of `kubeConfig` (in-cluster or a kubeconfig file). */
export function createKubeTokenReviewer(
  kubeConfig: KubeConfig,
  options: TokenReviewerOptions = {},
): TokenReviewer {
  return createCachingTokenReviewer(createKubeReviewBackend(kubeConfig), options);
}
