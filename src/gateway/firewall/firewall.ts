// The request firewall: per-gateway size limits, request-target normalisation and the rules for where a bearer
// token may appear, applied to every request before routing. Pure: it reads the request line and raw headers
// and either returns what later stages need or throws a catalogued GatewayError.
//
// Raw headers are read instead of `req.headers` because node keeps only the first of duplicate `Authorization`
// and `Host` fields: a second one would otherwise be silently dropped here yet may be honoured by an upstream
// or another proxy.
import type { IncomingHttpHeaders } from "node:http";
import { GatewayError } from "../../errors/catalogue.ts";
import { normalizeHost } from "../route/router.ts";
import { normalizeRequestTarget } from "./normalize-path.ts";

/** Per-gateway request limits. Sizes count bytes; node's latin1 strings hold one byte per character. */
export interface FirewallLimits {
  /** Longest accepted request-target (`req.url`). */
  readonly maxUrlBytes: number;
  /** Largest accepted header section, counted as the sum of `name: value\r\n` over all fields. */
  readonly maxHeaderBytes: number;
}

/** The parts of a node `IncomingMessage` the firewall reads. */
export interface FirewallRequest {
  readonly method: string;
  readonly url: string;
  /** Alternating names and values, as node's `req.rawHeaders`. */
  readonly rawHeaders: readonly string[];
}

/** What the firewall hands to the later stages. */
export interface InspectedRequest {
  /** Canonical path, routed and forwarded as is. */
  readonly path: string;
  /** Verbatim query without `?`; empty when absent. */
  readonly query: string;
  /** The single `Authorization` header value, when present. */
  readonly authorization: string | undefined;
}

/** A firewall configured with one gateway's limits. */
export interface Firewall {
  /**
   * Checks one request and extracts its canonical path, query and `Authorization` header.
   *
   * @throws GatewayError `PG_ERR_URI_TOO_LONG`, `PG_ERR_HEADERS_TOO_LARGE`, `PG_ERR_TOKEN_MALFORMED_HEADER`
   *   (more than one `Authorization`), `PG_ERR_TOKEN_IN_QUERY`, `PG_ERR_BAD_PATH` and `PG_ERR_BAD_REQUEST`
   *   (unroutable target, CONNECT, more than one `Host` or an invalid one).
   */
  inspectRequest(req: FirewallRequest): InspectedRequest;
}

/** Bytes each header field adds beyond its name and value: ": " and CRLF. */
const FIELD_OVERHEAD_BYTES = 4;

/**
 * True when `text` holds `lower` at `offset`, ignoring ASCII case, without allocating. `lower` is lower-case
 * ASCII; only its letters match their upper-case forms.
 */
function hasAsciiCaseless(text: string, offset: number, lower: string): boolean {
  if (text.length < offset + lower.length) return false;
  for (let i = 0; i < lower.length; i++) {
    const expected = lower.charCodeAt(i);
    const c = text.charCodeAt(offset + i);
    if (c !== expected && !(expected >= 0x61 && expected <= 0x7a && (c | 0x20) === expected)) return false;
  }
  return true;
}

function equalsHeaderName(name: string, lowerName: string): boolean {
  return name.length === lowerName.length && hasAsciiCaseless(name, 0, lowerName);
}

function decodeHexDigit(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  const lower = c | 0x20;
  if (lower >= 0x61 && lower <= 0x66) return lower - 0x61 + 10;
  return -1;
}

const ACCESS_TOKEN = "access_token";
const ACCESS_TOKEN_SEPARATOR_INDEX = 6;
const METHOD_OVERRIDE = "_method";

/**
 * True when the query parameter name in `query[start, end)` means `name` to some upstream (`name` lower-case,
 * with one `_` at `separatorIndex`): compared after percent-decoding and `+` → space (unless `decode` is false,
 * as for multipart field names, which are taken literally), ASCII case-insensitively, with PHP's rewriting of
 * parameter names in mind: leading spaces are dropped, `.`, space and an unclosed `[` stand for `_`, `name[…]`
 * is the array `name`, and a NUL ends the name (PHP cuts names at NUL: `_method%00x` is `_method`). With
 * `rackBrackets`, read as Rack 2 does: leading `[` and `]` dropped and a stray `]` after the name (`[_method]`).
 */
function isParameterName(
  query: string,
  start: number,
  end: number,
  name: string,
  separatorIndex: number,
  decode = true,
  rackBrackets = false,
): boolean {
  if (end - start < name.length) return false;
  let matched = 0;
  let leading = true;
  for (let i = start; i < end;) {
    let c = query.charCodeAt(i);
    if (!decode) {
      i++;
    } else if (c === 0x25) {
      const high = i + 2 < end ? decodeHexDigit(query.charCodeAt(i + 1)) : -1;
      const low = i + 2 < end ? decodeHexDigit(query.charCodeAt(i + 2)) : -1;
      if (high < 0 || low < 0) return false;
      c = high * 16 + low;
      i += 3;
    } else {
      if (c === 0x2b) c = 0x20;
      i++;
    }
    // Leading spaces (PHP drops them), and in Rack 2's reading leading brackets (`[_method]`, `]_method`).
    if (leading && (c === 0x20 || (rackBrackets && (c === 0x5b || c === 0x5d)))) continue;
    leading = false;
    // The whole name matched: anything after it makes another name, except an array subscript, a NUL, or in
    // Rack 2's reading a stray `]`.
    if (matched === name.length) return c === 0x5b || c === 0x00 || (rackBrackets && c === 0x5d);
    if (matched === separatorIndex) {
      // PHP reads an unclosed `[` as `_`; to Rack a `[` ends the name.
      if (c !== 0x5f && c !== 0x2e && c !== 0x20 && (c !== 0x5b || rackBrackets)) return false;
    } else if ((c | 0x20) !== name.charCodeAt(matched)) {
      return false;
    }
    matched++;
  }
  return matched === name.length;
}

function isAccessTokenName(query: string, start: number, end: number): boolean {
  return (
    isParameterName(query, start, end, ACCESS_TOKEN, ACCESS_TOKEN_SEPARATOR_INDEX) ||
    isParameterName(query, start, end, ACCESS_TOKEN, ACCESS_TOKEN_SEPARATOR_INDEX, true, true)
  );
}

function isMethodOverrideName(query: string, start: number, end: number): boolean {
  return (
    isParameterName(query, start, end, METHOD_OVERRIDE, 0) ||
    isParameterName(query, start, end, METHOD_OVERRIDE, 0, true, true)
  );
}

/** What a form field's name asks of an upstream the gateway forbids, if anything. */
export type ForbiddenFieldName = "access_token" | "_method";

/**
 * The refusal for a forbidden parameter found `where` (the query, a form body, a multipart part): a token
 * outside the Authorization header, or a method override past the rule checked for the request's method.
 */
export function forbiddenParameterError(kind: ForbiddenFieldName, where: string): GatewayError {
  return kind === "access_token"
    ? new GatewayError("PG_ERR_TOKEN_IN_QUERY", `access_token in ${where}`)
    : new GatewayError("PG_ERR_BAD_REQUEST", `_method in ${where} (a method override)`);
}

/**
 * Whether a multipart/form-data field name (taken literally, not percent-decoded) is `access_token` or
 * `_method` to some upstream, by the same rules as query and form-urlencoded names (see
 * {@link queryCarriesAccessToken}). PHP also takes a name in single quotes (`name='_method'`), which other parsers
 * keep with its quotes: both readings are checked.
 */
export function forbiddenFieldName(name: string): ForbiddenFieldName | undefined {
  const forbidden = forbiddenLiteralName(name, 0, name.length);
  if (forbidden !== undefined) return forbidden;
  const quoted = name.length >= 2 && name.charCodeAt(0) === 0x27 && name.charCodeAt(name.length - 1) === 0x27;
  return quoted ? forbiddenLiteralName(name, 1, name.length - 1) : undefined;
}

function forbiddenLiteralName(name: string, start: number, end: number): ForbiddenFieldName | undefined {
  for (const rackBrackets of [false, true]) {
    if (isParameterName(name, start, end, ACCESS_TOKEN, ACCESS_TOKEN_SEPARATOR_INDEX, false, rackBrackets))
      return "access_token";
    if (isParameterName(name, start, end, METHOD_OVERRIDE, 0, false, rackBrackets)) return "_method";
  }
  return undefined;
}

/**
 * True when any parameter of `query` (a query string or a form-urlencoded body) is named `access_token`
 * (see {@link isAccessTokenName}).
 */
export function queryCarriesAccessToken(query: string): boolean {
  return carriesParameter(query, isAccessTokenName);
}

/**
 * True when any parameter of `query` (a query string or a form-urlencoded body) is named `_method`, the method
 * override Rails, Laravel and Symfony read: a request checked against the rule for POST must not run as DELETE.
 */
export function queryCarriesMethodOverride(query: string): boolean {
  return carriesParameter(query, isMethodOverrideName);
}

function carriesParameter(
  query: string,
  matches: (query: string, start: number, end: number) => boolean,
): boolean {
  let start = 0;
  let nameEnd = -1;
  // Both '&' and ';' separate parameters: some upstream frameworks still split on ';'.
  for (let i = 0; i <= query.length; i++) {
    const c = i === query.length ? 0x26 : query.charCodeAt(i);
    if (c === 0x3d && nameEnd === -1) nameEnd = i;
    if (c !== 0x26 && c !== 0x3b) continue;
    if (matches(query, start, nameEnd === -1 ? i : nameEnd)) return true;
    start = i + 1;
    nameEnd = -1;
  }
  return false;
}

/**
 * True when `value` is empty or made only of what a DNS name, IPv4 address, bracketed IPv6 literal and port
 * use: ASCII letters, digits, `-`, `.`, `_`, `:`, `[` and `]`.
 */
function isPlainHost(value: string): boolean {
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    const lower = c | 0x20;
    const ok =
      (lower >= 0x61 && lower <= 0x7a) || // letters
      (c >= 0x30 && c <= 0x3a) || // digits and ':'
      c === 0x2d || // -
      c === 0x2e || // .
      c === 0x5f || // _
      c === 0x5b || // [
      c === 0x5d; // ]
    if (!ok) return false;
  }
  return true;
}

function assertPositiveInteger(name: string, value: number): void {
  if (!Number.isSafeInteger(value) || value <= 0) throw new RangeError(`${name} must be a positive integer`);
}

/**
 * Creates the request firewall for one gateway.
 *
 * @param limits - URL and header-section limits; positive integers.
 * @returns A stateless firewall, safe to share across requests.
 */
export function createFirewall(limits: FirewallLimits): Firewall {
  assertPositiveInteger("maxUrlBytes", limits.maxUrlBytes);
  assertPositiveInteger("maxHeaderBytes", limits.maxHeaderBytes);
  const { maxUrlBytes, maxHeaderBytes } = limits;

  return {
    inspectRequest(req: FirewallRequest): InspectedRequest {
      if (req.url.length > maxUrlBytes) {
        throw new GatewayError("PG_ERR_URI_TOO_LONG", `request-target of ${req.url.length} bytes`);
      }
      if (req.method === "CONNECT") throw new GatewayError("PG_ERR_BAD_REQUEST", "CONNECT is not proxied");

      const headers = req.rawHeaders;
      let headerBytes = 0;
      let authorization: string | undefined;
      let hostCount = 0;
      let host = "";
      for (let i = 0; i < headers.length; i += 2) {
        const name = headers[i] ?? "";
        const value = headers[i + 1] ?? "";
        headerBytes += name.length + value.length + FIELD_OVERHEAD_BYTES;
        if (headerBytes > maxHeaderBytes) {
          throw new GatewayError("PG_ERR_HEADERS_TOO_LARGE", `header section over ${maxHeaderBytes} bytes`);
        }
        if (equalsHeaderName(name, "authorization")) {
          if (authorization !== undefined) {
            throw new GatewayError("PG_ERR_TOKEN_MALFORMED_HEADER", "more than one Authorization header");
          }
          authorization = value;
        } else if (equalsHeaderName(name, "host")) {
          // RFC 9112 §3.2: more than one Host field, or an invalid one, is answered with 400. Routing reads
          // this value, so anything but a plain host[:port] must not reach the wildcard matcher.
          if (++hostCount > 1) throw new GatewayError("PG_ERR_BAD_REQUEST", "more than one Host header");
          if (!isPlainHost(value)) throw new GatewayError("PG_ERR_BAD_REQUEST", "invalid Host header");
          host = value;
        }
      }

      const { path, query, authority } = normalizeRequestTarget(req.url);
      // RFC 9112 §3.2.2: an absolute-form target names the host, and a client sends the same in Host. The gateway
      // routes by Host; a target naming another host would be read differently by a proxy that honours the
      // target, so the two must name the same host as the router sees it (port, case and a final dot aside).
      if (authority !== undefined && normalizeHost(authority) !== normalizeHost(host)) {
        throw new GatewayError("PG_ERR_BAD_REQUEST", "request-target authority differs from Host");
      }
      if (query !== "" && queryCarriesAccessToken(query)) {
        throw forbiddenParameterError("access_token", "the query");
      }
      if (query !== "" && queryCarriesMethodOverride(query)) {
        throw forbiddenParameterError("_method", "the query");
      }
      return { path, query, authorization };
    },
  };
}

/** RFC 6750 b64token characters: ALPHA DIGIT `-._~+/` (the `=` padding is handled separately). */
function isB64TokenChar(c: number): boolean {
  return (
    (c >= 0x61 && c <= 0x7a) || // a-z
    (c >= 0x41 && c <= 0x5a) || // A-Z
    (c >= 0x30 && c <= 0x39) || // 0-9
    c === 0x2d || // -
    c === 0x2e || // .
    c === 0x5f || // _
    c === 0x7e || // ~
    c === 0x2b || // +
    c === 0x2f // /
  );
}

function malformedHeader(reason: string): GatewayError {
  return new GatewayError("PG_ERR_TOKEN_MALFORMED_HEADER", reason);
}

/**
 * Parses an `Authorization` header as RFC 6750 `Bearer <b64token>`: scheme ASCII case-insensitive, one or more
 * spaces (`1*SP`), then exactly one token matching `[A-Za-z0-9-._~+/]+=*`.
 *
 * @param authorization - The header value (as returned by the firewall), or undefined when absent.
 * @returns The token, or undefined when there is no header.
 * @throws GatewayError `PG_ERR_TOKEN_MALFORMED_HEADER` for another scheme, a missing or second token, or
 *   characters outside the b64token syntax. The reason never contains the header value.
 */
export function extractBearerToken(authorization: string | undefined): string | undefined {
  if (authorization === undefined) return undefined;
  if (!hasAsciiCaseless(authorization, 0, "bearer ")) {
    throw malformedHeader("not a Bearer authorization");
  }
  let start = 7;
  while (authorization.charCodeAt(start) === 0x20) start++;
  let i = start;
  while (i < authorization.length && isB64TokenChar(authorization.charCodeAt(i))) i++;
  if (i === start) throw malformedHeader("Bearer without a token");
  while (authorization.charCodeAt(i) === 0x3d) i++; // '=' padding, only at the end
  if (i !== authorization.length) throw malformedHeader("bearer token has invalid syntax or a second token");
  return authorization.slice(start);
}

/** Request fields of {@link inspectFraming}, as node:http parsed them. */
export interface FramingRequest {
  readonly httpVersionMajor: number;
  readonly httpVersionMinor: number;
  readonly headers: IncomingHttpHeaders;
}

const websocketUpgrade = /(?:^|[\s,])websocket(?:[\s,/]|$)/i;

/**
 * Framing node:http's parser lets through and the gateway refuses: an HTTP version other than 1.x, an HTTP/1.1
 * request without Host (RFC 9112
 * §3.2), a transfer coding other than chunked (§6.1: the parser removes the chunking and would leave a gzip
 * coding on bytes forwarded as plain), an expectation other than 100-continue (RFC 9110 §10.1.1), and a
 * WebSocket upgrade, which would otherwise reach the upstream as a plain GET. Other upgrades (h2c) are ignored,
 * as RFC 9110 §7.8 allows.
 */
export function inspectFraming(req: FramingRequest): void {
  // node's parser also takes `HTTP/2.0` (or no version at all, HTTP/0.9) on the request line: what such a
  // client means by the rest cannot be known, and it would skip the Host check below.
  if (req.httpVersionMajor !== 1) {
    throw new GatewayError(
      "PG_ERR_HTTP_VERSION_NOT_SUPPORTED",
      `HTTP/${req.httpVersionMajor}.${req.httpVersionMinor} request`,
    );
  }
  const { headers } = req;
  if (headers.host === undefined && req.httpVersionMinor >= 1) {
    throw new GatewayError("PG_ERR_BAD_REQUEST", "HTTP/1.1 request without Host");
  }
  const coding = headers["transfer-encoding"];
  if (coding !== undefined && coding.trim().toLowerCase() !== "chunked") {
    throw new GatewayError("PG_ERR_NOT_IMPLEMENTED", "transfer coding other than chunked");
  }
  const expectation = headers.expect;
  if (expectation !== undefined && expectation.trim().toLowerCase() !== "100-continue") {
    throw new GatewayError("PG_ERR_EXPECTATION_FAILED", "expectation other than 100-continue");
  }
  const upgrade = headers.upgrade;
  if (upgrade !== undefined && websocketUpgrade.test(upgrade)) {
    throw new GatewayError("PG_ERR_NOT_IMPLEMENTED", "WebSocket upgrade");
  }
}

/** Whether a form body's Content-Encoding hides its bytes from the token check (anything but identity). */
export function isEncodedBody(contentEncoding: string | undefined): boolean {
  return contentEncoding !== undefined && contentEncoding.trim().toLowerCase() !== "identity";
}

/**
 * How the gateway inspects a request body, by its media type: `form` for form-urlencoded bodies (read in full
 * and checked before forwarding), `multipart` for multipart bodies (checked part by part as they stream), `none`
 * for the rest (JSON, binary, …), which carry no form fields an upstream framework would read.
 */
export type BodyInspection = "form" | "multipart" | "none";

/**
 * The media type of a `Content-Type` value as upstream frameworks read it: lower-cased, from the first
 * character that is not whitespace to the first `;`, `,` or whitespace (PHP ends it at `;`, `,` or space, Rack
 * splits on `;` and `,`), so `application/x-www-form-urlencoded,x` is a form to them and to the gateway.
 */
export function mediaTypeOf(contentType: string): string {
  let start = 0;
  while (start < contentType.length && isMediaTypeSpace(contentType.charCodeAt(start))) start++;
  let end = start;
  while (end < contentType.length) {
    const c = contentType.charCodeAt(end);
    if (c === 0x3b || c === 0x2c || isMediaTypeSpace(c)) break;
    end++;
  }
  return contentType.slice(start, end).toLowerCase();
}

function isMediaTypeSpace(c: number): boolean {
  return c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0b || c === 0x0c || c === 0x0d;
}

/**
 * Tells how a request body is inspected for a form-encoded `access_token` (RFC 6750 §2.2) or a `_method`
 * override. A POST body without a Content-Type (or with an empty media type) is a form to Rack, so it is read as
 * one (other methods' untyped bodies are not: PHP parses none of them, Rack only a POST's); every `multipart/*`
 * type is rewritten part by part (Rack parses form-data, mixed and related, and names parts by Content-ID too).
 *
 * @param contentType - The `Content-Type` header value, or undefined when absent.
 * @param method - The request method.
 */
export function bodyInspection(contentType: string | undefined, method: string): BodyInspection {
  const media = contentType === undefined ? "" : mediaTypeOf(contentType);
  if (media === "") return method === "POST" ? "form" : "none";
  if (media === "application/x-www-form-urlencoded") return "form";
  if (media.startsWith("multipart/")) return "multipart";
  return "none";
}
