// The README's table of gateway flags and environment variables says what `phantomgate gateway --help` says.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { gatewayOptionSpecs } from "../../src/config/gateway-config.ts";

const readme = readFileSync(new URL("../../README.md", import.meta.url), "utf8");

/** The rows of the table under "### Gateway flags and environment variables", by flag. */
function tableRows(): Map<string, string> {
  const start = readme.indexOf("### Gateway flags and environment variables");
  expect(start).toBeGreaterThan(0);
  const rows = new Map<string, string>();
  for (const line of readme.slice(start).split("\n").slice(1)) {
    if (line.startsWith("#")) break;
    const flag = /^\|\s*`--([a-z-]+)/.exec(line)?.[1];
    if (flag !== undefined) rows.set(flag, line);
  }
  return rows;
}

describe("README gateway flags", () => {
  it("has a row for every flag, with its variable and, where it is a value, its default", () => {
    const rows = tableRows();
    for (const spec of gatewayOptionSpecs) {
      const row = rows.get(spec.flag);
      expect(row, `--${spec.flag}`).toBeDefined();
      expect(row, `--${spec.flag}`).toContain(`\`${spec.env}\``);
      if (!spec.defaultText.startsWith("("))
        expect(row, `--${spec.flag}`).toContain(`\`${spec.defaultText}\``);
    }
  });

  it("names no flag the gateway does not take", () => {
    const known = new Set(gatewayOptionSpecs.map((spec) => spec.flag));
    expect([...tableRows().keys()].filter((flag) => !known.has(flag))).toEqual([]);
  });
});
