import { describe, expect, it } from "vitest";
import { bearerAuthorization, bearerToken } from "../../src/tokens/bearer.ts";

describe("bearerAuthorization", () => {
  it("makes the Authorization value, and bearerToken gives the token back", () => {
    const jwt = `eyJhbGciOiJSUzI1NiJ9.${"a".repeat(900)}.sig-_`;
    const value = bearerAuthorization(jwt);
    expect(value).toBe(`Bearer ${jwt}`);
    expect(bearerToken(value)).toBe(jwt);
    expect(bearerToken(bearerAuthorization("t"))).toBe("t");
  });

  it("refuses a token that no header value can carry", () => {
    for (const token of ["a\r\nx-injected: 1", "a\nb", "a\u0000b", "a\u0100b", "a\u007fb"]) {
      expect(() => bearerAuthorization(token)).toThrow(
        expect.objectContaining({ code: "PG_ERR_AS_UNAVAILABLE" }) as Error,
      );
    }
    // Tab, space and obs-text are field-value characters (RFC 9110 §5.5), as undici takes them.
    expect(bearerAuthorization("a b\tc\u00e9")).toBe("Bearer a b\tc\u00e9");
  });
});
