// The demo AS's signing key ring: key generation, rotation, the published JWKS, and the JWTs the AS signs itself.
import type { JsonWebKey } from "node:crypto";

import {
  SignJWT,
  calculateJwkThumbprint,
  createLocalJWKSet,
  exportJWK,
  generateKeyPair,
  jwtVerify,
  type CryptoKey,
  type JWK,
  type JWTPayload,
  type JWTVerifyResult,
} from "jose";

/** One algorithm for everything the AS signs: small keys that generate in milliseconds, so rotation is cheap. */
export const SIGNING_ALG = "ES256";

interface SigningKey {
  readonly kid: string;
  /** Private JWK as oidc-provider's `jwks` setting wants it. */
  readonly privateJwk: JWK;
  readonly publicJwk: JWK;
  readonly privateKey: CryptoKey;
}

/**
 * The newest key signs; older keys stay published (and trusted for verification) until dropped, so JWTs
 * issued before a rotation keep verifying at relying parties that refetch the JWKS.
 */
export class SigningKeyRing {
  /** Newest first: oidc-provider signs with the first key that fits the algorithm, so order is policy. */
  #keys: readonly SigningKey[] = [];

  static async create(): Promise<SigningKeyRing> {
    const ring = new SigningKeyRing();
    await ring.rotate({ dropOld: true });
    return ring;
  }

  /** Adds a fresh key in front and returns its kid. */
  async rotate(options: { dropOld?: boolean } = {}): Promise<string> {
    const key = await generateSigningKey();
    this.#keys = options.dropOld === true ? [key] : [key, ...this.#keys];
    return key.kid;
  }

  get currentKid(): string {
    return this.#current().kid;
  }

  /** Private JWKs, newest first, for oidc-provider's keystore. */
  privateJwks(): { keys: JsonWebKey[] } {
    return { keys: this.#keys.map((key): JsonWebKey => ({ ...key.privateJwk })) };
  }

  publicJwks(): { keys: JWK[] } {
    return { keys: this.#keys.map((key) => ({ ...key.publicJwk })) };
  }

  /** Signs `claims` as a compact JWS with the current key; `typ` distinguishes access tokens from other JWTs. */
  async sign(claims: JWTPayload, typ: string): Promise<string> {
    const key = this.#current();
    return new SignJWT(claims)
      .setProtectedHeader({ alg: SIGNING_ALG, kid: key.kid, typ })
      .sign(key.privateKey);
  }

  /** Verifies a JWT access token this AS issued (any key still in the ring); throws when it is not one. */
  async verifyAccessToken(jwt: string, issuer: string): Promise<JWTVerifyResult> {
    return jwtVerify(jwt, createLocalJWKSet(this.publicJwks()), {
      issuer,
      algorithms: [SIGNING_ALG],
      // Only access tokens: an RFC 9701 introspection response is signed by the same keys but grants nothing.
      typ: "at+jwt",
      requiredClaims: ["exp", "sub", "client_id"],
    });
  }

  #current(): SigningKey {
    const [current] = this.#keys;
    if (current === undefined) throw new Error("signing key ring is empty");
    return current;
  }
}

async function generateSigningKey(): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair(SIGNING_ALG, { extractable: true });
  const publicBase = await exportJWK(publicKey);
  const kid = await calculateJwkThumbprint(publicBase);
  const meta = { kid, alg: SIGNING_ALG, use: "sig" } as const;
  return {
    kid,
    privateJwk: { ...(await exportJWK(privateKey)), ...meta },
    publicJwk: { ...publicBase, ...meta },
    privateKey,
  };
}
