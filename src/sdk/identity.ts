// The typed identity an API reads from a verified internal JWT — the "mini identity API" — and the one place that
// remembers which raw token an identity came from (so API-to-API calls can forward or exchange it) without ever
// putting the token where a logger or JSON.stringify could reach it.
import type { JWTPayload } from "jose";

/**
 * One link of an RFC 8693 delegation chain (`act` claim): who is acting for the subject, and who acted before.
 */
export interface Actor {
  readonly sub: string;
  /** The earlier actor, when the token was exchanged more than once. */
  readonly actor?: Actor;
}

/**
 * Who is calling and with which rights, read from a verified internal JWT. Safe to log and to serialise: it holds
 * the token's fingerprint, never the token, and a claim that carries a token of its own (an embedded token such
 * as `ledger_token`) is readable by name but left out of JSON, pino and util.inspect.
 *
 * `C` types the claims you declared with the verifier's `claims` schema.
 *
 * @example
 * ```ts
 * const identity = await verifier.verify(jwt);
 * identity.sub;              // "demo-client"
 * identity.scopes;           // ["read_invoice"]
 * identity.actor?.sub;       // "invoices-api" when another API exchanged the token for you
 * identity.tokenFingerprint; // base64url SHA-256, for your own audit lines
 * ```
 */
export interface Identity<C extends object = Readonly<Record<string, unknown>>> {
  /** `sub`: the end user or, for client_credentials tokens, the client. */
  readonly sub: string;
  /** `client_id`: the OAuth client the caller used, when the token says. */
  readonly clientId: string | undefined;
  /** Granted scopes from `scope` (space-separated or list) or `scp`, deduplicated. */
  readonly scopes: readonly string[];
  readonly issuer: string;
  /** `aud`, always as a list. */
  readonly audience: readonly string[];
  /** `exp`, epoch seconds. */
  readonly expiresAt: number;
  /** `iat`, epoch seconds, when present. */
  readonly issuedAt: number | undefined;
  /** The delegation chain (`act`), when another party exchanged the token. */
  readonly actor: Actor | undefined;
  /** base64url SHA-256 of the JWT: identifies it in logs and audit lines. */
  readonly tokenFingerprint: string;
  /** Every claim of the JWT, with the claims your schema declared typed. */
  readonly claims: Readonly<JWTPayload> & C;
}

// Keyed by the identity object: the token lives exactly as long as the identity and is unreachable from it.
const tokens = new WeakMap<object, string>();

/** Binds `token` to `identity` (SDK internal: only the verifier creates identities). */
export function bindToken(identity: object, token: string): void {
  tokens.set(identity, token);
}

/**
 * The raw JWT behind `identity` (SDK internal: for share and exchange). Throws when the identity was not created by
 * this SDK's verifier — a hand-made object must not become a credential.
 */
export function tokenOf(identity: object): string {
  const token = tokens.get(identity);
  if (token === undefined) throw new TypeError("identity was not produced by a phantomgate/sdk verifier");
  return token;
}

/** Parses an `act` claim into an {@link Actor} chain; anything malformed ends the chain. */
export function parseActor(value: unknown, depth = 0): Actor | undefined {
  // Chains are short in practice; the bound keeps a hostile token from costing a deep recursion.
  if (depth > 16 || typeof value !== "object" || value === null) return undefined;
  const sub = (value as { sub?: unknown }).sub;
  if (typeof sub !== "string") return undefined;
  const earlier = parseActor((value as { act?: unknown }).act, depth + 1);
  return earlier === undefined ? { sub } : { sub, actor: earlier };
}
