// The SDK's one error catalogue: every error an API built on `phantomgate/sdk` can meet, with its code, the HTTP
// status the API answers with and a message that is safe to show. Callers switch on `code`; docs/writing-an-api.md
// lists the same codes (a test keeps them in step).

/** What one SDK error code means on the wire. */
export interface SdkErrorSpec {
  readonly status: number;
  /** Short problem title (RFC 9457 `title`). */
  readonly title: string;
  /** RFC 6750 error code for `WWW-Authenticate`, when the error concerns the bearer token. */
  readonly bearerError?: "invalid_request" | "invalid_token" | "insufficient_scope";
  /** Safe, generic description shown to callers (a policy denial shows its own reason instead). */
  readonly detail: string;
}

/**
 * Every SDK error code. Inbound errors (`PG_SDK_TOKEN_*`, `PG_SDK_KEYS_UNAVAILABLE`, `PG_SDK_INSUFFICIENT_SCOPE`,
 * `PG_SDK_FORBIDDEN`) answer the caller of your API; outbound errors (API-to-API calls) are thrown to your code
 * and, if you let them escape a handler, become a 5xx without internals.
 *
 * @example
 * ```ts
 * import { SdkError } from "phantomgate/sdk";
 *
 * try {
 *   await client.share(request.identity, "payments", { path: "/payments/inv-1" });
 * } catch (error) {
 *   if (error instanceof SdkError && error.code === "PG_SDK_SHARE_ACROSS_DOMAINS") {
 *     // a configuration mistake: use client.exchange(...) for another security domain
 *   }
 *   throw error;
 * }
 * ```
 */
export const sdkErrorCatalogue = {
  PG_SDK_TOKEN_MISSING: {
    status: 401,
    title: "Unauthorized",
    detail: "This API requires an internal JWT in the Authorization header (Bearer).",
  },
  PG_SDK_TOKEN_MALFORMED_HEADER: {
    status: 400,
    title: "Bad Request",
    bearerError: "invalid_request",
    detail: "The Authorization header must be a single 'Bearer <token>' value.",
  },
  PG_SDK_TOKEN_INVALID: {
    status: 401,
    title: "Unauthorized",
    bearerError: "invalid_token",
    detail: "The internal JWT is invalid.",
  },
  PG_SDK_TOKEN_EXPIRED: {
    status: 401,
    title: "Unauthorized",
    bearerError: "invalid_token",
    detail: "The internal JWT has expired.",
  },
  PG_SDK_TOKEN_WRONG_AUDIENCE: {
    status: 401,
    title: "Unauthorized",
    bearerError: "invalid_token",
    detail: "The internal JWT is not addressed to this API.",
  },
  PG_SDK_KEYS_UNAVAILABLE: {
    status: 503,
    title: "Service Unavailable",
    detail: "The keys needed to verify the internal JWT could not be fetched. Retry later.",
  },
  PG_SDK_INSUFFICIENT_SCOPE: {
    status: 403,
    title: "Forbidden",
    bearerError: "insufficient_scope",
    detail: "The internal JWT lacks a scope this operation requires.",
  },
  PG_SDK_FORBIDDEN: {
    status: 403,
    title: "Forbidden",
    detail: "A policy denied access to this resource.",
  },
  PG_SDK_UNKNOWN_SERVICE: {
    status: 500,
    title: "Internal Server Error",
    detail: "The API failed to handle the request.",
  },
  PG_SDK_SHARE_ACROSS_DOMAINS: {
    status: 500,
    title: "Internal Server Error",
    detail: "The API failed to handle the request.",
  },
  PG_SDK_EMBEDDED_TOKEN_MISSING: {
    status: 502,
    title: "Bad Gateway",
    detail: "A service this API depends on could not be called.",
  },
  PG_SDK_EMBEDDED_TOKEN_INVALID: {
    status: 502,
    title: "Bad Gateway",
    detail: "A service this API depends on could not be called.",
  },
  PG_SDK_EMBEDDED_TOKEN_EXPIRED: {
    status: 502,
    title: "Bad Gateway",
    detail: "A service this API depends on could not be called.",
  },
  PG_SDK_EMBEDDED_TOKEN_WRONG_AUDIENCE: {
    status: 502,
    title: "Bad Gateway",
    detail: "A service this API depends on could not be called.",
  },
  PG_SDK_EXCHANGE_REFUSED: {
    status: 401,
    title: "Unauthorized",
    bearerError: "invalid_token",
    detail: "The internal JWT can no longer be exchanged (expired or revoked).",
  },
  PG_SDK_EXCHANGE_FAILED: {
    status: 502,
    title: "Bad Gateway",
    detail: "A service this API depends on could not be called.",
  },
  PG_SDK_UPSTREAM_UNAVAILABLE: {
    status: 502,
    title: "Bad Gateway",
    detail: "A service this API depends on could not be called.",
  },
  PG_SDK_UPSTREAM_TIMEOUT: {
    status: 504,
    title: "Gateway Timeout",
    detail: "A service this API depends on did not answer in time.",
  },
  PG_SDK_UPSTREAM_RESPONSE_TOO_LARGE: {
    status: 502,
    title: "Bad Gateway",
    detail: "A service this API depends on answered with more data than this API accepts.",
  },
  PG_SDK_CONFIG_INVALID: {
    status: 500,
    title: "Internal Server Error",
    detail: "The API failed to handle the request.",
  },
} as const satisfies Record<string, SdkErrorSpec>;

/** Codes of {@link SdkError}, for `switch (error.code)`. */
export type SdkErrorCode = keyof typeof sdkErrorCatalogue;

/** Options of an {@link SdkError}. */
export interface SdkErrorOptions {
  /**
   * Text the caller may see instead of the catalogue's generic `detail`. Set only for policy denials, whose reason
   * is written by the API's author for its callers ("this invoice belongs to another customer").
   */
  readonly detail?: string;
  /** Extra safe members of the problem body (e.g. `scope` for insufficient_scope, `policy` for a denial). */
  readonly extra?: Readonly<Record<string, string>>;
}

/**
 * An SDK error: `code` from {@link SdkErrorCode}, the HTTP `status` to answer with, an internal `reason` for logs
 * (never a token: fingerprints only) and, for the caller, `detail` plus `extra`.
 *
 * @example
 * ```ts
 * throw new SdkError("PG_SDK_FORBIDDEN", "owner mismatch on inv-7", { detail: "not your invoice", extra: { policy: "owns-invoice" } });
 * ```
 */
export class SdkError extends Error {
  readonly code: SdkErrorCode;
  readonly status: number;
  /** Internal, safe description (logs and audit). Never sent to callers. */
  readonly reason: string;
  /** What the caller is told (RFC 9457 `detail`). */
  readonly detail: string;
  /** Extra safe members of the problem body. */
  readonly extra: Readonly<Record<string, string>>;

  constructor(code: SdkErrorCode, reason: string, options: SdkErrorOptions = {}) {
    super(`${code}: ${reason}`);
    this.name = "SdkError";
    this.code = code;
    this.status = sdkErrorCatalogue[code].status;
    this.reason = reason;
    this.detail = options.detail ?? sdkErrorCatalogue[code].detail;
    this.extra = Object.freeze({ ...options.extra });
  }
}

/** An HTTP error response, framework-neutral: write `status`, `headers` and `body` with any server. */
export interface ProblemResponse {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  /** RFC 9457 problem document, serialised. */
  readonly body: string;
}

const REALM = "phantomgate";
const RETRY_AFTER_SECONDS = 5;

function quote(value: string): string {
  return `"${value.replace(/["\\]/g, "")}"`;
}

/**
 * Renders an {@link SdkError} as RFC 9457 `application/problem+json` with an RFC 6750 `WWW-Authenticate`
 * challenge on 401/403 token errors and `Retry-After` on 503. 5xx bodies carry only the catalogue's generic text.
 *
 * @example
 * ```ts
 * import { createServer } from "node:http";
 * import { SdkError, problemResponse } from "phantomgate/sdk";
 *
 * createServer(async (req, res) => {
 *   try {
 *     const identity = await verifier.verifyAuthorization(req.headers.authorization);
 *     res.end(JSON.stringify({ hello: identity.sub }));
 *   } catch (error) {
 *     if (!(error instanceof SdkError)) throw error;
 *     const problem = problemResponse(error, { requestId: req.headers["x-request-id"] });
 *     res.writeHead(problem.status, problem.headers).end(problem.body);
 *   }
 * });
 * ```
 */
export function problemResponse(
  error: SdkError,
  context: { readonly requestId?: string | string[] | undefined } = {},
): ProblemResponse {
  const spec: SdkErrorSpec = sdkErrorCatalogue[error.code];
  const headers: Record<string, string> = {
    "content-type": "application/problem+json",
    "cache-control": "no-store",
  };
  if (spec.bearerError !== undefined || spec.status === 401) {
    let challenge = `Bearer realm=${quote(REALM)}`;
    if (spec.bearerError !== undefined) {
      challenge += `, error=${quote(spec.bearerError)}, error_description=${quote(spec.detail)}`;
    }
    const scope = error.extra["scope"];
    if (scope !== undefined) challenge += `, scope=${quote(scope)}`;
    headers["www-authenticate"] = challenge;
  }
  if (spec.status === 503) headers["retry-after"] = String(RETRY_AFTER_SECONDS);
  const body: Record<string, unknown> = {
    type: `https://phantomgate.dev/errors/${error.code}`,
    title: spec.title,
    status: spec.status,
    // Server-side failures never explain themselves to the caller: the reason is in the logs.
    detail: spec.status >= 500 ? spec.detail : error.detail,
    code: error.code,
  };
  const requestId = Array.isArray(context.requestId) ? context.requestId[0] : context.requestId;
  if (requestId !== undefined && requestId !== "") body["requestId"] = requestId;
  if (spec.status < 500) for (const [key, value] of Object.entries(error.extra)) body[key] ??= value;
  return { status: spec.status, headers, body: JSON.stringify(body) };
}
