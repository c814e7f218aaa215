// Keeps docs/status-reasons.md in step with the closed set of compile reasons and their precedence.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { compileReasonSchema, selectReason } from "../../src/compile/reasons.ts";

const doc = readFileSync(new URL("../../docs/status-reasons.md", import.meta.url), "utf8");
const documented = [...doc.matchAll(/^\| `([A-Za-z]+)` +\|/gm)].map((m) => m[1] ?? "");

describe("status reasons doc", () => {
  it("lists exactly the reasons compile can give", () => {
    expect([...documented].sort()).toEqual([...compileReasonSchema.options].sort());
  });

  it("lists them in the precedence compile applies", () => {
    for (let i = 0; i + 1 < documented.length - 1; i++) {
      const first = compileReasonSchema.parse(documented[i]);
      const second = compileReasonSchema.parse(documented[i + 1]);
      expect(selectReason([second, first])).toBe(first);
    }
  });
});
