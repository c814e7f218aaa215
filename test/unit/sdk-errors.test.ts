// SDK error catalogue: problem+json rendering (RFC 9457) with RFC 6750 challenges, no internals in 5xx bodies,
// and the catalogue kept in step with the table in docs/writing-an-api.md.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { problemResponse, SdkError, sdkErrorCatalogue, type SdkErrorCode } from "../../src/sdk/index.ts";

const doc = readFileSync(new URL("../../docs/writing-an-api.md", import.meta.url), "utf8");
const rows = new Map(
  [...doc.matchAll(/^\| `(PG_SDK_[A-Z_]+)` *\| *(\d{3}) *\|/gm)].map((m) => [m[1] ?? "", Number(m[2])]),
);

describe("SDK errors", () => {
  it("documents every code with its status, and no code that does not exist", () => {
    for (const [code, spec] of Object.entries(sdkErrorCatalogue)) {
      expect(rows.get(code), `${code} in docs/writing-an-api.md`).toBe(spec.status);
    }
    for (const code of rows.keys()) expect(Object.keys(sdkErrorCatalogue)).toContain(code);
  });

  it("renders a missing token as 401 with a bare Bearer challenge", () => {
    const problem = problemResponse(new SdkError("PG_SDK_TOKEN_MISSING", "no header"), { requestId: "r-1" });
    expect(problem.status).toBe(401);
    expect(problem.headers).toMatchObject({
      "content-type": "application/problem+json",
      "www-authenticate": 'Bearer realm="phantomgate"',
    });
    expect(JSON.parse(problem.body)).toEqual({
      type: "https://phantomgate.dev/errors/PG_SDK_TOKEN_MISSING",
      title: "Unauthorized",
      status: 401,
      detail: sdkErrorCatalogue.PG_SDK_TOKEN_MISSING.detail,
      code: "PG_SDK_TOKEN_MISSING",
      requestId: "r-1",
    });
  });

  it("renders invalid_token and insufficient_scope challenges", () => {
    const expired = problemResponse(new SdkError("PG_SDK_TOKEN_EXPIRED", "ERR_JWT_EXPIRED"));
    expect(expired.headers["www-authenticate"]).toContain('error="invalid_token"');
    const scope = problemResponse(
      new SdkError("PG_SDK_INSUFFICIENT_SCOPE", "missing", { extra: { scope: "write_invoice" } }),
    );
    expect(scope.status).toBe(403);
    expect(scope.headers["www-authenticate"]).toContain('error="insufficient_scope"');
    expect(scope.headers["www-authenticate"]).toContain('scope="write_invoice"');
    expect(JSON.parse(scope.body)).toMatchObject({ scope: "write_invoice" });
  });

  it("never shows the internal reason, and hides detail and extras on 5xx", () => {
    const codes = Object.keys(sdkErrorCatalogue) as SdkErrorCode[];
    for (const code of codes) {
      const error = new SdkError(code, "internal reason xyz", {
        detail: "custom detail",
        extra: { hint: "h" },
      });
      const problem = problemResponse(error);
      expect(problem.body).not.toContain("internal reason xyz");
      if (error.status >= 500) {
        expect(problem.body).not.toContain("custom detail");
        expect(problem.body).not.toContain('"hint"');
      }
    }
    const unavailable = problemResponse(new SdkError("PG_SDK_KEYS_UNAVAILABLE", "JWKS down"));
    expect(unavailable.headers["retry-after"]).toBe("5");
  });

  it("keeps catalogue details generic", () => {
    for (const spec of Object.values(sdkErrorCatalogue)) {
      expect(spec.detail).not.toMatch(/https?:|Bearer [A-Za-z0-9]|stack|undici|ECONN/);
    }
  });
});
