// A per-client bound on the tokens the gateway is checking at the authorization server for that client at once
// (`--max-new-tokens-per-client`). `--max-pending-as-calls` protects the AS from the whole internet; this keeps
// one client (an IPv4 address, or an IPv6 /48) sending random tokens from taking all of those calls, so that the
// new tokens of everyone else still get theirs. A flood from many networks is beyond it: that one meets
// `--max-pending-as-calls` (503 for new tokens; cached ones keep working). It counts distinct tokens, not
// requests: a page that fires twenty requests with one fresh token waits for one introspection and takes one
// place. Only checks that start a call to the AS take a place (the pipeline asks the token layer): a token
// cached, already being checked (by any client), or verified locally (jwt mode) is never refused here.
import { isIPv4, isIPv6 } from "node:net";

/** Gives the place back; call exactly once, when the token's check settled. */
export type Release = () => void;

export class NewTokenLimiter {
  /** At most this many distinct tokens per client in flight; 0 turns the bound off. */
  readonly limit: number;
  /** client → token fingerprint → requests waiting for that token's check. */
  readonly #pending = new Map<string, Map<string, number>>();

  constructor(limit: number) {
    this.limit = limit;
  }

  /**
   * Takes a place for `client`'s check of the token with `fingerprint`: undefined when the client has `limit`
   * other tokens being checked already. A token the client is already waiting for joins at no cost.
   */
  acquire(client: string, fingerprint: string): Release | undefined {
    if (this.limit === 0) return noRelease;
    let tokens = this.#pending.get(client);
    const waiting = tokens?.get(fingerprint);
    if (waiting === undefined && tokens !== undefined && tokens.size >= this.limit) return undefined;
    if (tokens === undefined) {
      tokens = new Map();
      this.#pending.set(client, tokens);
    }
    tokens.set(fingerprint, (waiting ?? 0) + 1);
    const held = tokens;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (held.get(fingerprint) ?? 1) - 1;
      if (left > 0) {
        held.set(fingerprint, left);
        return;
      }
      held.delete(fingerprint);
      if (held.size === 0 && this.#pending.get(client) === held) this.#pending.delete(client);
    };
  }

  /** Clients with a token being checked (diagnostics, tests). */
  get clients(): number {
    return this.#pending.size;
  }
}

const noRelease: Release = () => undefined;

/**
 * The key a client is counted under: its IPv4 address, or the /48 of its IPv6 address. A subscriber is given a
 * whole IPv6 prefix (a /64 at least, often a /56 or a /48), so keying single addresses or /64s would give it
 * hundreds of keys. IPv4-mapped IPv6 addresses count as IPv4; `[v6]`, `v6` with brackets and a port, and `v4:port`
 * (as some proxies write X-Forwarded-For) count as their address. Anything else shares one key.
 */
export function clientKey(address: string | undefined): string {
  if (address === undefined || address === "") return "unknown";
  let ip = address;
  const bracketed = /^\[([^\]]+)\](?::\d{1,5})?$/.exec(ip);
  if (bracketed?.[1] !== undefined) ip = bracketed[1];
  else {
    const withPort = /^(\d{1,3}(?:\.\d{1,3}){3}):\d{1,5}$/.exec(ip);
    if (withPort?.[1] !== undefined) ip = withPort[1];
  }
  if (isIPv4(ip)) return ip;
  if (!isIPv6(ip)) return "unknown";
  const groups = ipv6Groups(ip);
  // ::ffff:a.b.c.d, however written (also in hex: ::ffff:c000:207).
  if (groups.slice(0, 5).every((group) => group === 0) && groups[5] === 0xffff) {
    const high = groups[6] ?? 0;
    const low = groups[7] ?? 0;
    return `${high >> 8}.${high & 0xff}.${low >> 8}.${low & 0xff}`;
  }
  return `${groups
    .slice(0, 3)
    .map((group) => group.toString(16))
    .join(":")}::/48`;
}

/** The eight 16-bit groups of a valid IPv6 address (zone removed, `::` expanded, a dotted IPv4 tail as two). */
function ipv6Groups(address: string): number[] {
  const zoneless = address.split("%")[0] ?? address;
  const parse = (part: string): number[] =>
    part === ""
      ? []
      : part.split(":").flatMap((group) => {
          if (!group.includes(".")) return [Number.parseInt(group, 16)];
          const [a = 0, b = 0, c = 0, d = 0] = group.split(".").map(Number);
          return [(a << 8) | b, (c << 8) | d];
        });
  const [head = "", tail] = zoneless.split("::");
  const headGroups = parse(head);
  if (tail === undefined) return headGroups;
  const tailGroups = parse(tail);
  return [...headGroups, ...Array<number>(8 - headGroups.length - tailGroups.length).fill(0), ...tailGroups];
}

/**
 * The address a request is counted under: the TCP peer, or with `--trust-forwarded` the last `X-Forwarded-For`
 * entry, which the trusted proxy in front added for the peer it saw (entries before it are the client's own
 * say).
 */
export function clientAddress(
  remoteAddress: string | undefined,
  forwardedFor: string | string[] | undefined,
  trustForwarded: boolean,
): string | undefined {
  if (!trustForwarded || typeof forwardedFor !== "string") return remoteAddress;
  const comma = forwardedFor.lastIndexOf(",");
  const last = forwardedFor.slice(comma + 1).trim();
  return last === "" ? remoteAddress : last;
}
