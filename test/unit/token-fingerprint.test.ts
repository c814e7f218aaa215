// Token fingerprints: SHA-256, base64url, stable, never the token itself.
import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { fingerprintToken } from "../../src/tokens/fingerprint.ts";

describe("fingerprintToken", () => {
  it("is base64url(SHA-256(token))", () => {
    const token = "opaque-token-value";
    expect(fingerprintToken(token)).toBe(createHash("sha256").update(token).digest("base64url"));
    expect(fingerprintToken(token)).toMatch(/^[A-Za-z0-9_-]{43}$/);
  });

  it("is stable and distinguishes tokens", () => {
    expect(fingerprintToken("a")).toBe(fingerprintToken("a"));
    expect(fingerprintToken("a")).not.toBe(fingerprintToken("b"));
  });

  it("never equals or contains the token, even for a token shaped like a fingerprint", () => {
    const lookalike = fingerprintToken("seed");
    for (const token of ["x", lookalike, "eyJhbGciOiJFUzI1NiJ9.e30.sig", "a".repeat(4096)]) {
      const fingerprint = fingerprintToken(token);
      expect(fingerprint).not.toBe(token);
      expect(fingerprint.includes(token)).toBe(false);
      expect(fingerprint).toHaveLength(43);
    }
  });
});
