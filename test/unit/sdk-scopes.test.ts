// SDK scope logic: implications from ScopePolicy objects (validated and compiled by the gateway's own code), scope
// requirements, the fewest scopes for an exchange, and configuration errors that fail loudly.
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";
import { describe, expect, it } from "vitest";
import { billingScopePolicy } from "../../src/demo/security-domains.ts";
import { createScopeChecker, SdkError, type ScopePolicyLike } from "../../src/sdk/index.ts";

const billing = {
  domain: "billing",
  scopes: [
    { name: "read_invoice" },
    { name: "write_invoice", implies: ["read_invoice"] },
    { name: "admin_invoice", implies: ["write_invoice"] },
    { name: "export_invoice", implies: ["read_invoice"] },
  ],
};
const streaming = {
  domain: "streaming",
  scopes: [{ name: "high_video_stream", implies: ["low_video_stream"] }, { name: "low_video_stream" }],
};

function codeOf(run: () => unknown): string | undefined {
  try {
    run();
  } catch (error) {
    if (error instanceof SdkError) return error.code;
    throw error;
  }
  return undefined;
}

describe("scope checker", () => {
  const scopes = createScopeChecker([billing, streaming]);

  it("resolves implications transitively", () => {
    expect(scopes.has(["admin_invoice"], "read_invoice")).toBe(true);
    expect(scopes.has(["write_invoice"], "read_invoice")).toBe(true);
    expect(scopes.has(["read_invoice"], "write_invoice")).toBe(false);
    expect(scopes.has({ scopes: ["high_video_stream"] }, "low_video_stream")).toBe(true);
    expect(scopes.satisfiedBy("read_invoice")).toEqual([
      "read_invoice",
      "admin_invoice",
      "export_invoice",
      "write_invoice",
    ]);
  });

  it("checks allOf and anyOf and names what is missing", () => {
    expect(scopes.missing(["write_invoice"], ["read_invoice", "write_invoice"])).toBeUndefined();
    expect(scopes.missing(["read_invoice"], ["read_invoice", "write_invoice"])).toBe("write_invoice");
    expect(scopes.missing(["low_video_stream"], { anyOf: ["read_invoice", "high_video_stream"] })).toBe(
      "read_invoice high_video_stream",
    );
    expect(
      scopes.missing(["high_video_stream"], { anyOf: ["read_invoice", "high_video_stream"] }),
    ).toBeUndefined();
  });

  it("require throws 403 insufficient_scope naming the scope", () => {
    let caught: unknown;
    try {
      scopes.require({ scopes: ["read_invoice"] }, "write_invoice");
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(SdkError);
    expect(caught).toMatchObject({
      code: "PG_SDK_INSUFFICIENT_SCOPE",
      status: 403,
      extra: { scope: "write_invoice" },
    });
    expect(() => scopes.require(["admin_invoice"], "write_invoice")).not.toThrow();
  });

  it("refuses a requirement that asks for nothing or is misspelt: it would let every token through", () => {
    for (const requirement of [[], {}, { anyOf: [] }, { allOf: [], anyOf: [] }, ""] as const) {
      expect(
        codeOf(() => scopes.validate(requirement)),
        JSON.stringify(requirement),
      ).toBe("PG_SDK_CONFIG_INVALID");
      expect(
        codeOf(() => scopes.require([], requirement)),
        JSON.stringify(requirement),
      ).toBe("PG_SDK_CONFIG_INVALID");
    }
    const misspelt = { anyof: ["write_invoice"] } as unknown as { anyOf: string[] };
    expect(() => scopes.validate(misspelt)).toThrow("unknown key 'anyof' (allOf, anyOf)");
    const notAList = { allOf: "write_invoice" } as unknown as { allOf: string[] };
    expect(() => scopes.require(["write_invoice"], notAList)).toThrow("allOf must be a list of scope names");
  });

  it("names one scope that would do in the challenge for anyOf, and all of them in the body", () => {
    let caught: unknown;
    try {
      scopes.require(["low_video_stream"], { anyOf: ["read_invoice", "high_video_stream"] });
    } catch (error) {
      caught = error;
    }
    expect(caught).toMatchObject({
      code: "PG_SDK_INSUFFICIENT_SCOPE",
      extra: { scope: "read_invoice", anyOf: "read_invoice high_video_stream" },
    });
  });

  it("treats an unknown scope name as a configuration error, not as a denial", () => {
    expect(codeOf(() => scopes.has(["read_invoice"], "reed_invoice"))).toBe("PG_SDK_CONFIG_INVALID");
    expect(codeOf(() => scopes.validate({ anyOf: ["read_invoice", "typo"] }))).toBe("PG_SDK_CONFIG_INVALID");
    expect(codeOf(() => scopes.fewest(["read_invoice"], ["typo"]))).toBe("PG_SDK_CONFIG_INVALID");
  });

  describe("fewest scopes for an exchange", () => {
    const cases: [string[], string[], string[]][] = [
      // granted, needed, asked for
      [["read_invoice", "write_invoice"], ["read_invoice"], ["read_invoice"]],
      [["write_invoice"], ["read_invoice"], ["write_invoice"]],
      [["admin_invoice", "export_invoice"], ["read_invoice"], ["export_invoice"]],
      [["read_invoice", "write_invoice"], ["read_invoice", "write_invoice"], ["write_invoice"]],
      [
        ["high_video_stream", "read_invoice"],
        ["low_video_stream", "read_invoice"],
        ["high_video_stream", "read_invoice"],
      ],
      [["admin_invoice", "write_invoice", "read_invoice"], ["write_invoice"], ["write_invoice"]],
    ];
    for (const [granted, needed, expected] of cases) {
      it(`${granted.join(" ")} for ${needed.join(" ")} → ${expected.join(" ")}`, () => {
        expect(scopes.fewest(granted, needed)).toEqual(expected);
      });
    }

    it("refuses when the granted scopes cannot satisfy a need", () => {
      let caught: unknown;
      try {
        scopes.fewest(["read_invoice", "low_video_stream"], ["read_invoice", "write_invoice"]);
      } catch (error) {
        caught = error;
      }
      expect(caught).toMatchObject({ code: "PG_SDK_INSUFFICIENT_SCOPE", extra: { scope: "write_invoice" } });
    });
  });

  it("accepts whole ScopePolicy objects as parsed from the manifests", () => {
    const text = readFileSync(new URL("../../examples/scope-policies.yaml", import.meta.url), "utf8");
    const objects = parseAllDocuments(text).map((doc) => doc.toJS() as ScopePolicyLike);
    const fromManifests = createScopeChecker(objects);
    expect(fromManifests.has(["high_video_stream"], "low_video_stream")).toBe(true);
    expect(fromManifests.has(["write_invoice"], "read_invoice")).toBe(true);
  });

  it("the demo APIs' billing policy is the one in examples/scope-policies.yaml", () => {
    const text = readFileSync(new URL("../../examples/scope-policies.yaml", import.meta.url), "utf8");
    const specs = parseAllDocuments(text).map((doc) => (doc.toJS() as { spec: { domain: string } }).spec);
    expect(specs.find((spec) => spec.domain === "billing")).toEqual(billingScopePolicy);
  });

  describe("rejects policies the gateway would reject", () => {
    const bad: [string, ScopePolicyLike | ScopePolicyLike[]][] = [
      [
        "an implied scope the policy does not define",
        { domain: "x", scopes: [{ name: "a", implies: ["b"] }] },
      ],
      [
        "an implication cycle",
        {
          domain: "x",
          scopes: [
            { name: "a", implies: ["b"] },
            { name: "b", implies: ["a"] },
          ],
        },
      ],
      ["a duplicate scope", { domain: "x", scopes: [{ name: "a" }, { name: "a" }] }],
      ["a scope name with a space", { domain: "x", scopes: [{ name: "a b" }] }],
      ["one scope in two policies", [billing, { domain: "other", scopes: [{ name: "read_invoice" }] }]],
      ["no policy at all", []],
    ];
    for (const [what, policies] of bad) {
      it(what, () => {
        expect(codeOf(() => createScopeChecker(policies))).toBe("PG_SDK_CONFIG_INVALID");
      });
    }
  });
});
