// Issuing and checking the webhook's serving certificate (real openssl), and the webhook configuration's shape.
import { X509Certificate } from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  findCertificateProblem,
  issueServingCertificate,
  splitPemCertificates,
} from "../../src/operator/webhook/certificate.ts";
import { buildValidatingWebhookConfiguration } from "../../src/operator/webhook/webhook-configuration.ts";

const dayMs = 24 * 60 * 60 * 1000;
const names = {
  dnsNames: ["phantomgate-webhook", "phantomgate-webhook.pg-system.svc"],
  ipAddresses: ["127.0.0.1", "::1"],
};

describe("serving certificates", () => {
  it("issues a serving certificate for the names, signed by a fresh CA, valid for the days asked", async () => {
    const issued = await issueServingCertificate({ ...names, validityDays: 30 });
    const leaf = new X509Certificate(issued.cert);
    const ca = new X509Certificate(issued.ca);
    expect(ca.ca).toBe(true);
    expect(leaf.ca).toBe(false);
    expect(leaf.checkIssued(ca) && leaf.verify(ca.publicKey)).toBe(true);
    expect(leaf.subjectAltName).toBe(
      "DNS:phantomgate-webhook, DNS:phantomgate-webhook.pg-system.svc, IP Address:127.0.0.1, " +
        "IP Address:0:0:0:0:0:0:0:1",
    );
    expect(leaf.keyUsage).toEqual(["1.3.6.1.5.5.7.3.1"]); // serverAuth
    const lifetimeDays = (leaf.validToDate.getTime() - leaf.validFromDate.getTime()) / dayMs;
    expect(lifetimeDays).toBeCloseTo(30, 3);
    expect(issued.key).toContain("PRIVATE KEY");

    const certificate = { cert: issued.cert, key: issued.key, caBundle: issued.ca };
    expect(findCertificateProblem(certificate, { ...names, validUntil: new Date() })).toBeUndefined();
    expect(
      findCertificateProblem(certificate, { ...names, validUntil: new Date(Date.now() + 31 * dayMs) }),
    ).toMatch(/within the renewal window/);
    expect(
      findCertificateProblem(certificate, {
        dnsNames: ["other.pg-system.svc"],
        ipAddresses: ["::1"],
        validUntil: new Date(),
      }),
    ).toBe("the certificate does not cover other.pg-system.svc");

    const another = await issueServingCertificate({ ...names, validityDays: 30 });
    expect(
      findCertificateProblem({ ...certificate, key: another.key }, { ...names, validUntil: new Date() }),
    ).toBe("tls.key does not match tls.crt");
    expect(
      findCertificateProblem({ ...certificate, caBundle: another.ca }, { ...names, validUntil: new Date() }),
    ).toBe("no CA in ca.crt verifies tls.crt");
    // A bundle with the new and the previous CA verifies certificates of both.
    const bundle = another.ca + issued.ca;
    expect(splitPemCertificates(bundle)).toHaveLength(2);
    expect(
      findCertificateProblem({ ...certificate, caBundle: bundle }, { ...names, validUntil: new Date() }),
    ).toBe(undefined);
  });

  it("refuses names that are not DNS names or IPs (nothing reaches the openssl config unchecked)", async () => {
    await expect(
      issueServingCertificate({ dnsNames: ["a,DNS:evil.example"], validityDays: 1 }),
    ).rejects.toThrow(/not a DNS name/);
    await expect(
      issueServingCertificate({ dnsNames: ["ok"], ipAddresses: ["127.0.0.1\nfoo"], validityDays: 1 }),
    ).rejects.toThrow(/not an IP address/);
    await expect(issueServingCertificate({ dnsNames: ["ok"], validityDays: 0.5 })).rejects.toThrow(
      /whole number/,
    );
  });
});

describe("buildValidatingWebhookConfiguration", () => {
  it("registers creates and updates with the chosen failurePolicy, and deletions with Ignore", () => {
    const configuration = buildValidatingWebhookConfiguration({
      name: "phantomgate",
      failurePolicy: "Fail",
      service: { namespace: "pg-system", name: "phantomgate-webhook", port: 443, path: "/validate" },
      caBundle: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
      namespaces: ["shop"],
    });
    const clientConfig = {
      service: { namespace: "pg-system", name: "phantomgate-webhook", port: 443, path: "/validate" },
      caBundle: Buffer.from("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").toString(
        "base64",
      ),
    };
    const common = {
      clientConfig,
      admissionReviewVersions: ["v1"],
      sideEffects: "None",
      matchPolicy: "Equivalent",
      timeoutSeconds: 10,
      namespaceSelector: {
        matchExpressions: [{ key: "kubernetes.io/metadata.name", operator: "In", values: ["shop"] }],
      },
    };
    expect(configuration).toEqual({
      apiVersion: "admissionregistration.k8s.io/v1",
      kind: "ValidatingWebhookConfiguration",
      metadata: {
        name: "phantomgate",
        labels: {
          "app.kubernetes.io/name": "phantomgate",
          "app.kubernetes.io/component": "admission-webhook",
        },
      },
      webhooks: [
        {
          name: "validate.phantomgate.dev",
          ...common,
          failurePolicy: "Fail",
          rules: [
            {
              apiGroups: ["phantomgate.dev"],
              apiVersions: ["v1alpha1"],
              operations: ["CREATE", "UPDATE"],
              resources: ["apiroutes", "scopepolicies", "authservers"],
              scope: "Namespaced",
            },
          ],
        },
        {
          name: "deletions.phantomgate.dev",
          ...common,
          failurePolicy: "Ignore",
          rules: [
            {
              apiGroups: ["phantomgate.dev"],
              apiVersions: ["v1alpha1"],
              operations: ["DELETE"],
              resources: ["scopepolicies", "authservers"],
              scope: "Namespaced",
            },
          ],
        },
      ],
    });
  });

  it("takes a URL instead of a Service, leaves an unknown caBundle out, and rejects both or neither", () => {
    const configuration = buildValidatingWebhookConfiguration({
      name: "x",
      failurePolicy: "Ignore",
      url: "https://127.0.0.1:9443/validate",
      caBundle: "",
    }) as { webhooks: { clientConfig: unknown; namespaceSelector: unknown; failurePolicy: string }[] };
    expect(configuration.webhooks[0]?.clientConfig).toEqual({ url: "https://127.0.0.1:9443/validate" });
    expect(configuration.webhooks[0]?.namespaceSelector).toEqual({});
    expect(configuration.webhooks[0]?.failurePolicy).toBe("Ignore");
    expect(() =>
      buildValidatingWebhookConfiguration({ name: "x", failurePolicy: "Fail", caBundle: "" }),
    ).toThrow(/exactly one of service and url/);
  });
});
