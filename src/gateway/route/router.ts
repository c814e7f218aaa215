// Route matching: picks the one compiled route for a request's host, normalised path and method, from an index
// built once per snapshot so a lookup costs a handful of map probes however many routes there are.
//
// Precedence (first match wins, like Gateway API): exact hostname, then longer wildcard, then shorter wildcard,
// then routes without hostnames; within a host, `Exact` path, then the longest `PathPrefix`; within a path,
// routes that list the method, then HEAD served by a route that lists GET, then routes that accept any method.
// A less specific route still matches when a more specific one rejects the method (rules match on all their
// conditions at once); only when no route accepts the method is the result method-not-allowed.
//
// HEAD: a route that allows GET also serves HEAD (RFC 9110 §9.3.2), and `Allow` lists HEAD whenever it lists
// GET. Otherwise HEAD on a GET-only route would fall through to a less specific (often public) route, letting
// a client learn about a protected resource from its headers.
//
// Paths and methods compare case-sensitively (paths as Gateway API does, methods per RFC 9110); hostnames are
// case-insensitive (the Host header is lower-cased, the port and a trailing dot dropped).
import type { CompiledRoute } from "../../snapshot/snapshot.ts";

/** The outcome of matching one request. */
export type MatchResult =
  | { readonly kind: "matched"; readonly route: CompiledRoute }
  | { readonly kind: "method-not-allowed"; readonly allow: string[] }
  | { readonly kind: "not-found" };

/** Matches requests against one snapshot's routes. Immutable once built. */
export interface Router {
  /**
   * Finds the most specific route for a request.
   *
   * @param host - The raw Host header value (any case, optional port, IPv6 in brackets); `""` when absent.
   * @param path - The canonical path from `normalizeRequestTarget`.
   * @param method - The request method, upper-case as node reports it.
   * @returns The route; or, when routes match host and path but none accepts the method, the methods they
   *   accept (sorted, for the `Allow` header); or not-found.
   */
  match(host: string, path: string, method: string): MatchResult;
}

/** One route as stored in a path slot, with its pre-built match result so a hit allocates nothing. */
interface Entry {
  readonly methods: readonly string[];
  readonly result: MatchResult;
}

/** All routes for one host key, indexed by path. */
interface HostBucket {
  readonly exact: Map<string, Entry[]>;
  readonly prefix: Map<string, Entry[]>;
  /** `hasPrefixLength[n]` is 1 when some prefix has length n: skips map probes that cannot hit. */
  hasPrefixLength: Uint8Array;
}

const NOT_FOUND: MatchResult = Object.freeze({ kind: "not-found" });
const CHAR_SLASH = 0x2f;
const CHAR_DOT = 0x2e;

function createBucket(): HostBucket {
  return { exact: new Map(), prefix: new Map(), hasPrefixLength: new Uint8Array(0) };
}

function addEntry(map: Map<string, Entry[]>, key: string, entry: Entry): void {
  const list = map.get(key);
  if (list === undefined) map.set(key, [entry]);
  else if (!list.includes(entry)) list.push(entry);
}

function addToBucket(bucket: HostBucket, route: CompiledRoute, entry: Entry): void {
  const value = route.path.value;
  if (route.path.type === "Exact") {
    addEntry(bucket.exact, value, entry);
    return;
  }
  // Gateway API: a trailing slash on a prefix is not significant ("/foo/" matches "/foo").
  const prefix = value.length > 1 && value.endsWith("/") ? value.slice(0, -1) : value;
  addEntry(bucket.prefix, prefix, entry);
  if (bucket.hasPrefixLength.length <= prefix.length) {
    const grown = new Uint8Array(prefix.length + 1);
    grown.set(bucket.hasPrefixLength);
    bucket.hasPrefixLength = grown;
  }
  bucket.hasPrefixLength[prefix.length] = 1;
}

function getBucket(map: Map<string, HostBucket>, key: string): HostBucket {
  let bucket = map.get(key);
  if (bucket === undefined) {
    bucket = createBucket();
    map.set(key, bucket);
  }
  return bucket;
}

/** Routes that list methods come before routes that accept any; stable otherwise (snapshot order). */
function sortEntries(map: Map<string, Entry[]>): void {
  for (const list of map.values()) {
    list.sort((a, b) => Number(a.methods.length === 0) - Number(b.methods.length === 0));
  }
}

/**
 * Picks the route in one path slot that accepts `method`, honouring explicit methods over HEAD-via-GET over
 * any-method routes.
 */
function selectByMethod(entries: readonly Entry[], method: string): MatchResult | undefined {
  let headViaGet: MatchResult | undefined;
  for (const entry of entries) {
    if (entry.methods.length === 0) return headViaGet ?? entry.result;
    if (entry.methods.includes(method)) return entry.result;
    if (headViaGet === undefined && method === "HEAD" && entry.methods.includes("GET")) {
      headViaGet = entry.result;
    }
  }
  return headViaGet;
}

/**
 * Looks at one path slot. Collect mode (for method-not-allowed): with `allowed` given, records every method the
 * slot's routes accept and never matches; otherwise selects by method.
 */
function visitSlot(
  entries: readonly Entry[],
  method: string,
  allowed: Set<string> | undefined,
): MatchResult | undefined {
  if (allowed === undefined) return selectByMethod(entries, method);
  for (const entry of entries) for (const m of entry.methods) allowed.add(m);
  return undefined;
}

/**
 * Visits the path slots of one bucket that match `path`, most specific first, until one yields a result.
 * Prefix candidates are the path itself and every prefix ending at a segment boundary, down to `/`.
 */
function searchBucket(
  bucket: HostBucket,
  path: string,
  method: string,
  allowed: Set<string> | undefined,
): MatchResult | undefined {
  const exact = bucket.exact.get(path);
  if (exact !== undefined) {
    const result = visitSlot(exact, method, allowed);
    if (result !== undefined) return result;
  }
  if (bucket.prefix.size === 0) return undefined;
  const lengths = bucket.hasPrefixLength;
  // A trailing slash is a boundary, not part of the prefix: "/invoices/" is tried as "/invoices".
  let end =
    path.length > 1 && path.charCodeAt(path.length - 1) === CHAR_SLASH ? path.length - 1 : path.length;
  for (;;) {
    if (end < lengths.length && lengths[end] === 1) {
      const entries = bucket.prefix.get(end === path.length ? path : path.slice(0, end));
      if (entries !== undefined) {
        const result = visitSlot(entries, method, allowed);
        if (result !== undefined) return result;
      }
    }
    if (end <= 1) return undefined;
    const boundary = path.lastIndexOf("/", end - 1);
    end = boundary <= 0 ? 1 : boundary;
  }
}

/**
 * The host the router matches: the Host header value lower-cased, without its port and any trailing dot;
 * allocates only when needed.
 */
export function normalizeHost(host: string): string {
  let end = host.length;
  if (host.charCodeAt(0) === 0x5b) {
    // IPv6 literal: "[::1]:8080" → "[::1]".
    const close = host.indexOf("]");
    if (close !== -1) end = close + 1;
  } else {
    const colon = host.indexOf(":");
    if (colon !== -1) end = colon;
  }
  if (end > 0 && host.charCodeAt(end - 1) === CHAR_DOT) end--;
  let hasUpper = false;
  for (let i = 0; i < end; i++) {
    const c = host.charCodeAt(i);
    if (c >= 0x41 && c <= 0x5a) {
      hasUpper = true;
      break;
    }
  }
  const bare = end === host.length ? host : host.slice(0, end);
  return hasUpper ? bare.toLowerCase() : bare;
}

function normalizeConfiguredHost(hostname: string): string {
  const lower = hostname.toLowerCase();
  return lower.endsWith(".") ? lower.slice(0, -1) : lower;
}

/**
 * Builds a router over one snapshot's routes. Construction is linear in the number of routes; matching is
 * independent of it (a map probe per host label and per path segment).
 *
 * @param routes - Compiled routes; among equally specific routes the earlier one wins.
 * @returns An immutable router.
 */
export function createRouter(routes: readonly CompiledRoute[]): Router {
  const exactHosts = new Map<string, HostBucket>();
  /** Keyed by the wildcard's suffix including its leading dot: `*.example.com` → `.example.com`. */
  const wildcardHosts = new Map<string, HostBucket>();
  const anyHost = createBucket();

  for (const route of routes) {
    const entry: Entry = { methods: route.methods, result: Object.freeze({ kind: "matched", route }) };
    if (route.hostnames.length === 0) addToBucket(anyHost, route, entry);
    for (const configured of route.hostnames) {
      const hostname = normalizeConfiguredHost(configured);
      if (hostname === "*") addToBucket(anyHost, route, entry);
      else if (hostname.startsWith("*."))
        addToBucket(getBucket(wildcardHosts, hostname.slice(1)), route, entry);
      else addToBucket(getBucket(exactHosts, hostname), route, entry);
    }
  }
  const buckets = [anyHost, ...exactHosts.values(), ...wildcardHosts.values()];
  for (const bucket of buckets) {
    sortEntries(bucket.exact);
    sortEntries(bucket.prefix);
  }
  let longestWildcard = 0;
  for (const suffix of wildcardHosts.keys()) longestWildcard = Math.max(longestWildcard, suffix.length);
  const wildcardLengths = new Uint8Array(longestWildcard + 1);
  for (const suffix of wildcardHosts.keys()) wildcardLengths[suffix.length] = 1;

  /** Searches the buckets for `host`, most specific first, until one yields a result. */
  function searchHosts(
    host: string,
    path: string,
    method: string,
    allowed: Set<string> | undefined,
  ): MatchResult | undefined {
    const exact = exactHosts.get(host);
    if (exact !== undefined) {
      const result = searchBucket(exact, path, method, allowed);
      if (result !== undefined) return result;
    }
    if (wildcardHosts.size > 0) {
      // Each dot after the first label starts a candidate suffix; leftmost is longest, so most specific.
      for (let dot = host.indexOf(".", 1); dot !== -1; dot = host.indexOf(".", dot + 1)) {
        const length = host.length - dot;
        if (length >= wildcardLengths.length || wildcardLengths[length] !== 1) continue;
        const bucket = wildcardHosts.get(host.slice(dot));
        if (bucket === undefined) continue;
        const result = searchBucket(bucket, path, method, allowed);
        if (result !== undefined) return result;
      }
    }
    return searchBucket(anyHost, path, method, allowed);
  }

  return {
    match(rawHost: string, path: string, method: string): MatchResult {
      const host = normalizeHost(rawHost);
      const matched = searchHosts(host, path, method, undefined);
      if (matched !== undefined) return matched;
      // Miss: a second walk (off the hot path) collects what the matching routes would accept.
      const allowed = new Set<string>();
      searchHosts(host, path, method, allowed);
      if (allowed.size === 0) return NOT_FOUND;
      if (allowed.has("GET")) allowed.add("HEAD");
      return { kind: "method-not-allowed", allow: [...allowed].sort() };
    },
  };
}
