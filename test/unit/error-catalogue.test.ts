// Keeps the error catalogue and docs/errors.md in step: every code documented with its status, no stale rows.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { distributionErrorCatalogue, errorCatalogue } from "../../src/errors/catalogue.ts";

const doc = readFileSync(new URL("../../docs/errors.md", import.meta.url), "utf8");
const rows = new Map(
  [...doc.matchAll(/^\| `(PG_ERR_[A-Z_]+)` +\| (\d{3}) +\|/gm)].map((m) => [m[1] ?? "", Number(m[2])]),
);

const everyCode = { ...errorCatalogue, ...distributionErrorCatalogue };

describe("error catalogue", () => {
  it("documents every code, the gateway's and the snapshot service's, with its status", () => {
    for (const [code, spec] of Object.entries(everyCode)) {
      expect(rows.get(code), `${code} in docs/errors.md`).toBe(spec.status);
    }
  });

  it("documents no code that does not exist", () => {
    for (const code of rows.keys()) expect(Object.keys(everyCode)).toContain(code);
  });

  it("keeps the two parts apart: snapshot-service codes start PG_ERR_DIST_, gateway codes never do", () => {
    for (const code of Object.keys(distributionErrorCatalogue)) expect(code).toMatch(/^PG_ERR_DIST_/);
    for (const code of Object.keys(errorCatalogue)) expect(code).not.toMatch(/^PG_ERR_DIST_/);
  });

  it("shows only generic, safe detail text", () => {
    for (const spec of Object.values(everyCode)) {
      expect(spec.detail).not.toMatch(/https?:|Bearer [A-Za-z0-9]|stack|undici|ECONN/);
    }
  });
});
