// Request ids and W3C trace context for each request, from a pooled random buffer: one getrandom call per
// few hundred requests instead of one or two per request.
import { randomFillSync } from "node:crypto";

const traceparentPattern = /^00-([0-9a-f]{32})-[0-9a-f]{16}-([0-9a-f]{2})$/;

const randomPool = Buffer.alloc(8 * 1024);
let randomOffset = randomPool.length;

/** The offset of `bytes` fresh random bytes in the pool, refilling it when it runs out. */
function take(bytes: number): number {
  if (randomOffset + bytes > randomPool.length) {
    randomFillSync(randomPool);
    randomOffset = 0;
  }
  const at = randomOffset;
  randomOffset += bytes;
  return at;
}

function randomHex(bytes: number): string {
  const at = take(bytes);
  return randomPool.toString("hex", at, at + bytes);
}

/** A random (version 4) UUID from the same pool: crypto.randomUUID() builds its string from 16 pieces. */
export function randomRequestId(): string {
  const at = take(16);
  randomPool[at + 6] = ((randomPool[at + 6] ?? 0) & 0x0f) | 0x40;
  randomPool[at + 8] = ((randomPool[at + 8] ?? 0) & 0x3f) | 0x80;
  const hex = randomPool.toString("hex", at, at + 16);
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
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
