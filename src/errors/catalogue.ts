// The one error catalogue: every error a client or operator can see, with its code, HTTP status and a message
// that is safe to show: the gateway's, then the operator snapshot service's. Callers switch on `code`;
// docs/errors.md is kept in step by a test.

export interface ErrorSpec {
  readonly status: number;
  /** Short problem title (RFC 9457 `title`). */
  readonly title: string;
  /** RFC 6750 error code for `WWW-Authenticate`, when the error concerns the bearer token. */
  readonly bearerError?: "invalid_request" | "invalid_token" | "insufficient_scope";
  /** Safe, generic description shown to clients. */
  readonly detail: string;
}

export const errorCatalogue = {
  PG_ERR_TOKEN_MISSING: {
    status: 401,
    title: "Unauthorized",
    detail: "This route requires a bearer token in the Authorization header.",
  },
  PG_ERR_TOKEN_INVALID: {
    status: 401,
    title: "Unauthorized",
    bearerError: "invalid_token",
    detail: "The access token is invalid, expired or revoked.",
  },
  PG_ERR_TOKEN_AUDIENCE: {
    status: 401,
    title: "Unauthorized",
    bearerError: "invalid_token",
    detail: "The access token was not issued for this API (audience); request one for this API's resource.",
  },
  PG_ERR_TOKEN_MALFORMED_HEADER: {
    status: 400,
    title: "Bad Request",
    bearerError: "invalid_request",
    detail: "The Authorization header must be a single 'Bearer <token>' value.",
  },
  PG_ERR_TOKEN_IN_QUERY: {
    status: 400,
    title: "Bad Request",
    bearerError: "invalid_request",
    detail: "Access tokens are accepted only in the Authorization header, not in the query or body.",
  },
  PG_ERR_INSUFFICIENT_SCOPE: {
    status: 403,
    title: "Forbidden",
    bearerError: "insufficient_scope",
    detail: "The access token lacks a scope this route requires.",
  },
  PG_ERR_ROUTE_NOT_FOUND: {
    status: 404,
    title: "Not Found",
    detail: "No route matches this host and path.",
  },
  PG_ERR_METHOD_NOT_ALLOWED: {
    status: 405,
    title: "Method Not Allowed",
    detail: "This route does not accept the request method.",
  },
  PG_ERR_BAD_PATH: {
    status: 400,
    title: "Bad Request",
    detail: "The request path is not allowed (encoded separators, NUL, or it escapes the root).",
  },
  PG_ERR_BAD_REQUEST: {
    status: 400,
    title: "Bad Request",
    detail: "The request is malformed.",
  },
  PG_ERR_URI_TOO_LONG: {
    status: 414,
    title: "URI Too Long",
    detail: "The request URL exceeds the gateway's limit.",
  },
  PG_ERR_HEADERS_TOO_LARGE: {
    status: 431,
    title: "Request Header Fields Too Large",
    detail: "The request headers exceed the gateway's limit.",
  },
  PG_ERR_BODY_TOO_LARGE: {
    status: 413,
    title: "Content Too Large",
    detail: "The request body exceeds the route's limit.",
  },
  PG_ERR_AS_UNAVAILABLE: {
    status: 503,
    title: "Service Unavailable",
    detail: "The authorization server could not be reached; the request was not forwarded. Retry later.",
  },
  PG_ERR_TOO_MANY_NEW_TOKENS: {
    status: 429,
    title: "Too Many Requests",
    detail:
      "Too many tokens from this client are being checked at the authorization server at once; the request was not forwarded. Retry later.",
  },
  PG_ERR_NOT_READY: {
    status: 503,
    title: "Service Unavailable",
    detail: "The gateway has no configuration yet. Retry later.",
  },
  PG_ERR_UPSTREAM_TIMEOUT: {
    status: 504,
    title: "Gateway Timeout",
    detail: "The upstream API did not answer in time.",
  },
  PG_ERR_UPSTREAM_UNAVAILABLE: {
    status: 502,
    title: "Bad Gateway",
    detail: "The upstream API could not be reached.",
  },
  PG_ERR_UPSTREAM_OVERLOADED: {
    status: 503,
    title: "Service Unavailable",
    detail:
      "The upstream API has as many requests in flight as the gateway sends it; the request was not forwarded. Retry later.",
  },
  PG_ERR_CLIENT_CLOSED: {
    status: 499,
    title: "Client Closed Request",
    detail: "The client closed the connection before its response started.",
  },
  PG_ERR_CONNECTION_CLOSING: {
    status: 503,
    title: "Service Unavailable",
    detail:
      "The request arrived on a connection the gateway was closing; it was not run. Send it again on a new connection.",
  },
  PG_ERR_CLIENT_TIMEOUT: {
    status: 408,
    title: "Request Timeout",
    detail: "The client stopped reading its response; the connection was closed.",
  },
  PG_ERR_REQUEST_TIMEOUT: {
    status: 408,
    title: "Request Timeout",
    detail: "The request was not received in time; the connection was closed.",
  },
  PG_ERR_EXPECTATION_FAILED: {
    status: 417,
    title: "Expectation Failed",
    detail: "The only expectation the gateway meets is Expect: 100-continue.",
  },
  PG_ERR_UNSUPPORTED_ENCODING: {
    status: 415,
    title: "Unsupported Media Type",
    detail: "A form or multipart body must not be compressed: the gateway checks it for tokens.",
  },
  PG_ERR_BAD_MULTIPART: {
    status: 400,
    title: "Bad Request",
    detail:
      "The multipart body could not be read as multipart/form-data (no boundary, a part without a name, or malformed).",
  },
  PG_ERR_FORM_BUDGET_EXHAUSTED: {
    status: 503,
    title: "Service Unavailable",
    detail: "The gateway is holding as many form bodies as it may at once. Retry later.",
  },
  PG_ERR_NOT_IMPLEMENTED: {
    status: 501,
    title: "Not Implemented",
    detail: "The request uses a transfer coding or a protocol upgrade the gateway does not support.",
  },
  PG_ERR_UNKNOWN_METHOD: {
    status: 501,
    title: "Not Implemented",
    detail: "The request method is not an HTTP method the gateway knows.",
  },
  PG_ERR_HTTP_VERSION_NOT_SUPPORTED: {
    status: 505,
    title: "HTTP Version Not Supported",
    detail: "The gateway speaks HTTP/1.0 and HTTP/1.1 only.",
  },
  PG_ERR_INTERNAL: {
    status: 500,
    title: "Internal Server Error",
    detail: "The gateway failed to handle the request.",
  },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof errorCatalogue;

/**
 * The errors of the operator's snapshot service (src/operator/distribute/server.ts): what gateways and revocation
 * callers can get back from it. Same shape and rules as the gateway's; documented in docs/errors.md too.
 */
export const distributionErrorCatalogue = {
  PG_ERR_DIST_TOKEN_MISSING: { status: 401, title: "Unauthorized", detail: "A bearer token is required." },
  PG_ERR_DIST_TOKEN_INVALID: {
    status: 401,
    title: "Unauthorized",
    detail: "The bearer token is invalid, expired or not bound to this service's audience.",
  },
  PG_ERR_DIST_FORBIDDEN: {
    status: 403,
    title: "Forbidden",
    detail: "This identity may not use this endpoint.",
  },
  PG_ERR_DIST_BAD_REQUEST: { status: 400, title: "Bad Request", detail: "The request is malformed." },
  PG_ERR_DIST_TOO_LARGE: {
    status: 413,
    title: "Content Too Large",
    detail: "The request body is too large.",
  },
  PG_ERR_DIST_BODY_TIMEOUT: {
    status: 408,
    title: "Request Timeout",
    detail: "The request body did not arrive in time.",
  },
  PG_ERR_DIST_NOT_FOUND: { status: 404, title: "Not Found", detail: "No such endpoint." },
  PG_ERR_DIST_METHOD: {
    status: 405,
    title: "Method Not Allowed",
    detail: "The endpoint does not take this method.",
  },
  PG_ERR_DIST_UNAVAILABLE: {
    status: 503,
    title: "Service Unavailable",
    detail: "The Kubernetes API server could not review the request; try again.",
  },
  PG_ERR_DIST_NOT_RECORDED: {
    status: 503,
    title: "Service Unavailable",
    detail:
      "The revocation reached the gateways of this replica but could not be recorded for the other replicas; send it again.",
  },
} as const satisfies Record<string, Omit<ErrorSpec, "bearerError">>;

export type DistributionErrorCode = keyof typeof distributionErrorCatalogue;

/** An error with a catalogue code. `reason` is internal (logs, audit), never sent to clients. */
export class GatewayError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly reason: string;
  /** Extra safe details for the client (e.g. the missing scope, the allowed methods). */
  readonly extra: Readonly<Record<string, string>>;

  constructor(code: ErrorCode, reason: string, extra: Record<string, string> = {}, options?: ErrorOptions) {
    super(`${code}: ${reason}`, options);
    this.name = "GatewayError";
    this.code = code;
    this.status = errorCatalogue[code].status;
    this.reason = reason;
    this.extra = extra;
  }
}

export function isGatewayError(value: unknown): value is GatewayError {
  return value instanceof GatewayError;
}
