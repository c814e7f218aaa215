// Status computation: Accepted and Programmed conditions, lastTransitionTime, fleet counts, and which gateways
// serve an object as it is now (the revision ledger).
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { compile, type CompileResult } from "../../src/compile/compile.ts";
import type { FleetView, GatewayState } from "../../src/operator/distribute/distributor.ts";
import {
  computeStatus,
  programmedReasonDescriptions,
  programmedReasonSchema,
  statusUpToDate,
  type ProgrammedInput,
} from "../../src/operator/status/conditions.ts";
import { RevisionLedger } from "../../src/operator/status/programmed.ts";
import { MAX_STATUS_CONDITIONS } from "../../src/resources/common.ts";
import { kubeTime } from "../../src/operator/status/status-writer.ts";

const t0 = "2030-01-01T00:00:00Z";
const t1 = "2030-01-01T00:05:00Z";
const accepted = { accepted: true, reason: "Accepted" as const, messages: [], generation: 3 };
const noGateways: ProgrammedInput = {
  counts: { revision: "r1", programmed: 0, gateways: 0 },
  rejections: [],
};

const crdDir = join(import.meta.dirname, "../../crds");

describe("computeStatus", () => {
  it("accepted, no gateways: Accepted True, Programmed False NoGateways, k/n message, observedGeneration", () => {
    const status = computeStatus({
      result: accepted,
      programmed: noGateways,
      existing: undefined,
      nowIso: t0,
    });
    expect(status).toEqual({
      observedGeneration: 3,
      conditions: [
        {
          type: "Accepted",
          status: "True",
          reason: "Accepted",
          message: "The object is valid and part of the snapshot.",
          observedGeneration: 3,
          lastTransitionTime: t0,
        },
        {
          type: "Programmed",
          status: "False",
          reason: "NoGateways",
          message: "revision r1 programmed on 0/0 gateways",
          observedGeneration: 3,
          lastTransitionTime: t0,
        },
      ],
      fleet: { revision: "r1", programmed: 0, gateways: 0 },
    });
  });

  it("rejected: Accepted False with the compile reason and every message; Programmed NotAccepted", () => {
    const status = computeStatus({
      result: { accepted: false, reason: "UnknownScope", messages: ["a: one", "b: two"], generation: 1 },
      programmed: { counts: { revision: "r1", programmed: 0, gateways: 2 }, rejections: [] },
      existing: undefined,
      nowIso: t0,
    });
    expect(status.conditions[0]).toMatchObject({
      status: "False",
      reason: "UnknownScope",
      message: "a: one; b: two",
    });
    expect(status.conditions[1]).toMatchObject({ status: "False", reason: "NotAccepted" });
  });

  it("Programmed True only when every connected gateway serves it; Rejected names who NACKed", () => {
    const programmed = (count: number, rejections: string[] = []) =>
      computeStatus({
        result: accepted,
        programmed: { counts: { revision: "r2", programmed: count, gateways: 3 }, rejections },
        existing: undefined,
        nowIso: t0,
      }).conditions[1];
    expect(programmed(3)).toMatchObject({
      status: "True",
      reason: "Programmed",
      message: "revision r2 programmed on 3/3 gateways",
    });
    expect(programmed(2)).toMatchObject({
      status: "False",
      reason: "Pending",
      message: "revision r2 programmed on 2/3 gateways",
    });
    expect(programmed(2, ["gw-3: route table invalid"])).toMatchObject({
      status: "False",
      reason: "Rejected",
      message: "revision r2 programmed on 2/3 gateways; rejected by gw-3: route table invalid",
    });
  });

  it("keeps lastTransitionTime while a condition's status stays, changes it when the status flips", () => {
    const first = computeStatus({
      result: accepted,
      programmed: noGateways,
      existing: undefined,
      nowIso: t0,
    });
    // Same statuses, other reason/message (NoGateways → Pending): times stay.
    const second = computeStatus({
      result: accepted,
      programmed: { counts: { revision: "r1", programmed: 0, gateways: 1 }, rejections: [] },
      existing: first,
      nowIso: t1,
    });
    expect(second.conditions.map((c) => c.lastTransitionTime)).toEqual([t0, t0]);
    const third = computeStatus({
      result: accepted,
      programmed: { counts: { revision: "r1", programmed: 1, gateways: 1 }, rejections: [] },
      existing: second,
      nowIso: t1,
    });
    expect(third.conditions.map((c) => c.lastTransitionTime)).toEqual([t0, t1]);
  });

  it("keeps conditions of other types after its own", () => {
    const foreign = { type: "Ready", status: "True", reason: "X", message: "", lastTransitionTime: t0 };
    const status = computeStatus({
      result: accepted,
      programmed: noGateways,
      existing: { conditions: [foreign] },
      nowIso: t1,
    });
    expect(status.conditions.map((c) => c.type)).toEqual(["Accepted", "Programmed", "Ready"]);
  });

  it("keeps no more foreign conditions than the CRDs' list bound leaves room for", () => {
    const foreign = Array.from({ length: 9 }, (_, i) => ({
      type: `Other${i}`,
      status: "True",
      reason: "X",
      message: "",
      lastTransitionTime: t0,
    }));
    const status = computeStatus({
      result: accepted,
      programmed: noGateways,
      existing: { conditions: foreign },
      nowIso: t1,
    });
    expect(status.conditions).toHaveLength(MAX_STATUS_CONDITIONS);
    expect(status.conditions.map((c) => c.type).slice(0, 3)).toEqual(["Accepted", "Programmed", "Other0"]);
    // The bound is the one the CRDs declare for status.conditions.
    for (const file of readdirSync(crdDir).filter((name) => name.endsWith(".yaml"))) {
      const text = readFileSync(join(crdDir, file), "utf8");
      const conditions = /\n(\s+)conditions:\n(?:\1 .*\n)*?\1 {2}maxItems: (\d+)/.exec(text);
      expect(Number(conditions?.[2]), file).toBe(MAX_STATUS_CONDITIONS);
    }
  });

  it("an equal status is up to date (no write); a stale generation or fleet is not", () => {
    const status = computeStatus({
      result: accepted,
      programmed: noGateways,
      existing: undefined,
      nowIso: t0,
    });
    // As it comes back from the API server: JSON, keys in another order.
    const roundTripped: unknown = JSON.parse(
      JSON.stringify({ fleet: status.fleet, conditions: status.conditions, observedGeneration: 3 }),
    );
    expect(statusUpToDate(roundTripped, status)).toBe(true);
    const again = computeStatus({
      result: accepted,
      programmed: noGateways,
      existing: roundTripped,
      nowIso: t1,
    });
    expect(statusUpToDate(roundTripped, again)).toBe(true);
    expect(statusUpToDate({ ...(roundTripped as object), observedGeneration: 2 }, status)).toBe(false);
    expect(statusUpToDate(undefined, status)).toBe(false);
  });

  it("while the fleet view settles, keeps a Programmed condition of this generation and revision rather than lowering it", () => {
    const onAll: ProgrammedInput = { counts: { revision: "r1", programmed: 3, gateways: 3 }, rejections: [] };
    const written = computeStatus({ result: accepted, programmed: onAll, existing: undefined, nowIso: t0 });
    const next = (programmed: ProgrammedInput, options: { hold?: boolean; generation?: number } = {}) =>
      computeStatus({
        result: { ...accepted, generation: options.generation ?? 3 },
        programmed,
        existing: written,
        nowIso: t1,
        holdProgrammed: options.hold ?? true,
      });
    // Fewer gateways seen while settling: what was written stands, with its fleet counts.
    const held = next(noGateways);
    expect(held.conditions[1]).toEqual(written.conditions[1]);
    expect(held.fleet).toEqual(written.fleet);
    expect(next({ counts: { revision: "r1", programmed: 2, gateways: 2 }, rejections: [] }).fleet).toEqual(
      written.fleet,
    );
    // Not settling: the view is taken at its word.
    expect(next(noGateways, { hold: false }).conditions[1]).toMatchObject({ reason: "NoGateways" });
    // A rejection, another revision or another generation is news, held or not.
    expect(
      next({ counts: { revision: "r1", programmed: 2, gateways: 3 }, rejections: ["gw-3: bad"] })
        .conditions[1],
    ).toMatchObject({ reason: "Rejected" });
    expect(next({ counts: { revision: "r2", programmed: 0, gateways: 0 }, rejections: [] }).fleet).toEqual({
      revision: "r2",
      programmed: 0,
      gateways: 0,
    });
    expect(next(noGateways, { generation: 4 }).conditions[1]).toMatchObject({
      reason: "NoGateways",
      observedGeneration: 4,
    });
    // Not accepted any more: nothing to hold.
    expect(
      computeStatus({
        result: { accepted: false, reason: "UnknownScope", messages: ["x: y"], generation: 3 },
        programmed: noGateways,
        existing: written,
        nowIso: t1,
        holdProgrammed: true,
      }).conditions[1],
    ).toMatchObject({ reason: "NotAccepted" });
  });

  it("writes metav1.Time with second precision (what the API server gives back)", () => {
    expect(kubeTime(Date.UTC(2030, 0, 1, 12, 0, 0, 987))).toBe("2030-01-01T12:00:00Z");
  });
});

const policy = {
  apiVersion: "phantomgate.dev/v1alpha1",
  kind: "ScopePolicy",
  metadata: { name: "billing", namespace: "default", generation: 1 },
  spec: { domain: "billing", scopes: [{ name: "read" }, { name: "write", implies: ["read"] }] },
};
const route = (name: string, path: string, generation: number) => ({
  apiVersion: "phantomgate.dev/v1alpha1",
  kind: "ApiRoute",
  metadata: { name, namespace: "default", generation },
  spec: {
    scopePolicyRefs: [{ name: "billing" }],
    rules: [
      {
        matches: [{ path: { value: path } }],
        authentication: { mode: "none" },
        backendRefs: [{ url: "http://127.0.0.1:9000" }],
      },
    ],
  },
});
const compileAll = (...objects: unknown[]): CompileResult =>
  compile({ objects: objects.map((object) => ({ object })) });
const gateway = (
  name: string,
  revision: string | undefined,
  status: GatewayState["status"] = "ACK",
  connected = true,
): GatewayState => ({
  name,
  connected,
  revision,
  status,
  reason: status === "NACK" ? "bad snapshot" : undefined,
  lastSeenMs: 0,
});
const fleetOf = (revision: string, gateways: GatewayState[]): FleetView => ({
  revision,
  gateways,
  connected: gateways.filter((g) => g.connected).length,
  programmed: gateways.filter((g) => g.connected && g.status === "ACK").length,
});
const uid = () => "uid-1";

describe("revision ledger", () => {
  it("counts the connected gateways serving a revision that holds the object as it is now", () => {
    const ledger = new RevisionLedger();
    const first = compileAll(policy, route("a", "/a", 1), route("b", "/b", 1));
    ledger.record(first, uid);
    const r1 = first.snapshot.revision;
    const input = ledger.programmedInput(
      "ApiRoute",
      "default",
      "a",
      fleetOf(r1, [gateway("g1", r1), gateway("g2", undefined, "pending"), gateway("g3", r1, "ACK", false)]),
    );
    expect(input).toEqual({ counts: { revision: r1, programmed: 1, gateways: 2 }, rejections: [] });
  });

  it("a change to another route does not make this one pending again, and its revision stays the first one", () => {
    const ledger = new RevisionLedger();
    const first = compileAll(policy, route("a", "/a", 1), route("b", "/b", 1));
    ledger.record(first, uid);
    const second = compileAll(policy, route("a", "/a", 1), route("b", "/b2", 2));
    ledger.record(second, uid);
    const r1 = first.snapshot.revision;
    const r2 = second.snapshot.revision;
    expect(r2).not.toBe(r1);
    // g1 still serves r1, g2 already r2: both serve route a as it is now; only g2 serves route b.
    const fleet = fleetOf(r2, [gateway("g1", r1, "pending"), gateway("g2", r2)]);
    expect(ledger.programmedInput("ApiRoute", "default", "a", fleet).counts).toEqual({
      revision: r1,
      programmed: 2,
      gateways: 2,
    });
    expect(ledger.programmedInput("ApiRoute", "default", "b", fleet).counts).toEqual({
      revision: r2,
      programmed: 1,
      gateways: 2,
    });
  });

  it("reports the gateways that NACKed a revision holding the object", () => {
    const ledger = new RevisionLedger();
    const result = compileAll(policy, route("a", "/a", 1));
    ledger.record(result, uid);
    const r1 = result.snapshot.revision;
    const input = ledger.programmedInput(
      "ApiRoute",
      "default",
      "a",
      fleetOf(r1, [gateway("g1", r1), gateway("g2", "older", "NACK")]),
    );
    expect(input).toEqual({
      counts: { revision: r1, programmed: 1, gateways: 2 },
      rejections: ["g2: bad snapshot"],
    });
  });

  it("objects that are not accepted are served by no gateway", () => {
    const ledger = new RevisionLedger();
    const result = compileAll(route("orphan", "/o", 1));
    ledger.record(result, uid);
    expect(result.perObjectResults[0]?.accepted).toBe(false);
    const r1 = result.snapshot.revision;
    expect(
      ledger.programmedInput("ApiRoute", "default", "orphan", fleetOf(r1, [gateway("g1", r1)])).counts,
    ).toEqual({
      revision: r1,
      programmed: 0,
      gateways: 1,
    });
  });
});

describe("docs/status-reasons.md", () => {
  it("lists exactly the Programmed reasons, with their condition status", () => {
    const doc = readFileSync(new URL("../../docs/status-reasons.md", import.meta.url), "utf8");
    const section = doc.slice(doc.indexOf("## Programmed"));
    const rows = [...section.matchAll(/^\|\s*(True|False)\s*\|\s*`([A-Za-z]+)`\s*\|/gm)].map((m) => [
      m[2],
      m[1],
    ]);
    expect(rows.map(([reason]) => reason).sort()).toEqual([...programmedReasonSchema.options].sort());
    for (const [reason, status] of rows) {
      expect(programmedReasonDescriptions[programmedReasonSchema.parse(reason)].status).toBe(status);
    }
  });
});
