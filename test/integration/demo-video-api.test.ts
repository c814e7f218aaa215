// The demo video API verifies the JWT the gateway mints for it (mint mode) and shows it: a real JWKS over a real
// socket, keys made here in place of the gateway's admin port.
import { once } from "node:events";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createVideoApi } from "../../src/demo/video-api.ts";

const ISSUER = "urn:phantomgate:gateway";
let jwksServer: Server;
let sign: (claims: Record<string, unknown>, audience: string) => Promise<string>;
let app: ReturnType<typeof createVideoApi>;
let url: string;

beforeAll(async () => {
  const { publicKey, privateKey } = await generateKeyPair("ES256");
  const jwk = { ...(await exportJWK(publicKey)), kid: "mint-1", alg: "ES256", use: "sig" };
  jwksServer = createServer((_req, res) => {
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ keys: [jwk] }));
  });
  jwksServer.listen(0, "127.0.0.1");
  await once(jwksServer, "listening");
  const jwksUri = `http://127.0.0.1:${(jwksServer.address() as AddressInfo).port}/.well-known/jwks.json`;
  sign = (claims, audience) =>
    new SignJWT(claims)
      .setProtectedHeader({ alg: "ES256", kid: "mint-1", typ: "at+jwt" })
      .setIssuer(ISSUER)
      .setAudience(audience)
      .setSubject("demo-client")
      .setIssuedAt()
      .setExpirationTime("60s")
      .sign(privateKey);
  app = createVideoApi({ issuer: ISSUER, jwksUri, audience: "video-api" });
  await app.listen({ port: 0, host: "127.0.0.1" });
  url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await app.close();
  jwksServer.close();
});

describe("demo video API", () => {
  it("shows the minted JWT it verified: header, claims, and the quality its scopes give", async () => {
    const jwt = await sign({ scope: "high_video_stream" }, "video-api");
    const response = await fetch(`${url}/video/intro.mp4`, { headers: { authorization: `Bearer ${jwt}` } });
    expect(response.status).toBe(200);
    const body = (await response.json()) as Record<string, unknown>;
    expect(body).toMatchObject({
      video: "/video/intro.mp4",
      quality: "1080p",
      viewer: "demo-client",
      scopesReceived: ["high_video_stream"],
      jwtHeader: { alg: "ES256", kid: "mint-1", typ: "at+jwt" },
      jwtClaims: { iss: ISSUER, aud: "video-api", sub: "demo-client", scope: "high_video_stream" },
    });
    const claims = body["jwtClaims"] as { iat: number; exp: number };
    expect(claims.exp - claims.iat).toBe(60);
  });

  it("refuses a JWT for another audience, and a missing one", async () => {
    const other = await sign({ scope: "high_video_stream" }, "echo-api");
    const wrong = await fetch(`${url}/video/x`, { headers: { authorization: `Bearer ${other}` } });
    expect(wrong.status).toBe(401);
    expect(await wrong.json()).toEqual({ error: "internal JWT invalid" });
    const none = await fetch(`${url}/video/x`);
    expect(none.status).toBe(401);
  });
});
