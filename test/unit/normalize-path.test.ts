// Unit tests for request-target normalisation: every known path-confusion bypass, plus property loops.
import { describe, expect, it } from "vitest";
import { GatewayError, type ErrorCode } from "../../src/errors/catalogue.ts";
import {
  normalizeConfiguredPath,
  normalizeRequestTarget,
} from "../../src/gateway/firewall/normalize-path.ts";
import { createRandom } from "../helpers/random.ts";

function normalize(raw: string): string {
  return normalizeRequestTarget(raw).path;
}

function codeOf(raw: string): ErrorCode | "accepted" {
  try {
    normalizeRequestTarget(raw);
    return "accepted";
  } catch (error) {
    if (error instanceof GatewayError) return error.code;
    throw error;
  }
}

/** Node hands `req.url` over as latin1: one character per byte of the wire. */
function wireBytes(text: string): string {
  return Buffer.from(text, "utf8").toString("latin1");
}

/** Deterministic integers in [0, n) (mulberry32) so property failures reproduce. */
function createIntegers(seed: number): (n: number) => number {
  const random = createRandom(seed);
  return (n) => Math.floor(random() * n);
}

describe("normalizeRequestTarget: canonical paths", () => {
  it.each([
    ["/", "/"],
    ["/admin", "/admin"],
    ["/invoices/", "/invoices/"],
    ["/v1.2/items", "/v1.2/items"],
    ["/.well-known/jwks.json", "/.well-known/jwks.json"],
    ["/a/b/c", "/a/b/c"],
    ["/a:b@c!$&'()*+,=", "/a:b@c!$&'()*+,="],
    ["/a%3Bb", "/a%3Bb"],
    ["/-._~", "/-._~"],
  ])("keeps %s as %s", (raw, expected) => {
    expect(normalize(raw)).toBe(expected);
  });

  it("returns the very same string for an already canonical origin-form target", () => {
    const raw = "/invoices/42/lines";
    expect(normalize(raw)).toBe(raw);
  });

  it.each([
    ["/public/../admin", "/admin"],
    ["//admin", "/admin"],
    ["///admin//x//", "/admin/x/"],
    ["/./admin", "/admin"],
    ["/admin/.", "/admin/"],
    ["/admin/..", "/"],
    ["/a/b/..", "/a/"],
    ["/a/b/../c", "/a/c"],
    ["/a/./b/./c", "/a/b/c"],
    ["/a//../b", "/b"],
    ["/.", "/"],
    ["//", "/"],
    ["/a/...", "/a/..."],
    ["/a/..b/.c/c.", "/a/..b/.c/c."],
  ])("resolves %s to %s", (raw, expected) => {
    expect(normalize(raw)).toBe(expected);
  });

  it.each([
    ["/%61dmin", "/admin"],
    ["/%41%42%43", "/ABC"],
    ["/%7e%2D%5f%30", "/~-_0"],
    ["/a%20b", "/a%20b"],
    ["/a%3bb", "/a%3Bb"],
    ["/a%3Fb", "/a%3Fb"],
    ["/a%25b", "/a%25b"],
    ["/caf%c3%a9", "/caf%C3%A9"],
    ["/%c0%ae%c0%ae/admin", "/%C0%AE%C0%AE/admin"],
    ["/%e0%80%ae", "/%E0%80%AE"],
  ])("decodes only unreserved escapes: %s → %s", (raw, expected) => {
    expect(normalize(raw)).toBe(expected);
  });

  it("keeps encoded and raw reserved characters distinct (RFC 3986 §2.2)", () => {
    expect(normalize("/a%2Cb")).not.toBe(normalize("/a,b"));
    expect(normalize("/a%3Db")).toBe("/a%3Db");
  });

  it.each([
    ["/a|b", "/a%7Cb"],
    ['/"<>', "/%22%3C%3E"],
    ["/[x]^`{y}", "/%5Bx%5D%5E%60%7By%7D"],
  ])("percent-encodes printable characters a path may not hold: %s → %s", (raw, expected) => {
    expect(normalize(raw)).toBe(expected);
    expect(normalize(expected)).toBe(expected);
  });

  it("gives raw and percent-encoded UTF-8 the same canonical form", () => {
    expect(normalize(wireBytes("/café"))).toBe("/caf%C3%A9");
    expect(normalize("/caf%C3%A9")).toBe("/caf%C3%A9");
    expect(normalize(wireBytes("/日本/ü"))).toBe("/%E6%97%A5%E6%9C%AC/%C3%BC");
  });

  it("rejects characters that cannot come from node's latin1 req.url", () => {
    expect(codeOf("/日本")).toBe("PG_ERR_BAD_PATH");
    expect(codeOf("/\u{1f600}")).toBe("PG_ERR_BAD_PATH");
  });

  it("/%61dmin and /admin are one path, /ADMIN another (case-sensitive)", () => {
    expect(normalize("/%61dmin")).toBe(normalize("/admin"));
    expect(normalize("/ADMIN")).toBe("/ADMIN");
    expect(normalize("/ADMIN")).not.toBe(normalize("/admin"));
  });
});

describe("normalizeRequestTarget: rejected bypass attempts", () => {
  it.each([
    "/public/%2e%2e/admin",
    "/public/%2E%2E/admin",
    "/public/.%2e/admin",
    "/public/%2e./admin",
    "/%2e/admin",
    "/file%2ejson",
    "/a/%2fadmin",
    "/a%2F..%2Fadmin",
    "/a%2f",
    "/a%5cadmin",
    "/a%5Cadmin",
    "/admin%00.json",
    "/a%0d%0aX-Injected:1",
    "/a%09b",
    "/a%7fb",
    "\\admin",
    "/\\admin",
    "/a\\admin",
    "/admin\u0000.json",
    "/a\tb",
    "/a\rb",
    "/a\nb",
    "/a b",
    "/a\u007fb",
    "/%zz",
    "/%",
    "/a%",
    "/a%2",
    "/a%g0",
    "/a%0g",
    "/%%30",
    "/..",
    "/../admin",
    "/a/../..",
    "/a/../../admin",
    "/..;/admin",
    "/public/..;/admin",
    "/public/..;jsessionid=x/admin",
    "/public/.;/admin",
    "/public/..%3b/admin",
    "/public/..%3B/admin",
    "/admin;x",
    "/admin;jsessionid=1/users",
    "/a/b;",
    "/;/admin",
  ])("rejects %j with PG_ERR_BAD_PATH", (raw) => {
    expect(codeOf(raw)).toBe("PG_ERR_BAD_PATH");
  });

  it.each(["*", "example.com:443", "", "admin", "ftp://host/x", "http:/x"])(
    "rejects the non-routable target %j with PG_ERR_BAD_REQUEST",
    (raw) => {
      expect(codeOf(raw)).toBe("PG_ERR_BAD_REQUEST");
    },
  );

  it.each(["/a#frag", "/a?q=1#frag", "http://host#frag", "/a?x=\u0001", "/a?x=1 2", "/a?x=\u0100"])(
    "rejects fragments and unforwardable query bytes in %j with PG_ERR_BAD_REQUEST",
    (raw) => {
      expect(codeOf(raw)).toBe("PG_ERR_BAD_REQUEST");
    },
  );

  it("throws GatewayError with a client-safe status and a reason that does not echo the path", () => {
    const secret = "/a%2fsecret-value";
    try {
      normalizeRequestTarget(secret);
      expect.unreachable();
    } catch (error) {
      expect(error).toBeInstanceOf(GatewayError);
      const gatewayError = error as GatewayError;
      expect(gatewayError.status).toBe(400);
      expect(gatewayError.reason).not.toContain("secret-value");
    }
  });
});

describe("normalizeRequestTarget: absolute-form and query", () => {
  it.each([
    ["http://evil.example/admin?x=1", "/admin", "x=1", "evil.example"],
    ["HTTPS://host:8443/a/../b", "/b", "", "host:8443"],
    ["http://host", "/", "", "host"],
    ["http://host?q", "/", "q", "host"],
  ])("takes the path and authority of %s", (raw, path, query, authority) => {
    expect(normalizeRequestTarget(raw)).toEqual({ path, query, authority });
  });

  it("refuses user information in an absolute-form target", () => {
    expect(codeOf("http://user@host/x")).toBe("PG_ERR_BAD_REQUEST");
  });

  it("keeps the query verbatim and without '?'", () => {
    expect(normalizeRequestTarget("/a?b=%2e%2E&c=/../&d=%zz")).toEqual({
      path: "/a",
      query: "b=%2e%2E&c=/../&d=%zz",
      authority: undefined,
    });
    expect(normalizeRequestTarget("/a?")).toEqual({ path: "/a", query: "", authority: undefined });
    expect(normalizeRequestTarget("/a")).toEqual({ path: "/a", query: "", authority: undefined });
    expect(normalizeRequestTarget("/a/./b?x?y")).toEqual({
      path: "/a/b",
      query: "x?y",
      authority: undefined,
    });
  });

  it("does not treat '?' inside a query as a second path", () => {
    expect(normalizeRequestTarget("/public?/../admin").path).toBe("/public");
  });
});

describe("normalizeConfiguredPath", () => {
  it("brings configured Unicode into the request form", () => {
    expect(normalizeConfiguredPath("/café")).toBe(normalize(wireBytes("/café")));
    expect(normalizeConfiguredPath("/invoices")).toBe("/invoices");
    expect(normalizeConfiguredPath("/a|b")).toBe("/a%7Cb");
  });

  it("rejects configured paths that are not plain paths", () => {
    expect(() => normalizeConfiguredPath("invoices")).toThrow(GatewayError);
    expect(() => normalizeConfiguredPath("/a?b")).toThrow(GatewayError);
    expect(() => normalizeConfiguredPath("/a/../..")).toThrow(GatewayError);
  });
});

describe("normalizeRequestTarget: properties", () => {
  const pieces = [
    "/",
    "//",
    ".",
    "..",
    "/./",
    "/../",
    "a",
    "b",
    "Z",
    "~",
    "-",
    "_",
    ";",
    ":",
    "@",
    "%41",
    "%61",
    "%7e",
    "%2e",
    "%2F",
    "%5c",
    "%00",
    "%20",
    "%3b",
    "%c3%a9",
    "%zz",
    "%",
    "|",
    "\\",
    "\u00e9",
    "..;",
    "#",
    "?",
    "\t",
  ];
  const allowedOutput = /^(?:\/|[A-Za-z0-9\-._~!$&'()*+,=:@]|%[0-9A-F]{2})+$/;
  const unreservedEscape = /%(?:[46][1-9A-F]|[57][0-9A]|3[0-9]|2D|5F|7E)/;

  it("every accepted path is canonical and normalising it again is the identity", () => {
    const random = createIntegers(0x5eed);
    let accepted = 0;
    for (let n = 0; n < 20_000; n++) {
      let raw = "/";
      const length = 1 + random(12);
      for (let k = 0; k < length; k++) raw += pieces[random(pieces.length)]!;
      let path: string;
      try {
        path = normalizeRequestTarget(raw).path;
      } catch (error) {
        expect(error).toBeInstanceOf(GatewayError);
        expect(["PG_ERR_BAD_PATH", "PG_ERR_BAD_REQUEST"]).toContain((error as GatewayError).code);
        continue;
      }
      accepted++;
      expect(path.startsWith("/"), raw).toBe(true);
      expect(path, raw).toMatch(allowedOutput);
      expect(path, raw).not.toMatch(unreservedEscape);
      expect(path, raw).not.toContain("//");
      expect(path, raw).not.toContain("/./");
      expect(path, raw).not.toContain("/../");
      expect(path.endsWith("/.") || path.endsWith("/.."), raw).toBe(false);
      expect(normalize(path), raw).toBe(path);
    }
    // The generator must exercise the accepting branch too, not only rejections.
    expect(accepted).toBeGreaterThan(2_000);
  });

  it("agrees with WHATWG URL dot-segment resolution when no segment is empty and nothing climbs the root", () => {
    const random = createIntegers(42);
    const segments = ["a", "b", "c1", ".", "..", "x.y"];
    let compared = 0;
    for (let n = 0; n < 5_000; n++) {
      let raw = "";
      const length = 1 + random(8);
      for (let k = 0; k < length; k++) raw += "/" + segments[random(segments.length)]!;
      let path: string;
      try {
        path = normalize(raw);
      } catch {
        continue; // '..' above the root: WHATWG clamps, we reject
      }
      compared++;
      expect(path, raw).toBe(new URL(raw, "http://h").pathname);
    }
    expect(compared).toBeGreaterThan(1_000);
  });

  it("percent-encoding any unreserved character other than '.' never changes the result", () => {
    const random = createIntegers(7);
    const alphabet = "abcXYZ019-_~/";
    for (let n = 0; n < 5_000; n++) {
      let plain = "/";
      let encoded = "/";
      const length = 1 + random(16);
      for (let k = 0; k < length; k++) {
        const ch = alphabet[random(alphabet.length)]!;
        plain += ch;
        if (ch !== "/" && random(2) === 1) {
          const hex = ch.charCodeAt(0).toString(16);
          encoded += "%" + (random(2) === 1 ? hex.toUpperCase() : hex);
        } else {
          encoded += ch;
        }
      }
      expect(normalize(encoded), encoded).toBe(normalize(plain));
    }
  });

  it("never lets a rejected separator through, however it is encoded", () => {
    const random = createIntegers(99);
    const forbidden = ["2e", "2E", "2f", "2F", "5c", "5C", "00", "0a", "0D", "1f", "7F"];
    for (let n = 0; n < 2_000; n++) {
      const before = "/seg".repeat(random(4));
      const after = "/x".repeat(random(4));
      const raw = `${before}/a%${forbidden[random(forbidden.length)]!}b${after}`;
      expect(codeOf(raw), raw).toBe("PG_ERR_BAD_PATH");
    }
  });
});
