// Request ids and W3C trace context for each request, from a pooled random buffer: one getrandom call per
// few hundred requests instead of one or two per request.
import { randomFillSync } from "node:crypto";

const traceparentPattern = /^00-([0-9a-f]{32})-[0-9a-f]{16}-([0-9a-f]{2})$/;

// The pool is turned into hex once per refill (one call into C++ per few hundred requests, not two or three
// per request); ids are slices of that text.
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

function randomHex(bytes: number): string {
  const at = take(bytes);
  return poolHex.slice(2 * at, 2 * (at + bytes));
}

/** RFC 9562 variant digits: 10xx in binary. */
const VARIANT = ["8", "9", "a", "b"];

/** A random (version 4) UUID from the same pool: crypto.randomUUID() builds its string from 16 pieces. */
export function randomRequestId(): string {
  const h = randomHex(16);
  // The version digit (13th) is 4; the variant digit (17th) keeps two random bits.
  const variant = VARIANT[Number.parseInt(h.charAt(16), 16) & 3] ?? "8";
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-${variant}${h.slice(17, 20)}-${h.slice(20)}`;
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
