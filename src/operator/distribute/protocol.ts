// The snapshot stream's wire contract (docs/architecture.md, "Operator — layout and wire protocol"): paths,
// message shapes and NDJSON framing. Imported by both ends — the operator's distribution server and the
// gateway's control-plane source — so the two cannot drift apart. Only zod and the snapshot types here.
import { z } from "zod";
import type { Snapshot } from "../../snapshot/snapshot.ts";

/** The audience every caller's projected ServiceAccount token must carry. */
export const DEFAULT_STREAM_AUDIENCE = "phantomgate";

export const STREAM_PATH = "/v1/stream";
export const ACKS_PATH = "/v1/acks";
export const REVOCATIONS_PATH = "/v1/revocations";
export const NDJSON_CONTENT_TYPE = "application/x-ndjson";

/** The server writes a ping this often so a gateway can tell a quiet stream from a dead one. */
export const PING_INTERVAL_MS = 10_000;
/** A gateway that has received nothing for this long treats the stream as stalled and reconnects. */
export const STALL_TIMEOUT_MS = 30_000;
/**
 * How long the operator keeps revocations to replay them to every stream that opens. A gateway that was
 * disconnected for longer may have missed some, so it drops its cached token facts when it reconnects.
 */
export const REVOCATION_REPLAY_MS = 15 * 60_000;

/**
 * The other direction: a stream opened with `POST` carries a request body that is itself NDJSON, one
 * {@link HEARTBEAT_LINE} per heartbeat interval. The server closes a stream whose body has been silent for its
 * liveness timeout, so a frozen or vanished gateway stops counting as connected within seconds instead of when
 * TCP gives up. (A `GET` stream — a gateway of an older release — sends nothing and is not checked.)
 */
export const DEFAULT_LIVENESS_TIMEOUT_MS = 30_000;
/** The response header in which the server tells the gateway its heartbeat interval in ms. */
export const HEARTBEAT_HEADER = "x-phantomgate-heartbeat-ms";
/** The heartbeat interval a gateway uses when the header is absent or unreadable. */
export const DEFAULT_HEARTBEAT_INTERVAL_MS = 10_000;
/** Bounds a gateway applies to the interval the header asks for. */
export const MIN_HEARTBEAT_INTERVAL_MS = 100;
export const MAX_HEARTBEAT_INTERVAL_MS = 60_000;
/** What the gateway writes into the request body of a `POST` stream, once per heartbeat interval. */
export const HEARTBEAT_LINE = '{"type":"heartbeat"}\n';

/** The interval the server asks for: a third of its liveness timeout, so two lost heartbeats are survived. */
export function heartbeatIntervalFor(livenessTimeoutMs: number): number {
  return Math.max(1, Math.floor(livenessTimeoutMs / 3));
}

/** The interval a gateway uses, from the server's {@link HEARTBEAT_HEADER} (clamped; the default without it). */
export function parseHeartbeatInterval(header: string | readonly string[] | undefined): number {
  const text = typeof header === "string" ? header : header?.[0];
  if (text === undefined || !/^\s*\d{1,12}\s*$/.test(text)) return DEFAULT_HEARTBEAT_INTERVAL_MS;
  return Math.min(MAX_HEARTBEAT_INTERVAL_MS, Math.max(MIN_HEARTBEAT_INTERVAL_MS, Number(text)));
}

/** A token fingerprint as `fingerprintToken` makes it: base64url SHA-256, 43 characters. */
export const fingerprintSchema = z.string().regex(/^[A-Za-z0-9_-]{43}$/, "not a token fingerprint");

/** Gateway names: what a Pod name can be, so they are safe in logs, metrics and status. */
export const gatewayNameSchema = z
  .string()
  .min(1)
  .max(253)
  .regex(/^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$/, "must be a DNS-style name");

/** Snapshot revisions as compile makes them; kept loose (opaque, bounded) so a NACK can name any revision. */
export const revisionSchema = z.string().min(1).max(128);

/**
 * One line of the stream as the gateway reads it. The snapshot body is left unparsed here: the gateway parses
 * it with `snapshotSchema` itself, so a bad snapshot becomes a NACK with a reason rather than a framing error.
 */
export const streamMessageSchema = z.discriminatedUnion("type", [
  z.object({ type: z.literal("snapshot"), snapshot: z.unknown() }),
  z.object({ type: z.literal("revoke"), fingerprints: z.array(z.string()) }),
  z.object({ type: z.literal("ping") }),
  z.object({ type: z.literal("forget-tokens") }),
  z.object({ type: z.literal("current"), revision: revisionSchema }),
]);
export type StreamMessage = z.infer<typeof streamMessageSchema>;

/** What the server writes (typed on the way out). */
export type OutboundStreamMessage =
  | { readonly type: "snapshot"; readonly snapshot: Snapshot }
  | { readonly type: "revoke"; readonly fingerprints: readonly string[] }
  | { readonly type: "ping" }
  /**
   * The operator cannot vouch that this gateway got every recent revocation (it missed some itself): drop every
   * cached token fact. A gateway that does not know the type ignores it.
   */
  | { readonly type: "forget-tokens" }
  /**
   * Sent at connect instead of the snapshot when the gateway already has the current revision (it started from
   * its last-known-good copy): the operator vouches for it. A gateway that does not know the type ignores it.
   */
  | { readonly type: "current"; readonly revision: string };

export const ackBodySchema = z
  .object({
    gateway: gatewayNameSchema,
    revision: revisionSchema,
    status: z.enum(["ACK", "NACK"]),
    reason: z.string().max(4096).optional(),
  })
  .strict();
export type AckBody = z.infer<typeof ackBodySchema>;

/** At most this many fingerprints or tokens per revocation call. */
export const MAX_REVOCATIONS_PER_CALL = 10_000;

export const revocationBodySchema = z
  .object({
    fingerprints: z.array(fingerprintSchema).max(MAX_REVOCATIONS_PER_CALL).optional(),
    // Raw tokens are hashed on arrival; zod's messages never quote the value, so errors cannot leak one.
    tokens: z.array(z.string().min(1).max(16_384)).max(MAX_REVOCATIONS_PER_CALL).optional(),
  })
  .strict()
  .refine((body) => (body.fingerprints?.length ?? 0) + (body.tokens?.length ?? 0) > 0, {
    error: "give at least one of fingerprints or tokens",
  });
export type RevocationBody = z.infer<typeof revocationBodySchema>;

export interface RevocationResult {
  /** Distinct fingerprints fanned out. */
  readonly revoked: number;
  /** Gateway streams they were written to. */
  readonly gateways: number;
}

/** One NDJSON line. `JSON.stringify` escapes newlines inside strings, so the only newline is the terminator. */
export function encodeStreamMessage(message: OutboundStreamMessage): string {
  return `${JSON.stringify(message)}\n`;
}

/** Thrown by the line splitter when one line outgrows its bound (a broken or hostile peer). */
export class LineTooLongError extends Error {
  override readonly name = "LineTooLongError";
}

export interface LineSplitter {
  /** Feeds decoded text; calls `onLine` for each complete line (without the newline, empty lines skipped). */
  push(text: string): void;
  /** Characters held for the unfinished line. */
  pending(): number;
}

/**
 * Splits a text stream into lines. A snapshot line can be megabytes arriving in many chunks, so the unfinished
 * line is kept as a list of parts and only each new chunk is scanned for a newline (linear, not quadratic).
 */
export function createLineSplitter(onLine: (line: string) => void, maxLineChars: number): LineSplitter {
  let parts: string[] = [];
  let held = 0;
  return {
    push(text) {
      let start = 0;
      for (;;) {
        const newline = text.indexOf("\n", start);
        if (newline === -1) break;
        const tail = text.slice(start, newline);
        const line = parts.length === 0 ? tail : parts.join("") + tail;
        parts = [];
        held = 0;
        if (line.length > maxLineChars) throw new LineTooLongError(`line of ${line.length} characters`);
        const trimmed = line.endsWith("\r") ? line.slice(0, -1) : line;
        if (trimmed.length > 0) onLine(trimmed);
        start = newline + 1;
      }
      if (start < text.length) {
        const rest = start === 0 ? text : text.slice(start);
        held += rest.length;
        if (held > maxLineChars)
          throw new LineTooLongError(`unterminated line over ${maxLineChars} characters`);
        parts.push(rest);
      }
    },
    pending: () => held,
  };
}

/** Splits `system:serviceaccount:<namespace>:<name>` into `<namespace>:<name>`, or undefined for other users. */
export function serviceAccountOf(username: string): string | undefined {
  const prefix = "system:serviceaccount:";
  if (!username.startsWith(prefix)) return undefined;
  const rest = username.slice(prefix.length);
  const colon = rest.indexOf(":");
  if (colon <= 0 || colon === rest.length - 1 || rest.indexOf(":", colon + 1) !== -1) return undefined;
  return rest;
}
