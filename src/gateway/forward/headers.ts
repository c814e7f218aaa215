// Header rewriting at the trust boundary: what the upstream may see of the client's request and what the
// client may see of the upstream's response.
import type { IncomingHttpHeaders } from "node:http";
import type { IncomingHttpHeaders as UndiciHeaders } from "undici/types/header.js";
import { continuesTrace, isForwardableTracestate } from "../pipeline/ids.ts";

/** RFC 9110 §7.6.1 connection-specific fields, plus legacy ones proxies must not forward. */
const hopByHop = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authenticate",
  "proxy-authorization",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "expect",
  "http2-settings",
]);

/** This hop in `Via`: the protocol the upstream is spoken to with, and the product as a pseudonym. */
const VIA = "1.1 phantomgate";

/**
 * End-to-end fields a client's `Connection` header cannot make the gateway drop (RFC 9110 §7.6.1 forbids naming
 * them there): without Host, undici would send the upstream's internal address instead, which upstreams that
 * route by host or build redirects from it get wrong; without the content fields the body loses its meaning.
 */
const notConnectionOptions = new Set(["host", "content-length", "content-type", "content-encoding"]);

/**
 * Headers a client could use to claim an identity or a network position the upstream might trust. They are
 * removed from every request; the gateway sets its own X-Forwarded-* and the identity travels only in the JWT.
 */
const spoofable = new Set([
  "authorization",
  "cookie2",
  "forwarded",
  "x-real-ip",
  "x-client-ip",
  "x-original-url",
  "x-rewrite-url",
  "x-original-uri",
  "x-remote-user",
  "x-remote-addr",
  "x-user",
  "x-user-id",
  "x-userid",
  "x-username",
  "x-client-id",
  "x-jwt-assertion",
  "x-id-token",
  "x-access-token",
  "x-request-id",
  "x-envoy-original-path",
  // Trace context is set below: the gateway's own traceparent, and the client's tracestate only with its trace.
  "traceparent",
  "tracestate",
  // Client addresses as CDNs and load balancers set them, read by common client-IP libraries.
  "true-client-ip",
  "cf-connecting-ip",
  "fastly-client-ip",
  "x-cluster-client-ip",
  "x-forwarded",
  "forwarded-for",
  "x-original-forwarded-for",
  // Method overrides: a request checked as POST must not run as DELETE at an upstream that honours them.
  "x-http-method-override",
  "x-http-method",
  "x-method-override",
  // httpoxy: CGI-style upstreams (PHP, Go's net/http/cgi) turn it into HTTP_PROXY for their own outgoing calls.
  "proxy",
  // Identities and claims other gateways and proxies hand their upstreams (Apache/nginx, Kong, Google IAP, an
  // OAuth proxy), which an upstream moved behind this gateway may still trust.
  "x-jwt-payload",
  "x-userinfo",
  "x-scope",
  "x-scopes",
  "x-proxy-user",
  "x-anonymous-consumer",
  "x-goog-iap-jwt-assertion",
  // A client certificate's verdict and fields as TLS-terminating proxies pass them on.
  "x-client-verify",
  "x-client-dn",
  "x-client-s-dn",
  "x-client-i-dn",
  "x-arr-clientcert",
  // Hosts and paths some frameworks trust over the request's own (routing, redirects, access rules).
  "x-host",
  // W3C Baggage: application key-values (often a user or tenant id) that the edge must not take from the
  // internet; the gateway starts the trace context afresh too.
  "baggage",
]);
const commonConnectionValue = /^\s*(?:keep-alive|close)\s*$/i;
const spoofablePrefixes = [
  "x-forwarded-",
  "x-phantomgate-",
  "x-auth-",
  "x-authenticated-",
  "x-user-",
  "x-original-",
  "remote-",
  "x-remote-",
  "x-webauth-",
  "x-consumer-",
  "x-credential-",
  "x-ms-client-principal",
  "x-goog-authenticated-",
  "x-amzn-oidc-",
  "cf-access-",
  "x-envoy-",
  "x-ssl-",
  "ssl-client-",
  "x-client-cert",
  "x-tls-client-",
];

/** The first characters of the prefixes above: most header names (accept, host, user-agent) skip the loop. */
const prefixStarts = new Set(spoofablePrefixes.map((prefix) => prefix.charCodeAt(0)));

function isSpoofable(name: string): boolean {
  if (spoofable.has(name)) return true;
  if (!prefixStarts.has(name.charCodeAt(0))) return false;
  for (const prefix of spoofablePrefixes) if (name.startsWith(prefix)) return true;
  return false;
}

/**
 * The header names a Connection header lists, lower-cased; undefined when it lists none beyond the hop-by-hop
 * ones. Nearly every message says just `keep-alive` or `close`: no Set is built for those.
 */
function connectionTokens(value: string | string[] | undefined): Set<string> | undefined {
  if (value === undefined) return undefined;
  if (typeof value === "string" && commonConnectionValue.test(value)) return undefined;
  const joined = Array.isArray(value) ? value.join(",") : value;
  const tokens = new Set<string>();
  for (const part of joined.split(",")) {
    const token = part.trim().toLowerCase();
    if (token !== "") tokens.add(token);
  }
  return tokens;
}

export interface UpstreamHeaderInput {
  readonly incoming: IncomingHttpHeaders;
  /** The Authorization value for the upstream (`Bearer <token>`), when the route authenticates. */
  readonly upstreamAuthorization: string | undefined;
  readonly clientAddress: string;
  readonly protocol: "http" | "https";
  readonly host: string | undefined;
  readonly requestId: string;
  /** The traceparent for the upstream: the client's trace continued, or a new one. */
  readonly traceparent: string;
  readonly trustForwarded: boolean;
}

/** The request headers the upstream receives. */
export function buildUpstreamHeaders(input: UpstreamHeaderInput): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  const named = connectionTokens(input.incoming.connection);
  // for…in, not Object.entries: no array of pairs per request. Both header objects are plain, prototype-free
  // of enumerable keys.
  const incoming = input.incoming;
  for (const name in incoming) {
    const value = incoming[name];
    if (value === undefined) continue;
    // A name with `_` (as nginx does by default): CGI-style and Rack/gunicorn upstreams read `X_User_Id` as
    // `X-User-Id`, which would slip an identity header past the names above.
    if (hopByHop.has(name) || isSpoofable(name) || name.includes("_")) continue;
    if (named?.has(name) === true && !notConnectionOptions.has(name)) continue;
    out[name] = value;
  }
  let xff = input.clientAddress;
  let forwarded = `for=${formatForwardedNode(input.clientAddress)};proto=${input.protocol}`;
  if (input.host !== undefined) forwarded += `;host="${input.host.replace(/["\\]/g, "")}"`;
  if (input.trustForwarded) {
    const priorXff = input.incoming["x-forwarded-for"];
    if (typeof priorXff === "string" && priorXff !== "") xff = `${priorXff}, ${xff}`;
    const priorForwarded = input.incoming.forwarded;
    if (typeof priorForwarded === "string" && priorForwarded !== "")
      forwarded = `${priorForwarded}, ${forwarded}`;
  }
  out["x-forwarded-for"] = xff;
  out["x-forwarded-proto"] = input.protocol;
  if (input.host !== undefined) out["x-forwarded-host"] = input.host;
  out.forwarded = forwarded;
  // RFC 9110 §7.6.3: a gateway adds itself to Via on every request it forwards (loops become visible).
  const priorVia = input.incoming.via;
  out.via = typeof priorVia === "string" && priorVia !== "" ? `${priorVia}, ${VIA}` : VIA;
  out["x-request-id"] = input.requestId;
  out.traceparent = input.traceparent;
  // W3C Trace Context: tracestate belongs to the trace its traceparent names. It goes on when the gateway
  // continued the client's trace, and only well-formed; a restarted trace (no or an invalid traceparent) leaves it
  // behind. Most requests carry none: one property read, nothing allocated.
  const tracestate = incoming.tracestate;
  if (
    tracestate !== undefined &&
    named?.has("tracestate") !== true &&
    continuesTrace(incoming.traceparent, input.traceparent)
  ) {
    const value = typeof tracestate === "string" ? tracestate : tracestate.join(",");
    if (isForwardableTracestate(value)) out.tracestate = value;
  }
  if (input.upstreamAuthorization !== undefined) out.authorization = input.upstreamAuthorization;
  return out;
}

function formatForwardedNode(address: string): string {
  // RFC 7239 §6: IPv6 addresses are quoted and bracketed.
  return address.includes(":") ? `"[${address}]"` : address;
}

/**
 * The response headers the client receives: the upstream's, minus connection-specific fields and any
 * `Authorization` (an upstream or a debugging middleware echoing the request's would hand the internal JWT out).
 */
export function buildClientResponseHeaders(
  upstream: UndiciHeaders,
  requestId: string,
): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  const named = connectionTokens(upstream.connection);
  for (const name in upstream) {
    const value = upstream[name];
    if (value === undefined) continue;
    if (hopByHop.has(name) || name === "authorization") continue;
    if (named?.has(name) === true) continue;
    out[name] = value;
  }
  out["x-request-id"] = requestId;
  return out;
}
