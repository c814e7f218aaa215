// Unit tests for the router: host, path and method precedence, method-not-allowed, and a 10,000-route index.
import { describe, expect, it } from "vitest";
import type { CompiledRoute } from "../../src/snapshot/snapshot.ts";
import { createRouter, type MatchResult, type Router } from "../../src/gateway/route/router.ts";

interface RouteSpec {
  id: string;
  hostnames?: string[];
  type?: "Exact" | "PathPrefix";
  path?: string;
  methods?: string[];
}

function route(spec: RouteSpec): CompiledRoute {
  return {
    id: spec.id,
    source: { namespace: "test", name: spec.id, rule: 0 },
    hostnames: spec.hostnames ?? [],
    path: { type: spec.type ?? "PathPrefix", value: spec.path ?? "/" },
    methods: spec.methods ?? [],
    auth: { mode: "none", upstreamScopes: [], forwardClaims: [], mintTtlSeconds: 60 },
    requiredScopes: { allOf: [], anyOf: [] },
    backends: [{ origin: "http://127.0.0.1:1", weight: 1 }],
    timeouts: { requestMs: 1000 },
    limits: { maxBodyBytes: 1024 },
  };
}

/** The matched route's id, or the result kind (with the Allow list for 405). */
function outcome(result: MatchResult): string {
  switch (result.kind) {
    case "matched":
      return result.route.id;
    case "method-not-allowed":
      return `405 ${result.allow.join(",")}`;
    case "not-found":
      return "404";
  }
}

function matchId(router: Router, host: string, path: string, method = "GET"): string {
  return outcome(router.match(host, path, method));
}

describe("createRouter: paths", () => {
  const router = createRouter([
    route({ id: "invoices", path: "/invoices" }),
    route({ id: "invoices-exact", type: "Exact", path: "/invoices/summary" }),
    route({ id: "invoices-deep", path: "/invoices/archive" }),
    route({ id: "health", type: "Exact", path: "/healthz" }),
  ]);

  it.each([
    ["/invoices", "invoices"],
    ["/invoices/", "invoices"],
    ["/invoices/1", "invoices"],
    ["/invoices/1/lines", "invoices"],
    ["/invoicesX", "404"],
    ["/invoice", "404"],
    ["/invoices/summary", "invoices-exact"],
    ["/invoices/summary/", "invoices"],
    ["/invoices/summary/x", "invoices"],
    ["/invoices/archive", "invoices-deep"],
    ["/invoices/archive/2024", "invoices-deep"],
    ["/invoices/archived", "invoices"],
    ["/healthz", "health"],
    ["/healthz/", "404"],
    ["/healthz/x", "404"],
    ["/", "404"],
  ])("%s → %s", (path, expected) => {
    expect(matchId(router, "any.example", path)).toBe(expected);
  });

  it("a '/' prefix matches every path, and loses to any longer prefix", () => {
    const withRoot = createRouter([route({ id: "root", path: "/" }), route({ id: "api", path: "/api" })]);
    expect(matchId(withRoot, "h", "/")).toBe("root");
    expect(matchId(withRoot, "h", "/anything/at/all")).toBe("root");
    expect(matchId(withRoot, "h", "/api/v1")).toBe("api");
    expect(matchId(withRoot, "h", "/apix")).toBe("root");
  });

  it("Exact beats PathPrefix on the same value", () => {
    const r = createRouter([
      route({ id: "prefix", path: "/a" }),
      route({ id: "exact", type: "Exact", path: "/a" }),
    ]);
    expect(matchId(r, "h", "/a")).toBe("exact");
    expect(matchId(r, "h", "/a/b")).toBe("prefix");
  });

  it("treats a trailing slash on a configured prefix as insignificant", () => {
    const r = createRouter([route({ id: "slash", path: "/docs/" })]);
    expect(matchId(r, "h", "/docs")).toBe("slash");
    expect(matchId(r, "h", "/docs/intro")).toBe("slash");
    expect(matchId(r, "h", "/docsx")).toBe("404");
  });

  it("matches an Exact path with a trailing slash only with it, and one without only without", () => {
    const r = createRouter([
      route({ id: "admin-slash", type: "Exact", path: "/admin/" }),
      route({ id: "status", type: "Exact", path: "/status" }),
      route({ id: "rest", path: "/" }),
    ]);
    expect(matchId(r, "h", "/admin/")).toBe("admin-slash");
    expect(matchId(r, "h", "/admin")).toBe("rest");
    expect(matchId(r, "h", "/status")).toBe("status");
    expect(matchId(r, "h", "/status/")).toBe("rest");
  });

  it("compares paths case-sensitively", () => {
    const r = createRouter([route({ id: "admin", path: "/admin" })]);
    expect(matchId(r, "h", "/admin")).toBe("admin");
    expect(matchId(r, "h", "/ADMIN")).toBe("404");
    expect(matchId(r, "h", "/Admin/x")).toBe("404");
  });

  it("returns not-found for an empty route table", () => {
    expect(createRouter([]).match("h", "/", "GET")).toEqual({ kind: "not-found" });
  });
});

describe("createRouter: hosts", () => {
  const router = createRouter([
    route({ id: "any", path: "/" }),
    route({ id: "wild-short", hostnames: ["*.example.com"], path: "/" }),
    route({ id: "wild-long", hostnames: ["*.api.example.com"], path: "/" }),
    route({ id: "exact", hostnames: ["api.example.com"], path: "/" }),
    route({ id: "apex", hostnames: ["example.com"], path: "/" }),
  ]);

  it.each([
    ["api.example.com", "exact"],
    ["API.Example.COM", "exact"],
    ["api.example.com:8443", "exact"],
    ["api.example.com.", "exact"],
    ["v1.api.example.com", "wild-long"],
    ["a.b.api.example.com", "wild-long"],
    ["a.example.com", "wild-short"],
    ["a.b.example.com", "wild-short"],
    ["example.com", "apex"],
    ["example.com:80", "apex"],
    ["other.test", "any"],
    ["", "any"],
    ["[::1]:8080", "any"],
    ["notexample.com", "any"],
    [".example.com", "any"],
  ])("%j → %s", (host, expected) => {
    expect(matchId(router, host, "/x")).toBe(expected);
  });

  it("a wildcard does not match its own apex", () => {
    const r = createRouter([route({ id: "wild", hostnames: ["*.example.com"] })]);
    expect(matchId(r, "example.com", "/")).toBe("404");
    expect(matchId(r, "a.example.com", "/")).toBe("wild");
  });

  it("matches IPv6 literals with and without a port", () => {
    const r = createRouter([route({ id: "v6", hostnames: ["[::1]"] })]);
    expect(matchId(r, "[::1]:8080", "/")).toBe("v6");
    expect(matchId(r, "[::1]", "/")).toBe("v6");
    expect(matchId(r, "[::2]:8080", "/")).toBe("404");
  });

  it("lower-cases configured hostnames", () => {
    const r = createRouter([route({ id: "upper", hostnames: ["API.Example.com"] })]);
    expect(matchId(r, "api.example.com", "/")).toBe("upper");
  });

  it("host specificity outranks path specificity, and falls back when the specific host has no such path", () => {
    const r = createRouter([
      route({ id: "any-exact", type: "Exact", path: "/a/b" }),
      route({ id: "host-root", hostnames: ["h.test"], path: "/a" }),
      route({ id: "wild-deep", hostnames: ["*.test"], path: "/z/deep" }),
    ]);
    expect(matchId(r, "h.test", "/a/b")).toBe("host-root");
    expect(matchId(r, "h.test", "/z/deep/1")).toBe("wild-deep");
    expect(matchId(r, "other.test", "/a/b")).toBe("any-exact");
    expect(matchId(r, "h.test", "/q")).toBe("404");
  });

  it("a route listed under several hostnames matches each of them", () => {
    const r = createRouter([route({ id: "multi", hostnames: ["a.test", "*.b.test", "a.test"] })]);
    expect(matchId(r, "a.test", "/")).toBe("multi");
    expect(matchId(r, "x.b.test", "/")).toBe("multi");
    expect(matchId(r, "c.test", "/")).toBe("404");
  });
});

describe("createRouter: methods", () => {
  const router = createRouter([
    route({ id: "read", path: "/invoices", methods: ["GET"] }),
    route({ id: "write", path: "/invoices", methods: ["POST", "PUT"] }),
    route({ id: "delete-one", type: "Exact", path: "/invoices/1", methods: ["DELETE"] }),
  ]);

  it.each([
    ["GET", "/invoices", "read"],
    ["POST", "/invoices", "write"],
    ["PUT", "/invoices/7", "write"],
    ["DELETE", "/invoices/1", "delete-one"],
    ["GET", "/invoices/1", "read"],
    ["DELETE", "/invoices/2", "405 GET,HEAD,POST,PUT"],
    ["PATCH", "/invoices/1", "405 DELETE,GET,HEAD,POST,PUT"],
    ["get", "/invoices", "405 GET,HEAD,POST,PUT"],
    ["PATCH", "/other", "404"],
  ])("%s %s → %s", (method, path, expected) => {
    expect(matchId(router, "h", path, method)).toBe(expected);
  });

  it("serves HEAD from a route that allows GET", () => {
    expect(matchId(router, "h", "/invoices", "HEAD")).toBe("read");
  });

  it("prefers an explicit HEAD route, then HEAD via GET, then an any-method route", () => {
    const r = createRouter([
      route({ id: "any", path: "/x" }),
      route({ id: "get", path: "/x", methods: ["GET"] }),
      route({ id: "head", path: "/x", methods: ["HEAD"] }),
    ]);
    expect(matchId(r, "h", "/x", "HEAD")).toBe("head");
    const withoutHead = createRouter([
      route({ id: "any", path: "/x" }),
      route({ id: "get", path: "/x", methods: ["GET"] }),
    ]);
    expect(matchId(withoutHead, "h", "/x", "HEAD")).toBe("get");
    expect(matchId(withoutHead, "h", "/x", "DELETE")).toBe("any");
  });

  it("HEAD on a GET-only protected path does not fall through to a less specific public route", () => {
    const r = createRouter([
      route({ id: "public", path: "/" }),
      route({ id: "protected", path: "/admin", methods: ["GET"] }),
    ]);
    expect(matchId(r, "h", "/admin", "HEAD")).toBe("protected");
    expect(matchId(r, "h", "/admin", "POST")).toBe("public");
  });

  it("routes with a method list beat any-method routes on the same host and path", () => {
    const r = createRouter([
      route({ id: "any", path: "/x" }),
      route({ id: "listed", path: "/x", methods: ["GET"] }),
    ]);
    expect(matchId(r, "h", "/x", "GET")).toBe("listed");
    expect(matchId(r, "h", "/x", "POST")).toBe("any");
  });

  it("falls through to a less specific route that accepts the method", () => {
    const r = createRouter([
      route({ id: "exact-get", hostnames: ["h.test"], type: "Exact", path: "/x", methods: ["GET"] }),
      route({ id: "prefix-post", hostnames: ["h.test"], path: "/x", methods: ["POST"] }),
      route({ id: "wild-put", hostnames: ["*.test"], path: "/", methods: ["PUT"] }),
    ]);
    expect(matchId(r, "h.test", "/x", "GET")).toBe("exact-get");
    expect(matchId(r, "h.test", "/x", "POST")).toBe("prefix-post");
    expect(matchId(r, "h.test", "/x", "PUT")).toBe("wild-put");
    expect(matchId(r, "h.test", "/x", "DELETE")).toBe("405 GET,HEAD,POST,PUT");
    expect(matchId(r, "h.test", "/y", "DELETE")).toBe("405 PUT");
  });

  it("lists HEAD in Allow only when GET is allowed", () => {
    const r = createRouter([route({ id: "post", path: "/x", methods: ["POST"] })]);
    expect(r.match("h", "/x", "GET")).toEqual({ kind: "method-not-allowed", allow: ["POST"] });
  });

  it("returns a fresh Allow list each time", () => {
    const first = router.match("h", "/invoices", "PATCH");
    if (first.kind !== "method-not-allowed") throw new Error("expected 405");
    first.allow.push("TRACE");
    expect(outcome(router.match("h", "/invoices", "PATCH"))).toBe("405 GET,HEAD,POST,PUT");
  });

  it("returns the same result object for repeated hits (no per-request allocation)", () => {
    expect(router.match("h", "/invoices/9", "GET")).toBe(router.match("H:80", "/invoices/8", "GET"));
  });

  it("keeps snapshot order among equally specific routes", () => {
    const r = createRouter([route({ id: "first", path: "/x" }), route({ id: "second", path: "/x" })]);
    expect(matchId(r, "h", "/x/y")).toBe("first");
  });
});

describe("createRouter: 10,000 routes", () => {
  const tenants = 100;
  const routes: CompiledRoute[] = [];
  for (let t = 0; t < tenants; t++) {
    for (let r = 0; r < 25; r++) {
      routes.push(route({ id: `t${t}-p${r}`, hostnames: [`t${t}.example.com`], path: `/svc${r}` }));
      routes.push(
        route({
          id: `t${t}-e${r}`,
          hostnames: [`t${t}.example.com`],
          type: "Exact",
          path: `/svc${r}/status`,
          methods: ["GET"],
        }),
      );
      routes.push(route({ id: `w${t}-p${r}`, hostnames: [`*.t${t}.example.com`], path: `/svc${r}/v1` }));
      routes.push(route({ id: `any-${t}-${r}`, path: `/shared/${t}/${r}`, methods: ["POST"] }));
    }
  }
  const router = createRouter(routes);

  it("builds an index over all of them", () => {
    expect(routes).toHaveLength(10_000);
  });

  it("matches every route through the index", () => {
    for (let t = 0; t < tenants; t++) {
      for (let r = 0; r < 25; r++) {
        expect(matchId(router, `t${t}.example.com`, `/svc${r}/items/1`)).toBe(`t${t}-p${r}`);
        expect(matchId(router, `T${t}.Example.com:443`, `/svc${r}/status`)).toBe(`t${t}-e${r}`);
        expect(matchId(router, `t${t}.example.com`, `/svc${r}/status`, "POST")).toBe(`t${t}-p${r}`);
        expect(matchId(router, `x.t${t}.example.com`, `/svc${r}/v1/a`)).toBe(`w${t}-p${r}`);
        expect(matchId(router, `x.t${t}.example.com`, `/svc${r}/v2`)).toBe("404");
        expect(matchId(router, "anything", `/shared/${t}/${r}/x`, "POST")).toBe(`any-${t}-${r}`);
        expect(matchId(router, "anything", `/shared/${t}/${r}`, "GET")).toBe("405 POST");
      }
    }
  });

  it("agrees with a linear scan over the specificity order", () => {
    // Reference: score every route by hand and take the best; slow but obviously right.
    const specificity = (
      candidate: CompiledRoute,
      host: string,
      path: string,
      method: string,
    ): number[] | undefined => {
      let hostScore = -1;
      if (candidate.hostnames.length === 0) hostScore = 0;
      for (const h of candidate.hostnames) {
        if (h === host) hostScore = Math.max(hostScore, 100_000);
        else if (h.startsWith("*.") && host.endsWith(h.slice(1)) && host.length > h.length - 1) {
          hostScore = Math.max(hostScore, h.length);
        }
      }
      if (hostScore < 0) return undefined;
      const value = candidate.path.value;
      const pathOk =
        candidate.path.type === "Exact"
          ? path === value
          : value === "/" || path === value || path.startsWith(value + "/");
      if (!pathOk) return undefined;
      if (candidate.methods.length > 0 && !candidate.methods.includes(method)) return undefined;
      return [
        hostScore,
        candidate.path.type === "Exact" ? 1 : 0,
        value.length,
        candidate.methods.length > 0 ? 1 : 0,
      ];
    };
    const compareScores = (a: number[], b: number[]): number => {
      for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
      return 0;
    };
    const linear = (host: string, path: string, method: string): string => {
      let best: { id: string; score: number[] } | undefined;
      for (const candidate of routes) {
        const score = specificity(candidate, host, path, method);
        if (score === undefined) continue;
        const better = best === undefined || compareScores(score, best.score) > 0;
        if (better) best = { id: candidate.id, score };
      }
      return best?.id ?? "none";
    };
    let checked = 0;
    for (let n = 0; n < 50; n++) {
      const t = (n * 37) % tenants;
      const r = (n * 13) % 25;
      const hosts = [`t${t}.example.com`, `a.t${t}.example.com`, "other.test"];
      const paths = [`/svc${r}`, `/svc${r}/status`, `/svc${r}/v1/x`, `/shared/${t}/${r}`, `/nope`];
      for (const host of hosts) {
        for (const path of paths) {
          for (const method of ["GET", "POST"]) {
            const expected = linear(host, path, method);
            const actual = router.match(host, path, method);
            expect(actual.kind === "matched" ? actual.route.id : "none", `${method} ${host}${path}`).toBe(
              expected,
            );
            checked++;
          }
        }
      }
    }
    expect(checked).toBe(1_500);
  });
});
