// The operator's RBAC rules: what they contain, how they render, and docs/operator.md in step.
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";
import { describe, expect, it } from "vitest";
import {
  operatorPermissions,
  renderRbacObjects,
  renderRbacYaml,
  type PermissionOptions,
} from "../../src/operator/permissions.ts";

const options: PermissionOptions = {
  leaseName: "phantomgate-operator",
  webhook: true,
  webhookCertificate: "self",
  webhookConfigurationName: "phantomgate",
  webhookSecretName: "phantomgate-webhook-tls",
};
const doc = readFileSync(new URL("../../docs/operator.md", import.meta.url), "utf8");

describe("operator permissions", () => {
  it("are read-only on specs: no get/create/update/delete of custom resources, only patch of their status", () => {
    const rules = operatorPermissions(options).map((p) => p.rule);
    const crRules = rules.filter((rule) => rule.apiGroups.includes("phantomgate.dev"));
    expect(crRules).toEqual([
      {
        apiGroups: ["phantomgate.dev"],
        resources: ["apiroutes", "scopepolicies", "authservers"],
        verbs: ["list", "watch"],
      },
      {
        apiGroups: ["phantomgate.dev"],
        resources: ["apiroutes/status", "scopepolicies/status", "authservers/status"],
        verbs: ["get", "patch"],
      },
    ]);
  });

  it("limit the webhook's Secret and configuration by name, and drop them without webhook or TLS", () => {
    const named = operatorPermissions(options).filter((p) => p.rule.resourceNames !== undefined);
    expect(named.map((p) => [p.rule.resources, p.rule.verbs, p.rule.resourceNames])).toEqual([
      [["secrets"], ["get", "update"], ["phantomgate-webhook-tls"]],
      [["validatingwebhookconfigurations"], ["get", "patch"], ["phantomgate"]],
    ]);
    const none = operatorPermissions({ ...options, webhook: false });
    expect(none.some((p) => p.rule.resources.includes("validatingwebhookconfigurations"))).toBe(false);
    expect(none.filter((p) => p.rule.resources.includes("secrets")).map((p) => p.rule.verbs)).toEqual([
      ["list", "watch"],
    ]);
    const tlsOnly = operatorPermissions({ ...options, webhook: false, snapshotTls: true });
    expect(tlsOnly.filter((p) => p.rule.resources.includes("secrets"))).toHaveLength(3);
    // The certificate serves the snapshot stream only: there is no webhook configuration to keep.
    expect(tlsOnly.some((p) => p.rule.resources.includes("validatingwebhookconfigurations"))).toBe(false);
    const fromSecret = operatorPermissions({ ...options, webhookCertificate: "secret" });
    expect(
      fromSecret
        .filter((p) => p.scope === "own" && p.rule.resources.includes("secrets"))
        .map((p) => p.rule.verbs),
    ).toEqual([["get"]]);
  });

  it("render a ClusterRole with the watched rules when all namespaces are watched", () => {
    const objects = renderRbacObjects({
      ...options,
      name: "pg",
      serviceAccount: { namespace: "pg-system", name: "op" },
      namespaces: [],
    });
    expect(
      objects.map((o) => `${String(o.kind)} ${(o.metadata as { namespace?: string }).namespace ?? ""}`),
    ).toEqual(["ClusterRole ", "ClusterRoleBinding ", "Role pg-system", "RoleBinding pg-system"]);
    const clusterRole = objects[0] as { rules: { resources: string[] }[] };
    expect(clusterRole.rules.flatMap((r) => r.resources)).toContain("apiroutes");
  });

  it("render a Role per watched namespace when namespaces are listed", () => {
    const yaml = renderRbacYaml({
      ...options,
      name: "pg",
      serviceAccount: { namespace: "pg-system", name: "op" },
      namespaces: ["a", "b"],
    });
    const objects = parseAllDocuments(yaml).map(
      (d) =>
        d.toJS() as {
          kind: string;
          metadata: { name: string; namespace?: string };
          rules?: { resources: string[] }[];
        },
    );
    expect(objects.map((o) => `${o.kind} ${o.metadata.namespace ?? ""}/${o.metadata.name}`)).toEqual([
      "ClusterRole /pg",
      "ClusterRoleBinding /pg",
      "Role pg-system/pg",
      "RoleBinding pg-system/pg",
      "Role a/pg-watch",
      "RoleBinding a/pg-watch",
      "Role b/pg-watch",
      "RoleBinding b/pg-watch",
    ]);
    expect(objects[0]?.rules?.flatMap((r) => r.resources)).not.toContain("apiroutes");
  });

  it("are all listed in docs/operator.md", () => {
    const all = [
      ...operatorPermissions({ ...options }),
      ...operatorPermissions({ ...options, webhookCertificate: "secret" }),
    ];
    // Table rows as cells, whatever the padding.
    const rows = doc
      .split("\n")
      .map((line) => line.split("|").map((cell) => cell.trim()))
      .filter((cells) => ["watched", "own", "cluster"].includes(cells[1] ?? ""));
    const list = (items: readonly string[]) => items.map((item) => `\`${item}\``).join(", ");
    for (const { scope, rule } of all) {
      const group = rule.apiGroups[0] === "" ? '`""` (core)' : `\`${rule.apiGroups[0] ?? ""}\``;
      const row = rows.find(
        (cells) =>
          cells[1] === scope &&
          cells[2] === group &&
          cells[3] === list(rule.resources) &&
          cells[4] === list(rule.verbs),
      );
      expect(row, `${scope} ${rule.resources.join(",")} ${rule.verbs.join(",")}`).toBeDefined();
    }
    expect(rows).toHaveLength(new Set(all.map((p) => JSON.stringify(p.rule))).size);
  });
});
