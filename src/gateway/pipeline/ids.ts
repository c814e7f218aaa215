// Request ids and W3C trace context for each request, from a pooled random buffer: one getrandom call per
// couple of hundred requests instead of one or two per request.
import { randomFillSync } from "node:crypto";

/** A request's id (a version 4 UUID) and the trace context sent upstream. */
export interface RequestIds {
  readonly requestId: string;
  /** 32 lowercase hex digits: the client's trace id when it sent a valid `traceparent`, else a new one. */
  readonly traceId: string;
  /** `00-<traceId>-<new span id>-<flags>`. */
  readonly traceparent: string;
}

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

const HEX = Buffer.from("0123456789abcdef", "latin1");
const DASH = 0x2d;
const UUID_LENGTH = 36;
const TRACEPARENT_LENGTH = 55;
/** Where the trace id starts in a traceparent ("00-"). */
const TRACE_ID_AT = 3;
/**
 * A request's ids are written here as bytes, then read as one string: the UUID, then the traceparent. Building
 * them from pieces of hex text cost a dozen small strings and as many concatenations per request, which were
 * copied flat again when written out.
 */
const text = Buffer.alloc(UUID_LENGTH + TRACEPARENT_LENGTH);
text.write("00-", UUID_LENGTH, "latin1");

/** Writes `bytes` random bytes of the pool, from `from`, as hex digits at `at`. */
function putHex(at: number, from: number, bytes: number): void {
  for (let i = 0; i < bytes; i++) {
    const value = randomPool[from + i] ?? 0;
    text[at + 2 * i] = HEX[value >> 4] ?? 0;
    text[at + 2 * i + 1] = HEX[value & 15] ?? 0;
  }
}

/** A version 4 UUID (RFC 9562) from 16 random bytes at `from`, written at offset 0: 8-4-4-4-12 hex digits. */
function putUuid(from: number): void {
  putHex(0, from, 4);
  text[8] = DASH;
  putHex(9, from + 4, 2);
  text[13] = DASH;
  putHex(14, from + 6, 2);
  text[18] = DASH;
  putHex(19, from + 8, 2);
  text[23] = DASH;
  putHex(24, from + 10, 6);
  text[14] = 0x34; // the version digit (13th): 4
  text[19] = HEX[8 | (((randomPool[from + 8] ?? 0) >> 4) & 3)] ?? 0; // the variant digit (17th): 10xx in binary
}

function isLowerHex(c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66);
}

/** True when `value` holds lowercase hex digits from `from` to `to`, not all of them zero. */
function isNonZeroHex(value: string, from: number, to: number): boolean {
  let zeros = true;
  for (let i = from; i < to; i++) {
    const c = value.charCodeAt(i);
    if (!isLowerHex(c)) return false;
    if (c !== 0x30) zeros = false;
  }
  return !zeros;
}

/**
 * True for a `traceparent` whose trace is continued (W3C Trace Context §3.2): version 00 is exactly 55
 * characters; a later version (not ff) is read the same way as far as version 00 goes, and may only go on after
 * a dash. The trace id and the parent id must not be all zeros.
 */
function isValidTraceparent(value: string): boolean {
  if (value.length < TRACEPARENT_LENGTH) return false;
  const v0 = value.charCodeAt(0);
  const v1 = value.charCodeAt(1);
  if (!isLowerHex(v0) || !isLowerHex(v1) || (v0 === 0x66 && v1 === 0x66)) return false;
  if (
    v0 === 0x30 && v1 === 0x30
      ? value.length !== TRACEPARENT_LENGTH
      : value.length > TRACEPARENT_LENGTH && value.charCodeAt(TRACEPARENT_LENGTH) !== DASH
  ) {
    return false;
  }
  return (
    value.charCodeAt(2) === DASH &&
    isNonZeroHex(value, TRACE_ID_AT, 35) &&
    value.charCodeAt(35) === DASH &&
    isNonZeroHex(value, 36, 52) &&
    value.charCodeAt(52) === DASH &&
    isLowerHex(value.charCodeAt(53)) &&
    isLowerHex(value.charCodeAt(54))
  );
}

/**
 * A new request id, and the trace context for the upstream: the client's trace id when it sent a valid
 * `traceparent` (its flags kept), else a new trace; always a new span id for the gateway's hop.
 *
 * The three strings are views of one 91-character string made for the request, so none of them keeps anything
 * larger alive (V8 makes a substring of 13 characters or more a view of its parent).
 */
export function newRequestIds(incomingTraceparent: string | undefined): RequestIds {
  const kept = incomingTraceparent !== undefined && isValidTraceparent(incomingTraceparent);
  const from = take(kept ? 24 : 40);
  putUuid(from);
  const traceAt = UUID_LENGTH + TRACE_ID_AT;
  if (kept) {
    for (let i = TRACE_ID_AT; i < 35; i++) text[UUID_LENGTH + i] = incomingTraceparent.charCodeAt(i);
    text[UUID_LENGTH + 53] = incomingTraceparent.charCodeAt(53);
    text[UUID_LENGTH + 54] = incomingTraceparent.charCodeAt(54);
  } else {
    putHex(traceAt, from + 24, 16);
    text[UUID_LENGTH + 53] = 0x30; // flags 01: sampled
    text[UUID_LENGTH + 54] = 0x31;
  }
  text[UUID_LENGTH + 35] = DASH;
  putHex(UUID_LENGTH + 36, from + 16, 8);
  text[UUID_LENGTH + 52] = DASH;
  const all = text.toString("latin1");
  return {
    requestId: all.slice(0, UUID_LENGTH),
    traceId: all.slice(traceAt, traceAt + 32),
    traceparent: all.slice(UUID_LENGTH),
  };
}

/**
 * True when `outgoing` (the traceparent the gateway sends upstream) continues the trace of `incoming` (the
 * client's traceparent header): the client's was valid and its trace id was kept. Only then does the client's
 * `tracestate` belong to the trace the upstream sees (W3C Trace Context: a restarted trace leaves it behind).
 */
export function continuesTrace(incoming: string | string[] | undefined, outgoing: string): boolean {
  if (typeof incoming !== "string" || !isValidTraceparent(incoming)) return false;
  for (let i = TRACE_ID_AT; i < 35; i++) {
    if (incoming.charCodeAt(i) !== outgoing.charCodeAt(i)) return false;
  }
  return true;
}

/** The longest `tracestate` passed on; the W3C asks participants to pass at least this much. */
const MAX_TRACESTATE_LENGTH = 512;
const MAX_TRACESTATE_MEMBERS = 32;
const MAX_TRACESTATE_KEY = 256;
const MAX_TRACESTATE_VALUE = 256;
const COMMA = 0x2c;
const EQUALS = 0x3d;
const SPACE = 0x20;
const TAB = 0x09;

/** lcalpha / DIGIT: the first character of a tracestate key. */
function isKeyStart(c: number): boolean {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39);
}

/** lcalpha / DIGIT / "_" / "-" / "*" / "/" / "@": the other characters of a key. */
function isKeyChar(c: number): boolean {
  return isKeyStart(c) || c === 0x5f || c === 0x2d || c === 0x2a || c === 0x2f || c === 0x40;
}

/**
 * True for a `tracestate` the gateway passes on (W3C Trace Context, "tracestate Header Field Values"): a list
 * of `key=value` members separated by commas, with spaces or tabs around them and empty members allowed; at
 * least one and at most 32 members; keys of lowercase letters, digits, `_`, `-`, `*`, `/` and `@` (up to 256,
 * starting with a letter or digit); values of printable ASCII other than `,` and `=` (up to 256, not ending in
 * a space); at most 512 characters in all. Several header fields arrive joined with ", " by node:http, as
 * RFC 9110 §5.3 combines them. Reads the string in place: nothing is allocated.
 */
export function isForwardableTracestate(value: string): boolean {
  const length = value.length;
  if (length > MAX_TRACESTATE_LENGTH) return false;
  let members = 0;
  let i = 0;
  for (;;) {
    while (i < length && (value.charCodeAt(i) === SPACE || value.charCodeAt(i) === TAB)) i++;
    if (i < length && value.charCodeAt(i) !== COMMA) {
      // key
      const keyStart = i;
      if (!isKeyStart(value.charCodeAt(i))) return false;
      i++;
      while (i < length && isKeyChar(value.charCodeAt(i))) i++;
      if (i - keyStart > MAX_TRACESTATE_KEY || i === length || value.charCodeAt(i) !== EQUALS) return false;
      i++;
      // value, then optional whitespace up to the next comma or the end
      const valueStart = i;
      let valueEnd = -1;
      let tabSeen = false;
      for (; i < length; i++) {
        const c = value.charCodeAt(i);
        if (c === COMMA) break;
        if (c === TAB) {
          tabSeen = true;
        } else if (c !== SPACE) {
          // A tab is whitespace after the value, never part of it.
          if (tabSeen || c < 0x21 || c > 0x7e || c === EQUALS) return false;
          valueEnd = i + 1;
        }
      }
      if (valueEnd === -1 || valueEnd - valueStart > MAX_TRACESTATE_VALUE) return false;
      if (++members > MAX_TRACESTATE_MEMBERS) return false;
    }
    if (i >= length) return members > 0;
    i++; // the comma
  }
}
