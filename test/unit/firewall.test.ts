// Unit tests for the request firewall: limits, duplicate headers, token placement and Bearer parsing.
import { describe, expect, it } from "vitest";
import { GatewayError, type ErrorCode } from "../../src/errors/catalogue.ts";
import {
  bodyInspection,
  forbiddenFieldName,
  mediaTypeOf,
  createFirewall,
  extractBearerToken,
  type FirewallRequest,
  inspectFraming,
  isEncodedBody,
} from "../../src/gateway/firewall/firewall.ts";

const firewall = createFirewall({ maxUrlBytes: 64, maxHeaderBytes: 256 });

function request(url: string, rawHeaders: string[] = ["Host", "api.test"], method = "GET"): FirewallRequest {
  return { method, url, rawHeaders };
}

function codeOf(action: () => unknown): ErrorCode | "accepted" {
  try {
    action();
    return "accepted";
  } catch (error) {
    if (error instanceof GatewayError) return error.code;
    throw error;
  }
}

function inspectCode(req: FirewallRequest): ErrorCode | "accepted" {
  return codeOf(() => firewall.inspectRequest(req));
}

describe("createFirewall", () => {
  it("rejects limits that are not positive integers", () => {
    expect(() => createFirewall({ maxUrlBytes: 0, maxHeaderBytes: 1 })).toThrow(RangeError);
    expect(() => createFirewall({ maxUrlBytes: 1, maxHeaderBytes: 1.5 })).toThrow(RangeError);
    expect(() => createFirewall({ maxUrlBytes: Number.NaN, maxHeaderBytes: 1 })).toThrow(RangeError);
  });
});

describe("inspectRequest", () => {
  it("returns the canonical path, the verbatim query and the Authorization header", () => {
    expect(
      firewall.inspectRequest(request("/a/./b/../%63?x=1&y", ["Host", "h", "Authorization", "Bearer abc"])),
    ).toEqual({ path: "/a/c", query: "x=1&y", authorization: "Bearer abc" });
    expect(firewall.inspectRequest(request("/"))).toEqual({ path: "/", query: "", authorization: undefined });
  });

  it("enforces the URL limit at exactly maxUrlBytes", () => {
    const atLimit = "/" + "a".repeat(63);
    expect(inspectCode(request(atLimit))).toBe("accepted");
    expect(inspectCode(request(atLimit + "a"))).toBe("PG_ERR_URI_TOO_LONG");
    expect(inspectCode(request("/?" + "q".repeat(63)))).toBe("PG_ERR_URI_TOO_LONG");
  });

  it("answers 414 with the catalogue status", () => {
    try {
      firewall.inspectRequest(request("/" + "x".repeat(100)));
      expect.unreachable();
    } catch (error) {
      expect((error as GatewayError).status).toBe(414);
    }
  });

  it("counts header bytes as name + value + 4 per field and enforces maxHeaderBytes", () => {
    // "Host: h\r\n" is 9 bytes; "X-Pad: <value>\r\n" is 9 + value.
    const padding = (total: number): string[] => ["Host", "h", "X-Pad", "v".repeat(total - 9 - 9)];
    expect(inspectCode(request("/", padding(256)))).toBe("accepted");
    expect(inspectCode(request("/", padding(257)))).toBe("PG_ERR_HEADERS_TOO_LARGE");
    const many = Array.from({ length: 40 }, (_, i) => [`X-${i}`, "1"]).flat();
    expect(inspectCode(request("/", many))).toBe("PG_ERR_HEADERS_TOO_LARGE");
  });

  it("rejects more than one Authorization header, whatever the case of its name", () => {
    const twice = ["Host", "h", "Authorization", "Bearer a", "authorization", "Bearer a"];
    expect(inspectCode(request("/", twice))).toBe("PG_ERR_TOKEN_MALFORMED_HEADER");
    const mixed = ["AUTHORIZATION", "Bearer a", "Host", "h", "aUtHoRiZaTiOn", "Basic b"];
    expect(inspectCode(request("/", mixed))).toBe("PG_ERR_TOKEN_MALFORMED_HEADER");
    expect(firewall.inspectRequest(request("/", ["AUTHORIZATION", "Bearer a"])).authorization).toBe(
      "Bearer a",
    );
  });

  it("keeps an empty Authorization header as present (extractBearerToken then rejects it)", () => {
    const inspected = firewall.inspectRequest(request("/", ["Authorization", ""]));
    expect(inspected.authorization).toBe("");
    expect(codeOf(() => extractBearerToken(inspected.authorization))).toBe("PG_ERR_TOKEN_MALFORMED_HEADER");
  });

  it("does not mistake similar header names for Authorization", () => {
    const similar = ["Proxy-Authorization", "Basic x", "X-Authorization", "y", "Authorizatio", "z"];
    expect(firewall.inspectRequest(request("/", similar)).authorization).toBeUndefined();
  });

  it("rejects more than one Host header (RFC 9112 §3.2)", () => {
    expect(inspectCode(request("/", ["Host", "a.test", "HOST", "b.test"]))).toBe("PG_ERR_BAD_REQUEST");
  });

  it.each(["api.test", "API.test:8443", "[::1]:8080", "10.0.0.1", "svc_internal.ns.svc", ""])(
    "accepts the Host %j",
    (host) => {
      expect(inspectCode(request("/", ["Host", host]))).toBe("accepted");
    },
  );

  it.each([
    "evil.test/x",
    "a b.test",
    "user@api.test",
    "api.test\\x",
    "api.test%2f",
    "api.test?x",
    "caf\u00e9.test",
  ])("rejects the Host %j", (host) => {
    expect(inspectCode(request("/", ["Host", host]))).toBe("PG_ERR_BAD_REQUEST");
  });

  it("leaves TRACE and TRACK to the route stage, which refuses them with the route's Allow (gateway tests)", () => {
    expect(inspectCode(request("/echo", ["Host", "api.test"], "TRACE"))).toBe("accepted");
    expect(inspectCode(request("/echo", ["Host", "api.test"], "TRACK"))).toBe("accepted");
  });

  it("rejects CONNECT and non-routable request-targets", () => {
    expect(inspectCode(request("api.test:443", ["Host", "api.test"], "CONNECT"))).toBe("PG_ERR_BAD_REQUEST");
    expect(inspectCode(request("*", ["Host", "h"], "OPTIONS"))).toBe("PG_ERR_BAD_REQUEST");
  });

  it("holds an absolute-form target's authority against Host (RFC 9112 §3.2.2)", () => {
    expect(inspectCode(request("http://api.test/echo", ["Host", "api.test"]))).toBe("accepted");
    expect(inspectCode(request("http://API.test/echo", ["Host", "api.TEST"]))).toBe("accepted");
    expect(inspectCode(request("http://api.test:8080/echo", ["Host", "api.test:8080"]))).toBe("accepted");
    expect(inspectCode(request("http://admin.test/echo", ["Host", "api.test"]))).toBe("PG_ERR_BAD_REQUEST");
    // The router ignores the port and a final dot: so does the comparison.
    expect(inspectCode(request("http://api.test:80/echo", ["Host", "api.test"]))).toBe("accepted");
    expect(inspectCode(request("http://api.test./echo", ["Host", "API.test"]))).toBe("accepted");
    expect(inspectCode(request("http://[::1]:8080/echo", ["Host", "[::1]"]))).toBe("accepted");
    expect(inspectCode(request("http://[::2]/echo", ["Host", "[::1]"]))).toBe("PG_ERR_BAD_REQUEST");
    expect(inspectCode(request("http://api.test/echo", []))).toBe("PG_ERR_BAD_REQUEST");
  });

  it("passes path problems through from normalisation", () => {
    expect(inspectCode(request("/admin;x/users"))).toBe("PG_ERR_BAD_PATH");
    expect(inspectCode(request("/public/%2e%2e/admin"))).toBe("PG_ERR_BAD_PATH");
    expect(inspectCode(request("/a\\b"))).toBe("PG_ERR_BAD_PATH");
  });

  it("checks the URL limit before parsing the target", () => {
    expect(inspectCode(request("/%zz" + "a".repeat(100)))).toBe("PG_ERR_URI_TOO_LONG");
  });

  it.each([
    "access_token=abc",
    "x=1&access_token=abc",
    "x=1&ACCESS_TOKEN=abc",
    "Access_Token=abc",
    "access%5Ftoken=abc",
    "access%5ftoken=abc",
    "%61ccess_token=abc",
    "%41CCESS%5FTOKEN=abc",
    "access_token",
    "access_token=",
    "x=1;access_token=abc",
    "access.token=abc",
    "access+token=abc",
    "access%20token=abc",
    "a=b&&access_token=c&d",
    // PHP drops leading spaces, reads an unclosed [ as _, and access_token[…] as an array of that name.
    "+access_token=abc",
    "%20%20access_token=abc",
    "access[token=abc",
    "access_token[]=abc",
    "access_token[0]=abc",
    "access%5Btoken=abc",
    // PHP cuts a parameter name at NUL.
    "access_token%00=abc",
    "access_token%00x=abc",
    "ACCESS.TOKEN%00%00=abc",
    // Rack 2 drops leading brackets and a stray ] after the name.
    "access_token]=abc",
    "[access_token]=abc",
    "%5D%5Baccess_token=abc",
  ])("rejects the token-carrying query %j", (query) => {
    expect(inspectCode(request(`/api?${query}`))).toBe("PG_ERR_TOKEN_IN_QUERY");
  });

  it.each([
    "x=access_token",
    "token=abc",
    "access_tokens=abc",
    "my_access_token=abc",
    "access-token=abc",
    "accesstoken=abc",
    "access__token=abc",
    "access_toke=abc",
    "access%5",
    "access%zztoken=1",
    "q=1&state=access_token",
    "access[token]=abc",
    "x+access_token=abc",
    "",
  ])("accepts the query %j", (query) => {
    expect(inspectCode(request(`/api?${query}`))).toBe("accepted");
  });

  it.each([
    "_method=DELETE",
    "x=1&_METHOD=put",
    "%5Fmethod=DELETE",
    ".method=DELETE",
    "_method[]=DELETE",
    "_method%00=DELETE",
    "_method%00x=DELETE",
    "_method]=DELETE",
    "[_method]=DELETE",
    "[method=DELETE",
  ])("refuses the method override in the query %j", (query) => {
    expect(inspectCode(request(`/api?${query}`))).toBe("PG_ERR_BAD_REQUEST");
  });

  it.each([
    "method=DELETE",
    "x_method=1",
    "_methods=1",
    "q=_method",
    "__method=1",
    "%00_method=1",
    "_meth%00od=1",
  ])("accepts the query %j, which overrides no method", (query) => {
    expect(inspectCode(request(`/api?${query}`))).toBe("accepted");
  });

  it("scans long queries without quadratic work", () => {
    const wide = createFirewall({ maxUrlBytes: 1 << 20, maxHeaderBytes: 1024 });
    const query = "a&".repeat(200_000);
    expect(wide.inspectRequest(request(`/x?${query}`)).query).toBe(query);
  });
});

describe("extractBearerToken", () => {
  it.each([
    ["Bearer abc", "abc"],
    ["bearer abc", "abc"],
    ["BEARER abc", "abc"],
    ["Bearer   abc", "abc"],
    ["Bearer a-b.c_d~e+f/g", "a-b.c_d~e+f/g"],
    ["Bearer abc==", "abc=="],
    ["Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln", "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln"],
  ])("parses %j", (header, token) => {
    expect(extractBearerToken(header)).toBe(token);
  });

  it("returns undefined when there is no header", () => {
    expect(extractBearerToken(undefined)).toBeUndefined();
  });

  it.each([
    "",
    "Bearer",
    "Bearer ",
    "Bearer    ",
    "Basic dXNlcjpwYXNz",
    "Bearerabc",
    "Bearer\tabc",
    "Bearer abc def",
    "Bearer abc ",
    "Bearer abc,def",
    "Bearer abc=def",
    "Bearer =abc",
    'Bearer ab"c',
    "Bearer ab\u00e9",
    "Bearer abc\u0000",
    " Bearer abc",
    "Token abc",
    "Bearer, Bearer abc",
    "DPoP abc",
  ])("rejects %j with PG_ERR_TOKEN_MALFORMED_HEADER", (header) => {
    expect(codeOf(() => extractBearerToken(header))).toBe("PG_ERR_TOKEN_MALFORMED_HEADER");
  });

  it("never puts the header value in the error", () => {
    try {
      extractBearerToken("Bearer secret-token-value extra");
      expect.unreachable();
    } catch (error) {
      expect(String(error)).not.toContain("secret-token-value");
      expect((error as GatewayError).reason).not.toContain("secret-token-value");
    }
  });

  it("accepts every b64token built from the RFC 6750 alphabet (property loop)", () => {
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/";
    let seed = 12345;
    const next = (n: number): number => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed % n;
    };
    for (let n = 0; n < 2_000; n++) {
      let token = "";
      const length = 1 + next(64);
      for (let k = 0; k < length; k++) token += alphabet[next(alphabet.length)]!;
      token += "=".repeat(next(3));
      expect(extractBearerToken(`Bearer ${token}`)).toBe(token);
      expect(codeOf(() => extractBearerToken(`Bearer ${token} ${token}`))).toBe(
        "PG_ERR_TOKEN_MALFORMED_HEADER",
      );
    }
  });
});

describe("bodyInspection", () => {
  it.each([
    ["application/x-www-form-urlencoded", "form"],
    ["Application/X-WWW-Form-URLEncoded", "form"],
    ["application/x-www-form-urlencoded; charset=utf-8", "form"],
    ["application/x-www-form-urlencoded;charset=utf-8", "form"],
    ["  application/x-www-form-urlencoded", "form"],
    ["\tapplication/x-www-form-urlencoded\t", "form"],
    // PHP ends the media type at ',' ';' or a space, Rack splits on ';' and ','.
    ["application/x-www-form-urlencoded,x", "form"],
    ["APPLICATION/X-WWW-FORM-URLENCODED,application/json", "form"],
    ["application/x-www-form-urlencoded x", "form"],
    // No media type at all is a form to Rack (on a POST).
    [undefined, "form"],
    ["", "form"],
    ["  ;charset=utf-8", "form"],
    ["multipart/form-data; boundary=x", "multipart"],
    ["Multipart/Form-Data; boundary=x", "multipart"],
    ["multipart/form-data,x; boundary=x", "multipart"],
    ["multipart/mixed; boundary=x", "multipart"],
    ["application/x-www-form-urlencodedx", "none"],
    ["application/json", "none"],
    ["application/json,application/x-www-form-urlencoded", "none"],
    ["text/plain", "none"],
  ])("%j → %s", (contentType, expected) => {
    expect(bodyInspection(contentType, "POST")).toBe(expected);
  });

  it.each(["PUT", "PATCH", "DELETE"])(
    "an untyped %s body is not a form (only an untyped POST is, to Rack)",
    (method) => {
      expect(bodyInspection(undefined, method)).toBe("none");
      expect(bodyInspection("", method)).toBe("none");
      expect(bodyInspection("application/x-www-form-urlencoded", method)).toBe("form");
      expect(bodyInspection("multipart/form-data; boundary=x", method)).toBe("multipart");
    },
  );
});

describe("mediaTypeOf", () => {
  it.each([
    ["Application/JSON; charset=utf-8", "application/json"],
    ["  text/plain,x", "text/plain"],
    ["a/b c", "a/b"],
    ["", ""],
  ])("%j → %j", (contentType, expected) => {
    expect(mediaTypeOf(contentType)).toBe(expected);
  });
});

describe("forbiddenFieldName", () => {
  it.each([
    ["access_token", "access_token"],
    ["ACCESS.TOKEN", "access_token"],
    [" access token", "access_token"],
    ["access_token[]", "access_token"],
    ["access_token\u0000x", "access_token"],
    ["_method", "_method"],
    ["_METHOD", "_method"],
    [".method", "_method"],
    ["_method[x]", "_method"],
    ["_method\u0000", "_method"],
    ["'_method'", "_method"],
  ])("%j is %s", (name, expected) => {
    expect(forbiddenFieldName(name)).toBe(expected);
  });

  it.each([
    "method",
    "x_method",
    "_methods",
    "access_tokens",
    "file",
    "%5Fmethod",
    "access%5Ftoken",
    "'_method",
    "",
  ])("%j is allowed (multipart names are not percent-decoded)", (name) => {
    expect(forbiddenFieldName(name)).toBeUndefined();
  });
});

describe("inspectFraming", () => {
  const request = (headers: Record<string, string>, minor = 1) => ({
    httpVersionMajor: 1,
    httpVersionMinor: minor,
    headers,
  });
  const codeOf = (headers: Record<string, string>, minor = 1): string | undefined => {
    try {
      inspectFraming(request(headers, minor));
      return undefined;
    } catch (error) {
      return (error as GatewayError).code;
    }
  };

  it("takes ordinary requests, chunked in any case, 100-continue and an h2c upgrade", () => {
    expect(codeOf({ host: "a" })).toBeUndefined();
    expect(codeOf({ host: "a", "transfer-encoding": "Chunked " })).toBeUndefined();
    expect(codeOf({ host: "a", expect: "100-Continue" })).toBeUndefined();
    expect(codeOf({ host: "a", upgrade: "h2c" })).toBeUndefined();
    expect(codeOf({}, 0)).toBeUndefined();
  });

  it("refuses a missing Host (HTTP/1.1), other codings, other expectations and WebSocket upgrades", () => {
    expect(codeOf({})).toBe("PG_ERR_BAD_REQUEST");
    expect(codeOf({ host: "a", "transfer-encoding": "gzip, chunked" })).toBe("PG_ERR_NOT_IMPLEMENTED");
    expect(codeOf({ host: "a", expect: "teapot" })).toBe("PG_ERR_EXPECTATION_FAILED");
    for (const upgrade of ["websocket", "WebSocket", "h2c, websocket", "websocket/13"]) {
      expect(codeOf({ host: "a", upgrade }), upgrade).toBe("PG_ERR_NOT_IMPLEMENTED");
    }
    expect(codeOf({ host: "a", upgrade: "notwebsocket" })).toBeUndefined();
  });

  it("refuses HTTP versions other than 1.x", () => {
    for (const [major, minor] of [
      [2, 0],
      [0, 9],
      [3, 0],
    ] as const) {
      expect(() =>
        inspectFraming({ httpVersionMajor: major, httpVersionMinor: minor, headers: { host: "a" } }),
      ).toThrow(expect.objectContaining({ code: "PG_ERR_HTTP_VERSION_NOT_SUPPORTED" }));
    }
  });

  it("isEncodedBody: anything but identity hides the bytes", () => {
    expect(isEncodedBody(undefined)).toBe(false);
    expect(isEncodedBody(" Identity")).toBe(false);
    expect(isEncodedBody("gzip")).toBe(true);
    expect(isEncodedBody("br, identity")).toBe(true);
  });
});
