// Header rewriting at the trust boundary, as pure functions: what of the upstream's answer reaches the client, and
// the request headers no upstream should see. (test/integration/gateway.test.ts covers the same through a real
// gateway and echo API.)
import { describe, expect, it } from "vitest";
import { buildClientResponseHeaders, buildUpstreamHeaders } from "../../src/gateway/forward/headers.ts";

describe("response headers", () => {
  it("never hands the client an Authorization the upstream echoed, nor hop-by-hop fields", () => {
    const out = buildClientResponseHeaders(
      {
        authorization: "Bearer eyJhbGciOiJFUzI1NiJ9.internal.jwt",
        connection: "close, x-hop",
        "x-hop": "1",
        "keep-alive": "timeout=5",
        "content-type": "application/json",
        "set-cookie": ["a=1", "b=2"],
      },
      "req-1",
    );
    expect(out).toEqual({
      "content-type": "application/json",
      "set-cookie": ["a=1", "b=2"],
      "x-request-id": "req-1",
    });
  });
});

describe("request headers", () => {
  it("drops names with an underscore and httpoxy's Proxy, keeps ordinary ones", () => {
    const out = buildUpstreamHeaders({
      incoming: {
        host: "api.example.com",
        x_user_id: "admin",
        "x-user_name": "root",
        proxy: "http://attacker.example:8080",
        "x-keep-me": "yes",
      },
      upstreamAuthorization: "Bearer jwt",
      clientAddress: "10.0.0.1",
      protocol: "https",
      host: "api.example.com",
      requestId: "req-1",
      traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
      trustForwarded: false,
    });
    expect(out["x_user_id"]).toBeUndefined();
    expect(out["x-user_name"]).toBeUndefined();
    expect(out["proxy"]).toBeUndefined();
    expect(out).toMatchObject({ "x-keep-me": "yes", host: "api.example.com", authorization: "Bearer jwt" });
  });
});
