// The gateway checks received snapshots with an ajv validator derived from `snapshotSchema` (src/snapshot/check.ts).
// These tests hold the two to the same verdict: every golden and example snapshot passes both, and thousands of
// random breakages of them are rejected by both or by neither.
import { readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { compile, type SourceObject } from "../../src/compile/compile.ts";
import { parseManifestText } from "../../src/provider/file/index.ts";
import { checkSnapshot, describeSnapshotIssues, referenceIssues } from "../../src/snapshot/check.ts";
import { snapshotSchema, type Snapshot } from "../../src/snapshot/snapshot.ts";
import { createRandom } from "../helpers/random.ts";

const root = resolve(import.meta.dirname, "../..");

function manifests(dir: string, suffix: string): SourceObject[][] {
  return readdirSync(dir)
    .filter((file) => file.endsWith(suffix))
    .sort()
    .map((file) => parseManifestText(readFileSync(join(dir, file), "utf8"), file).objects);
}

/** Snapshots compiled from the examples and from every golden input. */
function snapshots(): Snapshot[] {
  const examples = manifests(join(root, "examples"), ".yaml").flat();
  return [
    compile({ objects: examples }).snapshot,
    ...manifests(join(root, "test/golden"), ".in.yaml").map((objects) => compile({ objects }).snapshot),
  ];
}

const replacements: readonly unknown[] = [
  null,
  -1,
  0,
  1,
  1.5,
  601,
  Number.MAX_SAFE_INTEGER + 2,
  "",
  "x",
  "/",
  "no-slash",
  "http://",
  "http://a b",
  "ftp://example.com",
  "https://example.com",
  "https://example.com/path?q=1",
  "0123456789abcdef",
  "phantom",
  "Exact",
  "RS256",
  "HS256",
  "client_secret_post",
  [],
  [""],
  ["GET"],
  {},
  { scope: "a", satisfiedBy: ["a"] },
  true,
];

/** Replaces, deletes or adds one field somewhere in `value` (in place). */
function breakOnce(value: unknown, random: () => number): string {
  const containers: { node: Record<string, unknown> | unknown[]; path: string }[] = [];
  const collect = (node: unknown, path: string): void => {
    if (typeof node !== "object" || node === null) return;
    containers.push({ node: node as Record<string, unknown> | unknown[], path });
    for (const [key, child] of Object.entries(node)) collect(child, `${path}.${key}`);
  };
  collect(value, "");
  const { node, path } = containers[Math.floor(random() * containers.length)]!;
  const keys = Object.keys(node);
  const replacement = structuredClone(replacements[Math.floor(random() * replacements.length)]);
  const roll = random();
  if (roll < 0.1 && !Array.isArray(node)) {
    node["unexpectedField"] = replacement;
    return `${path}.unexpectedField added`;
  }
  const key = keys[Math.floor(random() * keys.length)];
  if (key === undefined) return `${path} (empty, unchanged)`;
  if (roll < 0.3 && !Array.isArray(node)) {
    // eslint-disable-next-line @typescript-eslint/no-dynamic-delete -- removing a random field is the point
    delete node[key];
    return `${path}.${key} deleted`;
  }
  (node as Record<string, unknown>)[key] = replacement;
  return `${path}.${key} = ${JSON.stringify(replacement)}`;
}

describe("checkSnapshot", () => {
  const valid = snapshots();

  it("accepts every compiled snapshot and hands back the same object", () => {
    expect(valid.length).toBeGreaterThan(5);
    for (const snapshot of valid) {
      const result = checkSnapshot(snapshot);
      expect(result.ok).toBe(true);
      if (result.ok) expect(result.snapshot).toBe(snapshot);
    }
  });

  it("agrees with snapshotSchema on 3,000 random breakages", () => {
    const random = createRandom(20261130);
    let rejected = 0;
    for (let round = 0; round < 3000; round++) {
      const broken = structuredClone(valid[round % valid.length]) as unknown;
      const change = breakOnce(broken, random);
      const parsed = snapshotSchema.safeParse(broken);
      // What zod takes, less what breaks a reference (an id changed or duplicated).
      const byZod = parsed.success && referenceIssues(parsed.data).length === 0;
      const result = checkSnapshot(broken);
      expect({ round, change, ok: result.ok }).toEqual({ round, change, ok: byZod });
      if (!result.ok) {
        rejected += 1;
        expect(result.issues.length).toBeGreaterThan(0);
      }
    }
    // Most breakages must be real ones (about two thirds are), or the agreement above says little.
    expect(rejected).toBeGreaterThan(1500);
  });

  it("refuses duplicate ids and a route naming an auth server the snapshot lacks", () => {
    const base = valid.find((snapshot) => snapshot.authServers.length > 0 && snapshot.routes.length > 1);
    if (base === undefined) throw new Error("no snapshot with an auth server and two routes");
    const describe = (snapshot: Snapshot) => {
      const result = checkSnapshot(snapshot);
      return result.ok ? "ok" : describeSnapshotIssues(result.issues);
    };
    expect(describe(base)).toBe("ok");
    const twoIds = structuredClone(base);
    twoIds.routes[1]!.id = twoIds.routes[0]!.id;
    expect(describe(twoIds)).toBe(`routes.1.id: duplicate route id ${base.routes[0]!.id}`);
    const twoServers = structuredClone(base);
    twoServers.authServers.push(structuredClone(twoServers.authServers[0]!));
    expect(describe(twoServers)).toMatch(/^authServers\.\d+\.id: duplicate auth server id /);
    const dangling = structuredClone(base);
    const phantom = dangling.routes.findIndex((route) => route.auth.mode !== "none");
    dangling.routes[phantom]!.auth.authServer = "nowhere/as";
    expect(describe(dangling)).toBe(
      `routes.${phantom}.auth.authServer: no auth server nowhere/as in the snapshot`,
    );
  });

  it("names the path and the problem of the first issue", () => {
    const broken = structuredClone(valid[0]) as Snapshot;
    (broken.routes[0]!.path as { type: string }).type = "Regex";
    const result = checkSnapshot(broken);
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(describeSnapshotIssues(result.issues)).toBe(
      'routes.0.path.type: must be one of "Exact", "PathPrefix"',
    );

    const extra = structuredClone(valid[0]) as Snapshot & { extra?: number };
    extra.extra = 1;
    const extraResult = checkSnapshot(extra);
    expect(extraResult.ok ? "" : describeSnapshotIssues(extraResult.issues)).toBe(
      '(root): unrecognized key "extra"',
    );

    const missing = structuredClone(valid[0]) as Partial<Snapshot>;
    delete missing.revision;
    const missingResult = checkSnapshot(missing);
    expect(missingResult.ok ? "" : describeSnapshotIssues(missingResult.issues)).toBe("revision: required");
  });

  it("rejects values that are not snapshots at all", () => {
    for (const value of [null, undefined, 1, "snapshot", [], {}]) {
      expect(checkSnapshot(value).ok).toBe(false);
    }
  });
});
