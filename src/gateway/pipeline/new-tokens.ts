// A per-client bound on the tokens the gateway is checking at the authorization server for that client at once
// (`--max-new-tokens-per-client`). `--max-pending-as-calls` protects the AS from the whole internet; this keeps
// one client (an address, or an IPv6 /64) sending random tokens from taking all of those calls, so that the new
// tokens of everyone else still get theirs. It counts distinct tokens, not requests: a page that fires twenty
// requests with one fresh token waits for one introspection and takes one place. A token already cached costs
// nothing and is never refused here.
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
 * The key a client is counted under: its IPv4 address, or the /64 of its IPv6 address (one subscriber usually
 * holds a whole /64, so single addresses would give it 2^64 places). IPv4-mapped IPv6 addresses count as IPv4.
 * Anything else (a Unix socket, nothing) is counted as it is.
 */
export function clientKey(address: string | undefined): string {
  if (address === undefined) return "";
  if (isIPv4(address)) return address;
  if (!isIPv6(address)) return address;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped?.[1] !== undefined) return mapped[1];
  return `${ipv6Prefix64(address)}::/64`;
}

/** The first four groups of an IPv6 address (zone removed), each without leading zeros: `2001:db8:0:1`. */
function ipv6Prefix64(address: string): string {
  const zoneless = address.split("%")[0] ?? address;
  const [head = "", tail] = zoneless.split("::");
  const headGroups = head === "" ? [] : head.split(":");
  const tailGroups = tail === undefined || tail === "" ? [] : tail.split(":");
  // A trailing dotted IPv4 part stands for two groups; it never reaches the first four unless all is given.
  const width = (groups: string[]): number =>
    groups.reduce((n, group) => n + (group.includes(".") ? 2 : 1), 0);
  const groups =
    tail === undefined
      ? headGroups
      : [...headGroups, ...Array<string>(8 - width(headGroups) - width(tailGroups)).fill("0"), ...tailGroups];
  return groups
    .slice(0, 4)
    .map((group) => (group.includes(".") ? group : (Number.parseInt(group, 16) || 0).toString(16)))
    .join(":");
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
