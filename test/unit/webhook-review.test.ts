// reviewAdmission: the webhook's verdicts are compile's verdicts on the world with the change applied.
import { describe, expect, it } from "vitest";
import type { SourceObject } from "../../src/compile/compile.ts";
import { InvalidAdmissionReviewError } from "../../src/operator/webhook/admission-review.ts";
import { reviewAdmission } from "../../src/operator/webhook/review-admission.ts";

const group = "phantomgate.dev";
const apiVersion = "phantomgate.dev/v1alpha1";

function scopePolicy(name: string, scopes: string[], extra: Record<string, unknown> = {}) {
  return {
    apiVersion,
    kind: "ScopePolicy",
    metadata: { name, namespace: "shop", creationTimestamp: "2025-01-01T00:00:00Z", ...extra },
    spec: { domain: name, scopes: scopes.map((scope) => ({ name: scope })) },
  };
}

function authServer(name: string, clientSecret: Record<string, unknown> = { value: "s3cret" }) {
  return {
    apiVersion,
    kind: "AuthServer",
    metadata: { name, namespace: "shop", creationTimestamp: "2025-01-01T00:00:00Z" },
    spec: { issuer: "https://as.example.com", clientAuthentication: { clientId: "gw", clientSecret } },
  };
}

interface RouteOptions {
  readonly path?: string;
  readonly methods?: string[];
  readonly scopes?: string[];
  readonly policies?: string[];
  readonly authServer?: string;
  readonly createdAt?: string;
}

function apiRoute(name: string, options: RouteOptions = {}) {
  return {
    apiVersion,
    kind: "ApiRoute",
    metadata: {
      name,
      namespace: "shop",
      ...(options.createdAt === undefined ? {} : { creationTimestamp: options.createdAt }),
    },
    spec: {
      hostnames: ["api.example.com"],
      scopePolicyRefs: (options.policies ?? ["billing"]).map((policy) => ({ name: policy })),
      authServerRef: { name: options.authServer ?? "as" },
      rules: [
        {
          matches: [{ path: { value: options.path ?? "/orders" }, methods: options.methods ?? ["GET"] }],
          authentication: { mode: "phantom" },
          requiredScopes: { allOf: options.scopes ?? ["read_invoice"] },
          backendRefs: [{ url: "http://orders.internal" }],
        },
      ],
    },
  };
}

type Operation = "CREATE" | "UPDATE" | "DELETE" | "CONNECT";

function admissionReview(operation: Operation, object: unknown, oldObject?: unknown, extra: object = {}) {
  const subject = (operation === "DELETE" ? oldObject : object) as {
    kind: string;
    metadata: { name: string };
  };
  return {
    apiVersion: "admission.k8s.io/v1",
    kind: "AdmissionReview",
    request: {
      uid: "705ab4f5-6393-11e8-b7cc-42010a800002",
      kind: { group, version: "v1alpha1", kind: subject.kind },
      resource: { group, version: "v1alpha1", resource: `${subject.kind.toLowerCase()}s` },
      operation,
      namespace: "shop",
      name: subject.metadata.name,
      object: operation === "DELETE" ? null : object,
      oldObject: oldObject ?? null,
      userInfo: { username: "alice" },
      dryRun: false,
      ...extra,
    },
  };
}

const stored = (...objects: unknown[]): (() => readonly SourceObject[]) => {
  const world = objects.map((object) => ({ object }));
  return () => world;
};

const baseWorld = [scopePolicy("billing", ["read_invoice", "write_invoice"]), authServer("as")];

describe("reviewAdmission: CREATE and UPDATE", () => {
  it("allows a route whose references and claims are fine, echoing the uid", () => {
    const answer = reviewAdmission(admissionReview("CREATE", apiRoute("orders")), stored(...baseWorld));
    expect(answer).toEqual({
      apiVersion: "admission.k8s.io/v1",
      kind: "AdmissionReview",
      response: { uid: "705ab4f5-6393-11e8-b7cc-42010a800002", allowed: true },
    });
  });

  it("denies a route claiming the host, path and method of an older route, with compile's message", () => {
    const older = apiRoute("orders", { createdAt: "2025-02-01T00:00:00Z" });
    // The API server stamps creationTimestamp before validating webhooks run; the same second and a name that
    // sorts first must still not let the incoming route win the claim.
    const incoming = apiRoute("a-orders", { createdAt: "2025-02-01T00:00:00Z", methods: ["GET", "POST"] });
    const { response } = reviewAdmission(admissionReview("CREATE", incoming), stored(...baseWorld, older));
    expect(response).toEqual({
      uid: "705ab4f5-6393-11e8-b7cc-42010a800002",
      allowed: false,
      status: {
        code: 403,
        reason: "Conflicted",
        message:
          "spec.rules[0].matches[0]: host api.example.com, PathPrefix /orders, GET is already claimed by the " +
          "older ApiRoute shop/orders (spec.rules[0].matches[0])",
      },
    });
  });

  it("denies a route that references a ScopePolicy that does not exist", () => {
    const { response } = reviewAdmission(
      admissionReview("CREATE", apiRoute("orders", { policies: ["billing", "nope"] })),
      stored(...baseWorld),
    );
    expect(response.allowed).toBe(false);
    expect(response.status).toEqual({
      code: 403,
      reason: "UnknownScopePolicy",
      message: "spec.scopePolicyRefs[1]: ScopePolicy shop/nope not found",
    });
  });

  it("denies a route that requires a scope its ScopePolicies do not define", () => {
    const { response } = reviewAdmission(
      admissionReview("CREATE", apiRoute("orders", { scopes: ["read_invoice", "delete_invoice"] })),
      stored(...baseWorld),
    );
    expect(response.status).toEqual({
      code: 403,
      reason: "UnknownScope",
      message:
        "spec.rules[0].requiredScopes.allOf[1]: scope 'delete_invoice' is not defined in ScopePolicy shop/billing",
    });
  });

  it("denies a route whose AuthServer does not exist, listing every problem under the first reason", () => {
    const { response } = reviewAdmission(
      admissionReview("CREATE", apiRoute("orders", { authServer: "missing", scopes: ["nope"] })),
      stored(...baseWorld),
    );
    expect(response.status).toEqual({
      code: 403,
      reason: "UnknownAuthServer",
      message:
        "spec.authServerRef: AuthServer shop/missing not found; " +
        "spec.rules[0].requiredScopes.allOf[0]: scope 'nope' is not defined in ScopePolicy shop/billing",
    });
  });

  it("denies single-object problems the CRD schema cannot express, with the field path", () => {
    const policy = scopePolicy("billing2", ["a"]);
    const broken = { ...policy, spec: { ...policy.spec, scopes: [{ name: "a", implies: ["b"] }] } };
    const { response } = reviewAdmission(admissionReview("CREATE", broken), stored(...baseWorld));
    expect(response.status).toEqual({
      code: 403,
      reason: "Invalid",
      message: "spec.scopes[0].implies[0]: implied scope 'b' is not defined in this policy",
    });
  });

  it("does not judge Secrets: an AuthServer whose Secret the store lacks, and its routes, are allowed", () => {
    const viaSecret = authServer("as", { secretRef: { name: "as-credentials", key: "client-secret" } });
    const world = stored(scopePolicy("billing", ["read_invoice"]));
    expect(reviewAdmission(admissionReview("CREATE", viaSecret), world).response.allowed).toBe(true);
    const withServer = stored(scopePolicy("billing", ["read_invoice"]), viaSecret);
    expect(reviewAdmission(admissionReview("CREATE", apiRoute("orders")), withServer).response.allowed).toBe(
      true,
    );
    // Even a private_key_jwt client, whose secret must be a JWK, is judged without the Secret's content.
    const jwtClient = {
      ...viaSecret,
      spec: {
        ...viaSecret.spec,
        clientAuthentication: { ...viaSecret.spec.clientAuthentication, method: "private_key_jwt" },
      },
    };
    expect(reviewAdmission(admissionReview("CREATE", jwtClient), world).response.allowed).toBe(true);
  });

  it("judges an UPDATE against the other objects, not against the stored copy of itself", () => {
    const route = apiRoute("orders", { createdAt: "2025-02-01T00:00:00Z" });
    const changed = apiRoute("orders", { createdAt: "2025-02-01T00:00:00Z", methods: ["GET", "PUT"] });
    const world = stored(...baseWorld, route);
    expect(reviewAdmission(admissionReview("UPDATE", changed, route), world).response.allowed).toBe(true);

    const broken = apiRoute("orders", { createdAt: "2025-02-01T00:00:00Z", scopes: ["nope"] });
    const { response } = reviewAdmission(admissionReview("UPDATE", broken, route), world);
    expect(response.status?.reason).toBe("UnknownScope");
  });

  it("allows an UPDATE that leaves spec alone, even of a rejected object (labels, finalizers, deletion)", () => {
    const bad = apiRoute("orders", { createdAt: "2025-02-01T00:00:00Z", policies: ["nope"] });
    const relabelled = { ...bad, metadata: { ...bad.metadata, labels: { team: "shop" }, finalizers: [] } };
    const { response } = reviewAdmission(
      admissionReview("UPDATE", relabelled, bad),
      stored(...baseWorld, bad),
    );
    expect(response).toEqual({ uid: "705ab4f5-6393-11e8-b7cc-42010a800002", allowed: true });
  });

  it("allows a change that breaks other objects, naming them in warnings", () => {
    const route = apiRoute("orders", { createdAt: "2025-02-01T00:00:00Z", scopes: ["write_invoice"] });
    const narrowed = scopePolicy("billing", ["read_invoice"]);
    const { response } = reviewAdmission(
      admissionReview("UPDATE", narrowed, baseWorld[0]),
      stored(...baseWorld, route),
    );
    expect(response.allowed).toBe(true);
    expect(response.warnings).toEqual([
      "ApiRoute shop/orders is rejected after this change (UnknownScope): spec.rules[0].requiredScopes.allOf[0]: " +
        "scope 'write_invoice' is not defined in ScopePolicy shop/billing",
    ]);
  });

  it("warns when updating an older route takes a claim from a newer, serving one", () => {
    const older = apiRoute("legacy", { createdAt: "2025-01-01T00:00:00Z", path: "/legacy" });
    const newer = apiRoute("orders", { createdAt: "2025-02-01T00:00:00Z" });
    const moved = apiRoute("legacy", { createdAt: "2025-01-01T00:00:00Z" });
    const { response } = reviewAdmission(
      admissionReview("UPDATE", moved, older),
      stored(...baseWorld, older, newer),
    );
    expect(response.allowed).toBe(true);
    expect(response.warnings).toEqual([
      "ApiRoute shop/orders is rejected after this change (Conflicted): spec.rules[0].matches[0]: host " +
        "api.example.com, PathPrefix /orders, GET is already claimed by the older ApiRoute shop/legacy " +
        "(spec.rules[0].matches[0])",
    ]);
  });

  it("judges the world as it is now when the store changes its array in place", () => {
    const alreadyBad = apiRoute("bad", {
      createdAt: "2025-02-01T00:00:00Z",
      policies: ["nope"],
      path: "/bad",
    });
    const route = apiRoute("orders", { createdAt: "2025-02-01T00:00:00Z", scopes: ["write_invoice"] });
    const world: SourceObject[] = [...baseWorld, alreadyBad, route].map((object) => ({ object }));
    const narrowed = scopePolicy("billing", ["read_invoice"]);
    const narrow = () => reviewAdmission(admissionReview("UPDATE", narrowed, baseWorld[0]), () => world);
    expect(narrow().response.warnings).toHaveLength(1);
    expect(narrow().response.warnings).toHaveLength(1);
    // The route stops using write_invoice: narrowing the policy breaks nothing any more.
    world[3] = {
      object: apiRoute("orders", { createdAt: "2025-02-01T00:00:00Z", scopes: ["read_invoice"] }),
    };
    expect(narrow().response.warnings).toBeUndefined();
    // And the other way round: the stored world itself changes (policy narrowed), a new route needs the scope.
    world[0] = { object: narrowed };
    const { response } = reviewAdmission(
      admissionReview("CREATE", apiRoute("w", { path: "/w", scopes: ["write_invoice"] })),
      () => world,
    );
    expect(response.status?.reason).toBe("UnknownScope");
  });

  it("does not warn about objects that were rejected before the change", () => {
    const alreadyBad = apiRoute("orders", { createdAt: "2025-02-01T00:00:00Z", policies: ["nope"] });
    const { response } = reviewAdmission(
      admissionReview("CREATE", scopePolicy("streaming", ["video"])),
      stored(...baseWorld, alreadyBad),
    );
    expect(response).toEqual({ uid: "705ab4f5-6393-11e8-b7cc-42010a800002", allowed: true });
  });

  it("takes the namespace from the request when the object omits it", () => {
    const route = apiRoute("orders", { policies: ["nope"] });
    const { metadata } = route;
    const withoutNamespace = { ...route, metadata: { name: metadata.name } };
    const { response } = reviewAdmission(admissionReview("CREATE", withoutNamespace), stored(...baseWorld));
    expect(response.status?.message).toBe("spec.scopePolicyRefs[0]: ScopePolicy shop/nope not found");
  });
});

describe("reviewAdmission: DELETE", () => {
  it("allows deleting a ScopePolicy that routes still use, with a warning per broken route", () => {
    const routes = [
      apiRoute("orders", { createdAt: "2025-02-01T00:00:00Z" }),
      apiRoute("invoices", { createdAt: "2025-02-01T00:00:00Z", path: "/invoices" }),
    ];
    const { response } = reviewAdmission(
      admissionReview("DELETE", null, baseWorld[0]),
      stored(...baseWorld, ...routes),
    );
    expect(response.allowed).toBe(true);
    expect(response.warnings).toEqual([
      "ApiRoute shop/invoices is rejected after this change (UnknownScopePolicy): spec.scopePolicyRefs[0]: " +
        "ScopePolicy shop/billing not found",
      "ApiRoute shop/orders is rejected after this change (UnknownScopePolicy): spec.scopePolicyRefs[0]: " +
        "ScopePolicy shop/billing not found",
    ]);
  });

  it("allows deleting an AuthServer that routes use, with a warning", () => {
    const route = apiRoute("orders", { createdAt: "2025-02-01T00:00:00Z" });
    const { response } = reviewAdmission(
      admissionReview("DELETE", null, baseWorld[1]),
      stored(...baseWorld, route),
    );
    expect(response.warnings).toEqual([
      "ApiRoute shop/orders is rejected after this change (UnknownAuthServer): spec.authServerRef: AuthServer " +
        "shop/as not found",
    ]);
  });

  it("allows deleting an unused object without warnings, also when the request carries no oldObject", () => {
    const unused = scopePolicy("streaming", ["video"]);
    const world = stored(...baseWorld, unused);
    expect(reviewAdmission(admissionReview("DELETE", null, unused), world).response).toEqual({
      uid: "705ab4f5-6393-11e8-b7cc-42010a800002",
      allowed: true,
    });
    const review = admissionReview("DELETE", null, baseWorld[0]);
    review.request.oldObject = null;
    const route = apiRoute("orders", { createdAt: "2025-02-01T00:00:00Z" });
    const answer = reviewAdmission(review, stored(...baseWorld, route));
    expect(answer.response.warnings).toHaveLength(1);
  });

  it("caps warnings so kubectl output and the API server's limits stay sane", () => {
    const routes = Array.from({ length: 13 }, (_, i) =>
      apiRoute(`r${String(i).padStart(2, "0")}`, { createdAt: "2025-02-01T00:00:00Z", path: `/p${i}` }),
    );
    const { response } = reviewAdmission(
      admissionReview("DELETE", null, baseWorld[0]),
      stored(...baseWorld, ...routes),
    );
    expect(response.warnings).toHaveLength(11);
    expect(response.warnings?.at(-1)).toBe("… and 3 more objects are rejected after this change");
  });
});

describe("reviewAdmission: what it does not judge, and bad input", () => {
  it("allows Secrets, other groups, status writes and CONNECT without looking", () => {
    const world = stored(...baseWorld);
    const bad = apiRoute("orders", { policies: ["nope"] });
    const secret = { apiVersion: "v1", kind: "Secret", metadata: { name: "x", namespace: "shop" } };
    const secretReview = admissionReview("CREATE", secret);
    secretReview.request.kind = { group: "", version: "v1", kind: "Secret" };
    expect(reviewAdmission(secretReview, world).response.allowed).toBe(true);
    expect(
      reviewAdmission(admissionReview("UPDATE", bad, bad, { subResource: "status" }), world).response.allowed,
    ).toBe(true);
    expect(reviewAdmission(admissionReview("CONNECT", bad), world).response.allowed).toBe(true);
  });

  it.each([
    ["not an object", "hello"],
    ["null", null],
    ["another kind", { apiVersion: "admission.k8s.io/v1", kind: "Status", request: {} }],
    [
      "the v1beta1 version",
      { ...admissionReview("CREATE", apiRoute("x")), apiVersion: "admission.k8s.io/v1beta1" },
    ],
    [
      "a request without uid",
      { ...admissionReview("CREATE", apiRoute("x")), request: { operation: "CREATE" } },
    ],
    [
      "a response instead of a request",
      { apiVersion: "admission.k8s.io/v1", kind: "AdmissionReview", response: {} },
    ],
  ])("throws InvalidAdmissionReviewError for %s", (_label, review) => {
    expect(() => reviewAdmission(review, stored())).toThrow(InvalidAdmissionReviewError);
  });

  it("throws for a CREATE without an object", () => {
    const review = admissionReview("CREATE", apiRoute("x"));
    review.request.object = null;
    const error = (() => {
      try {
        reviewAdmission(review, stored());
      } catch (caught) {
        return caught;
      }
      return undefined;
    })();
    expect(error).toBeInstanceOf(InvalidAdmissionReviewError);
    expect((error as InvalidAdmissionReviewError).code).toBe("PG_WEBHOOK_INVALID_REVIEW");
    expect((error as Error).message).toBe("request.object must be an object for this operation");
  });
});
