// The gateway's own signing key and the internal JWTs it mints (mint mode, and phantom mode when the AS answers
// with facts rather than a JWT): short-lived, one audience, only the claims and scopes the route may pass on.
import { randomUUID } from "node:crypto";
import { readFile } from "node:fs/promises";
import {
  calculateJwkThumbprint,
  exportJWK,
  generateKeyPair,
  importJWK,
  importPKCS8,
  SignJWT,
  type CryptoKey,
  type JSONWebKeySet,
  type JWK,
} from "jose";
import { GatewayError } from "../errors/catalogue.ts";
import { claimsMintCannotForward, type CompiledRoute, type JwsAlgorithm } from "../snapshot/snapshot.ts";
import type { Clock } from "./clock.ts";
import { intersectScopes, type TokenFacts } from "./facts.ts";

/** `iss` of minted JWTs unless configured. */
export const DEFAULT_MINT_ISSUER = "urn:phantomgate:gateway";

/**
 * Claims `forwardClaims` never copies: what admission refuses to forward (a snapshot from elsewhere may still name
 * them), and sub, client_id and scope, which the gateway sets from the token itself (scope narrowed).
 */
const RESERVED_CLAIMS: ReadonlySet<string> = new Set([
  ...claimsMintCannotForward,
  "sub",
  "client_id",
  "scope",
]);

/** Private JWK members, stripped to publish the public half. */
const PRIVATE_JWK_MEMBERS: ReadonlySet<string> = new Set(["d", "p", "q", "dp", "dq", "qi", "oth", "k"]);

export interface MinterOptions {
  readonly clock: Clock;
  /** Default {@link DEFAULT_MINT_ISSUER}. */
  readonly issuer?: string | undefined;
  /** Private JWK (JSON) or PKCS#8 PEM; an ephemeral key is generated when absent. */
  readonly keyFile?: string | undefined;
  /** Signing algorithm; default the JWK's `alg`, else ES256. */
  readonly algorithm?: JwsAlgorithm | undefined;
}

/** A minted JWT. */
export interface MintedToken {
  readonly token: string;
  /** Epoch seconds. */
  readonly issuedAt: number;
  /** Epoch seconds. */
  readonly expiresAt: number;
}

/** Signs internal JWTs with the gateway's key. */
export interface Minter {
  readonly issuer: string;
  readonly keyId: string;
  readonly algorithm: string;
  /**
   * Mints the JWT an upstream receives for a route: `aud` = the route's audience, `sub`, `client_id`, the
   * route's `forwardClaims`, `scope` = token scopes ∩ the route's upstream scopes, `exp` = min(now + the route's
   * mintTtlSeconds, token exp), header `typ: at+jwt` (RFC 9068) and `kid`.
   */
  mintInternalJwt(facts: TokenFacts, route: CompiledRoute): Promise<MintedToken>;
  /** The public JWKS upstreams verify minted JWTs with (`/.well-known/jwks.json` on the admin port); a copy. */
  jwks(): Promise<JSONWebKeySet>;
}

/**
 * Members a published key must not carry besides the private ones: a key file exported by WebCrypto says
 * `key_ops: ["sign"]` and `ext`, and a verifier (jose among them) skips a key whose `key_ops` lacks "verify".
 */
const PRIVATE_USE_MEMBERS: ReadonlySet<string> = new Set(["key_ops", "ext"]);

function publicHalf(jwk: JWK): JWK {
  return Object.fromEntries(
    Object.entries(jwk).filter(([name]) => !PRIVATE_JWK_MEMBERS.has(name) && !PRIVATE_USE_MEMBERS.has(name)),
  );
}

async function readKey(
  keyFile: string,
  algorithm: JwsAlgorithm | undefined,
): Promise<{ privateKey: CryptoKey; publicJwk: JWK; alg: string }> {
  let text: string;
  try {
    text = (await readFile(keyFile, "utf8")).trim();
  } catch (error) {
    throw new Error(`cannot read the mint key file ${keyFile}`, { cause: error });
  }
  if (text.startsWith("{")) {
    const jwk = JSON.parse(text) as JWK;
    if (typeof jwk.d !== "string") throw new Error(`mint key file ${keyFile} holds no private key`);
    const alg = algorithm ?? jwk.alg ?? "ES256";
    const privateKey = await importJWK(jwk, alg);
    if (privateKey instanceof Uint8Array) throw new Error("mint key must be asymmetric");
    return { privateKey, publicJwk: publicHalf(jwk), alg };
  }
  const alg = algorithm ?? "ES256";
  const privateKey = await importPKCS8(text, alg, { extractable: true });
  return { privateKey, publicJwk: publicHalf(await exportJWK(privateKey)), alg };
}

/** Loads (or generates) the gateway's signing key. */
export async function loadMinter(options: MinterOptions): Promise<Minter> {
  const issuer = options.issuer ?? DEFAULT_MINT_ISSUER;
  const { clock } = options;
  let privateKey: CryptoKey;
  let publicJwk: JWK;
  let alg: string;
  if (options.keyFile === undefined) {
    alg = options.algorithm ?? "ES256";
    const pair = await generateKeyPair(alg);
    privateKey = pair.privateKey;
    publicJwk = await exportJWK(pair.publicKey);
  } else {
    ({ privateKey, publicJwk, alg } = await readKey(options.keyFile, options.algorithm));
  }
  const kid = publicJwk.kid ?? (await calculateJwkThumbprint(publicJwk));
  const published: JWK = Object.freeze({ ...publicJwk, kid, alg, use: "sig" });
  const header = { alg, kid, typ: "at+jwt" };

  return {
    issuer,
    keyId: kid,
    algorithm: alg,
    async mintInternalJwt(facts, route) {
      const audience = route.auth.audience;
      if (audience === undefined)
        throw new GatewayError("PG_ERR_INTERNAL", `route ${route.id} has no audience to mint for`);
      const issuedAt = Math.floor(clock.now() / 1000);
      const expiresAt = Math.min(
        issuedAt + route.auth.mintTtlSeconds,
        facts.expiresAt ?? Number.POSITIVE_INFINITY,
      );
      if (expiresAt <= issuedAt)
        throw new GatewayError("PG_ERR_TOKEN_INVALID", "token expires before a JWT can be minted");
      const payload: Record<string, unknown> = {};
      for (const name of route.auth.forwardClaims) {
        const value = facts.claims[name];
        if (value !== undefined && !RESERVED_CLAIMS.has(name)) payload[name] = value;
      }
      payload["iss"] = issuer;
      payload["aud"] = audience;
      // RFC 9068 §2.2: with no resource owner (client credentials), the client is the subject.
      const subject = facts.sub ?? facts.clientId;
      if (subject !== undefined) payload["sub"] = subject;
      if (facts.clientId !== undefined) payload["client_id"] = facts.clientId;
      const scopes = intersectScopes(facts.scopes, route.auth.upstreamScopes);
      if (scopes.length > 0) payload["scope"] = scopes.join(" ");
      payload["iat"] = issuedAt;
      payload["exp"] = expiresAt;
      payload["jti"] = randomUUID();
      const token = await new SignJWT(payload).setProtectedHeader(header).sign(privateKey);
      return { token, issuedAt, expiresAt };
    },
    jwks: () => Promise.resolve({ keys: [{ ...published }] }),
  };
}
