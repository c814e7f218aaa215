// The audit trail of API-to-API calls: one record per outbound call (also for calls refused before sending),
// naming tokens only by fingerprint. A sink decides where records go; the default writes JSON lines.
import type { SdkErrorCode } from "./errors.ts";

/** How a token reached the callee. */
export type TokenPattern = "exchange" | "embed" | "share";

/**
 * One outbound call. Tokens appear only as base64url SHA-256 fingerprints, so a line can be matched with the
 * gateway's audit line (same `callerTokenFingerprint` as the JWT the gateway forwarded) without revealing a token.
 */
export interface ApiCallAuditRecord {
  /** ISO 8601, from the client's clock. */
  readonly time: string;
  readonly event: "api_call";
  /** This API (the `service` option). */
  readonly from: string;
  readonly fromDomain: string;
  /** The callee's name in the `services` map. */
  readonly to: string;
  readonly toDomain: string;
  readonly pattern: TokenPattern;
  readonly method: string;
  /** Path without the query string. */
  readonly path: string;
  readonly sub: string;
  readonly clientId: string | undefined;
  /** Fingerprint of the JWT the caller presented to this API. */
  readonly callerTokenFingerprint: string;
  /** Fingerprint of the token sent to the callee; undefined when nothing was sent. */
  readonly sentTokenFingerprint: string | undefined;
  /** `aud` of the token sent (exchange: the requested audience). */
  readonly audience: readonly string[] | undefined;
  /** Scopes of the token sent. */
  readonly scopes: readonly string[] | undefined;
  /** Exchange only: whether the exchanged token came from the cache. */
  readonly exchangeCache: "hit" | "miss" | undefined;
  /** `ok`: the callee answered (any status); `refused`: the SDK did not send; `failed`: no answer. */
  readonly outcome: "ok" | "refused" | "failed";
  /** The callee's HTTP status, when it answered. */
  readonly status: number | undefined;
  readonly errorCode: SdkErrorCode | undefined;
  /** Internal, safe reason for `refused`/`failed`. */
  readonly reason: string | undefined;
  readonly latencyMs: number;
  /** The `x-request-id` propagated to the callee, when given. */
  readonly requestId: string | undefined;
}

/** Receives audit records. Must not throw; must not block (buffer or drop instead). */
export type AuditSink = (record: ApiCallAuditRecord) => void;

/**
 * A sink writing one JSON line per record to a stream (stdout, a file stream, a pino destination…).
 *
 * @example
 * ```ts
 * import { createApiClient, createJsonLineAuditSink } from "phantomgate/sdk";
 *
 * const client = createApiClient({ ...options, audit: createJsonLineAuditSink(process.stderr) });
 * ```
 */
export function createJsonLineAuditSink(stream: { write(chunk: string): unknown }): AuditSink {
  return (record) => {
    stream.write(`${JSON.stringify(record)}\n`);
  };
}
