// Token fingerprints: the only form in which a token may appear in logs, metrics, errors, cache keys and revocations.
import { hash } from "node:crypto";

/**
 * Returns `base64url(SHA-256(token))`, 43 characters. One-way, so a fingerprint cannot be replayed as the token;
 * it identifies a token for audit, cache keys and revocation. Uses the one-shot `crypto.hash` (no Hash object)
 * because it runs on every authenticated request.
 */
export function fingerprintToken(token: string): string {
  return hash("sha256", token, "base64url");
}
