// Request ids and W3C trace context for each request, from a pooled random buffer: one getrandom call per
// few hundred requests instead of one or two per request.
import { randomFillSync } from "node:crypto";

const traceparentPattern = /^00-([0-9a-f]{32})-[0-9a-f]{16}-([0-9a-f]{2})$/;

// The pool is turned into hex once per refill (one call into C++ per few hundred requests, not two or three
// per request); ids are copied out of that text.
const randomPool = Buffer.alloc(8 * 1024);
let poolHex = "";
let randomOffset = randomPool.length;

/** The offset of `bytes` fresh random bytes in the pool, refilling it when it runs out. */
function take(bytes: number): number {
  if (randomOffset + bytes > randomPool.length) {
    randomFillSync(randomPool);
    poolHex = randomPool.toString("hex");
    randomOffset = 0;
  }
  const at = randomOffset;
  randomOffset += bytes;
  return at;
}

/**
 * `bytes` random bytes as hex, copied out of the pool's text in pieces of 8 characters: V8 makes a substring
 * of 13 characters or more a view that keeps the whole 16 KiB text alive for as long as the id lives (a trace id
 * of a long-lived request).
 */
function randomHex(bytes: number): string {
  const from = 2 * take(bytes);
  const to = from + 2 * bytes;
  let hex = "";
  for (let i = from; i < to; i += 8) hex += poolHex.slice(i, Math.min(i + 8, to));
  return hex;
}

/** RFC 9562 variant digits: 10xx in binary. */
const VARIANT = ["8", "9", "a", "b"];

/** A random (version 4) UUID from the same pool: crypto.randomUUID() builds its string from 16 pieces. */
export function randomRequestId(): string {
  const at = 2 * take(16);
  const hex = poolHex;
  // The version digit (13th) is 4; the variant digit (17th) keeps two random bits. Every piece is short enough
  // to be copied (see randomHex).
  const variant = VARIANT[Number.parseInt(hex.charAt(at + 16), 16) & 3] ?? "8";
  return `${hex.slice(at, at + 8)}-${hex.slice(at + 8, at + 12)}-4${hex.slice(at + 13, at + 16)}-${variant}${hex.slice(at + 17, at + 20)}-${hex.slice(at + 20, at + 32)}`;
}

/**
 * The trace context for the upstream: the client's trace id when it sent a valid `traceparent` (its sampled
 * flag kept), else a new trace; always a new span id for the gateway's hop.
 */
export function startTrace(incoming: string | undefined): { traceId: string; traceparent: string } {
  const spanId = randomHex(8);
  const match = incoming === undefined ? null : traceparentPattern.exec(incoming);
  const traceId = match?.[1];
  if (match !== null && traceId !== undefined && traceId !== "0".repeat(32)) {
    return { traceId, traceparent: `00-${traceId}-${spanId}-${match[2] ?? "01"}` };
  }
  const fresh = randomHex(16);
  return { traceId: fresh, traceparent: `00-${fresh}-${spanId}-01` };
}
