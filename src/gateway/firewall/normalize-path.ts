// Request-target normalisation: turns node's raw `req.url` into the ONE canonical path that is both matched
// by the router and forwarded upstream, so the gateway and the upstream can never disagree about which
// resource a request names.
//
// Decisions (why, not what):
// - Encoded separators are rejected, never decoded: `%2E` (dot), `%2F` (slash), `%5C` (backslash), `%00` and
//   every other encoded control byte. Decoding them would let `/public/%2e%2e/admin` match `/public/**` and then
//   resolve to `/admin` in an upstream that decodes later; passing them through encoded leaves the same
//   ambiguity to the upstream. Rejecting is what Envoy's safe defaults aim for and costs legitimate clients
//   nothing. Because `%2E` and `%2F` never decode, decoding can never create a new dot-segment or separator.
// - Only unreserved characters (ALPHA DIGIT `-` `_` `~`) are decoded (`/%61dmin` is `/admin`, RFC 3986 §6.2.2.2);
//   every other escape is kept with upper-case hex (`%c3%a9` → `%C3%A9`). Overlong UTF-8 such as `%C0%AE` is
//   just two bytes, never a dot.
// - Printable ASCII that browsers send unencoded but RFC 3986 forbids in a path (`"<>[]^`{|}`) and raw bytes
//   0x80–0xFF are percent-encoded, so `/a|b` and `/a%7Cb` are one path. Raw `\`, space, control characters and
//   UTF-16 code units above 0xFF (which node's latin1 `req.url` cannot contain) are rejected.
// - Empty segments are merged (`//admin` → `/admin`) before dot-segments are resolved (RFC 3986
//   remove_dot_segments); a `..` that would climb above the root is rejected rather than clamped. A trailing
//   slash is kept because `/invoices/` and `/invoices` may be different resources upstream.
// - Path parameters (a raw `;` anywhere in the path) are rejected: servlet containers and other matrix-parameter
//   readers map `/admin;x/users` to `/admin/users`, which the router would see as another resource than
//   `/admin/**` (the classic `/public/..;/admin` bypass is one form of it). Dot-segments carrying an encoded
//   parameter (`..%3B`) are rejected too; `%3B` elsewhere is data and stays encoded.
// - A fragment (`#`) in a request-target is invalid (RFC 9112 §3.2) and rejected.
// - Matching is case-sensitive, like Gateway API: `/ADMIN` is not `/admin`.
// - The query is returned verbatim (without `?`); only bytes that cannot be forwarded are rejected.
import { GatewayError } from "../../errors/catalogue.ts";

/** The normalised request-target. */
export interface RequestTarget {
  /** Canonical path: starts with `/`, no `//`, `.` or `..` segments. Matched and forwarded as is. */
  readonly path: string;
  /** The query without the leading `?`, verbatim; empty when absent. */
  readonly query: string;
  /** The authority of an absolute-form target (`http://authority/...`), verbatim; undefined for origin-form. */
  readonly authority: string | undefined;
}

// Character classes for the path scan, indexed by char code 0–255.
const REJECT = 0;
const UNRESERVED = 1;
const DOT = 2;
const PCHAR = 3; // sub-delims, ':' and '@': legal raw, and NOT equivalent to their escapes
const SLASH = 4;
const PERCENT = 5;
const ENCODE = 6;
const HASH = 7;
const SEMICOLON = 8;

const CHAR_SLASH = 0x2f;
const CHAR_DOT = 0x2e;
const CHAR_QUESTION = 0x3f;

const CLASS = buildClassTable();
/** `%XX` with upper-case hex for every byte, so re-encoding allocates nothing new per request. */
const ESCAPES = Array.from({ length: 256 }, (_, b) => `%${b.toString(16).toUpperCase().padStart(2, "0")}`);

function buildClassTable(): Uint8Array {
  const table = new Uint8Array(256); // REJECT by default: controls, space, '\\', DEL
  const set = (chars: string, cls: number): void => {
    for (let i = 0; i < chars.length; i++) table[chars.charCodeAt(i)] = cls;
  };
  set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_~", UNRESERVED);
  set(".", DOT);
  set("!$&'()*+,=:@", PCHAR);
  set(";", SEMICOLON);
  set("/", SLASH);
  set("%", PERCENT);
  set('"<>[]^`{|}', ENCODE);
  set("#", HASH);
  for (let b = 0x80; b <= 0xff; b++) table[b] = ENCODE;
  return table;
}

function decodeHexDigit(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  const lower = c | 0x20;
  if (lower >= 0x61 && lower <= 0x66) return lower - 0x61 + 10;
  return -1;
}

/** Bytes that are rejected when percent-encoded: separators, NUL and the other controls. */
function isForbiddenEncodedByte(b: number): boolean {
  return b < 0x20 || b === 0x7f || b === CHAR_DOT || b === CHAR_SLASH || b === 0x5c;
}

function badPath(reason: string): GatewayError {
  return new GatewayError("PG_ERR_BAD_PATH", reason);
}

function isHttpSchemePrefix(raw: string, schemeLength: number): boolean {
  // "http" or "https" followed by "://", scheme case-insensitive (RFC 3986 §3.1).
  if (raw.length < schemeLength + 3) return false;
  if (raw.slice(0, 4).toLowerCase() !== "http") return false;
  if (schemeLength === 5 && (raw.charCodeAt(4) | 0x20) !== 0x73) return false;
  return raw.startsWith("://", schemeLength);
}

/** Index where the path starts: 0 for origin-form, after the authority for absolute-form. */
function findPathStart(raw: string): number {
  if (raw.charCodeAt(0) === CHAR_SLASH) return 0;
  if (raw.charCodeAt(0) === 0x5c) throw badPath("request-target starts with a backslash");
  const schemeLength = isHttpSchemePrefix(raw, 4) ? 4 : isHttpSchemePrefix(raw, 5) ? 5 : 0;
  if (schemeLength === 0) {
    // '*' (asterisk-form), 'host:port' (authority-form), other schemes, empty: nothing to route.
    throw new GatewayError(
      "PG_ERR_BAD_REQUEST",
      "request-target is not origin-form or http(s) absolute-form",
    );
  }
  // The authority is returned for the firewall to hold against the Host header; only the path is forwarded.
  for (let i = schemeLength + 3; i < raw.length; i++) {
    const c = raw.charCodeAt(i);
    if (c === CHAR_SLASH || c === CHAR_QUESTION) return i;
    if (c === 0x23) throw new GatewayError("PG_ERR_BAD_REQUEST", "fragment in request-target");
    if (c === 0x40) throw new GatewayError("PG_ERR_BAD_REQUEST", "user information in request-target");
  }
  return raw.length;
}

function checkQuery(raw: string, start: number): string {
  for (let i = start; i < raw.length; i++) {
    const c = raw.charCodeAt(i);
    if (c <= 0x20 || c === 0x7f || c === 0x23 || c > 0xff) {
      throw new GatewayError("PG_ERR_BAD_REQUEST", "query contains a control character, space or fragment");
    }
  }
  return raw.slice(start);
}

/** True when `seg` is a dot-segment with an encoded path parameter: `.%3Bx`, `..%3Bx` (raw `;` never gets here). */
function isDotSegmentWithParameter(seg: string): boolean {
  if (seg.charCodeAt(0) !== CHAR_DOT) return false;
  const afterDots = seg.charCodeAt(1) === CHAR_DOT ? 2 : 1;
  return seg.startsWith("%3B", afterDots);
}

/** Slow path: rebuilds the path segment by segment. `start` points at the leading '/'. */
function rebuildPath(raw: string, start: number, end: number): string {
  let out = ""; // kept segments, each as "/" + segment
  let trailingSlash = false;
  let seg = "";
  let runStart = start + 1; // start of the raw run not yet copied into `seg`
  for (let i = start + 1; i <= end; i++) {
    const c = i === end ? CHAR_SLASH : raw.charCodeAt(i);
    const cls = c <= 0xff ? (CLASS[c] ?? REJECT) : REJECT;
    if (cls === UNRESERVED || cls === PCHAR || cls === DOT) continue;
    if (cls === SLASH) {
      seg += raw.slice(runStart, i);
      runStart = i + 1;
      if (seg === "" || seg === ".") {
        trailingSlash = true;
      } else if (seg === "..") {
        if (out === "") throw badPath("'..' climbs above the root");
        out = out.slice(0, out.lastIndexOf("/"));
        trailingSlash = true;
      } else if (isDotSegmentWithParameter(seg)) {
        throw badPath("dot-segment with a path parameter");
      } else {
        out += "/" + seg;
        trailingSlash = false;
      }
      seg = "";
      continue;
    }
    if (cls === PERCENT) {
      const high = i + 2 < end ? decodeHexDigit(raw.charCodeAt(i + 1)) : -1;
      const low = i + 2 < end ? decodeHexDigit(raw.charCodeAt(i + 2)) : -1;
      if (high < 0 || low < 0) throw badPath("invalid percent-encoding");
      const b = high * 16 + low;
      if (isForbiddenEncodedByte(b)) throw badPath("encoded dot, separator or control character");
      seg +=
        raw.slice(runStart, i) + (CLASS[b] === UNRESERVED ? String.fromCharCode(b) : (ESCAPES[b] as string));
      i += 2;
      runStart = i + 1;
      continue;
    }
    if (cls === ENCODE) {
      seg += raw.slice(runStart, i) + (ESCAPES[c] as string);
      runStart = i + 1;
      continue;
    }
    if (cls === HASH) throw new GatewayError("PG_ERR_BAD_REQUEST", "fragment in request-target");
    if (cls === SEMICOLON) throw badPath("path parameter (';')");
    throw badPath("backslash, space, control or non-byte character");
  }
  if (out === "") return "/";
  return trailingSlash ? out + "/" : out;
}

function normalizePath(raw: string, start: number, end: number): string {
  if (start === end) return "/"; // absolute-form without a path: "http://host" or "http://host?q"
  // Fast path: already canonical paths (the common case) come back without rebuilding.
  let prev = CHAR_SLASH;
  for (let i = start + 1; i < end; i++) {
    const c = raw.charCodeAt(i);
    const cls = c <= 0xff ? CLASS[c] : REJECT;
    if (cls === UNRESERVED || cls === PCHAR || ((cls === SLASH || cls === DOT) && prev !== CHAR_SLASH)) {
      prev = c;
      continue;
    }
    return rebuildPath(raw, start, end);
  }
  return start === 0 && end === raw.length ? raw : raw.slice(start, end);
}

/**
 * Normalises a raw HTTP request-target (node's `req.url`, a latin1 byte string) into the canonical path that
 * is both routed and forwarded, plus the verbatim query.
 *
 * @param rawUrl - Origin-form (`/a/b?q`) or http(s) absolute-form (`http://host/a?q`).
 * @returns The canonical path, the query without `?`, and the authority of an absolute-form target.
 * @throws GatewayError `PG_ERR_BAD_PATH` for encoded dots/separators/controls, raw `\` or controls, invalid
 *   escapes, `..` above the root and path parameters (`;`); `PG_ERR_BAD_REQUEST` for `*`, authority-form,
 *   other schemes, user information, fragments and control characters in the query.
 */
export function normalizeRequestTarget(rawUrl: string): RequestTarget {
  const pathStart = findPathStart(rawUrl);
  const queryMark = rawUrl.indexOf("?", pathStart);
  const pathEnd = queryMark === -1 ? rawUrl.length : queryMark;
  const path = normalizePath(rawUrl, pathStart, pathEnd);
  const query = queryMark === -1 ? "" : checkQuery(rawUrl, queryMark + 1);
  const authority = pathStart === 0 ? undefined : rawUrl.slice(rawUrl.indexOf("://") + 3, pathStart);
  return { path, query, authority };
}

/**
 * Normalises a path written in configuration (a route's `path.value`, Unicode allowed) into the same canonical
 * form request paths take, so compile and runtime agree byte for byte.
 *
 * @param value - A path starting with `/`; non-ASCII characters are percent-encoded as UTF-8.
 * @returns The canonical path.
 * @throws GatewayError `PG_ERR_BAD_PATH` or `PG_ERR_BAD_REQUEST` as {@link normalizeRequestTarget}, and
 *   `PG_ERR_BAD_PATH` when the value carries a query.
 */
export function normalizeConfiguredPath(value: string): string {
  if (!value.startsWith("/") || value.includes("?")) {
    throw badPath("configured path must start with '/' and carry no query");
  }
  return normalizeRequestTarget(Buffer.from(value, "utf8").toString("latin1")).path;
}
