// Phantom mode against an AuthServer that answers introspection with facts (RFC 7662 JSON or an RFC 9701 signed
// answer) rather than a JWT to forward: the gateway mints the JWT, for the audience the rule names. Compiled from
// manifests, as a user would write them, through a real gateway process, demo AS and echo API.
import type { Server } from "node:http";
import { createLocalJWKSet, jwtVerify, type JSONWebKeySet } from "jose";
import { request } from "undici";
import { afterAll, describe, expect, it } from "vitest";
import { startDemoAuthServer, type DemoAuthServer } from "../../src/demo/auth-server.ts";
import { startEchoApi } from "../../src/demo/echo-api.ts";
import { makeConfigDir, startGatewayProcess, type GatewayProcess } from "../helpers/gateway-process.ts";
import { getToken } from "../helpers/http.ts";
import { allManifests } from "../helpers/manifests.ts";

const cleanups: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

async function start(
  introspectionResponse: "json" | "token-introspection+jwt",
): Promise<{ as: DemoAuthServer; gateway: GatewayProcess }> {
  const as = await startDemoAuthServer({ port: 0 });
  cleanups.push(() => as.close());
  const echo: { server: Server; port: number } = await startEchoApi(0);
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        echo.server.closeAllConnections();
        echo.server.close(() => resolve());
      }),
  );
  const dir = makeConfigDir(
    allManifests({
      issuer: as.issuer,
      echoOrigin: `http://127.0.0.1:${echo.port}`,
      introspectionResponse,
      phantomAudience: "urn:phantomgate:echo-phantom",
    }),
  );
  const gateway = await startGatewayProcess(dir);
  cleanups.push(() => gateway.stop());
  return { as, gateway };
}

describe.each(["json", "token-introspection+jwt"] as const)(
  "phantom mode, AuthServer answering %s",
  (type) => {
    it("forwards a JWT the gateway minted for the rule's audience, with mint's default claims", async () => {
      const { as, gateway } = await start(type);
      const ready = await request(`${gateway.adminUrl}/readyz`);
      expect(ready.statusCode).toBe(200);
      await ready.body.dump();

      const opaque = await getToken(as.tokenEndpoint, "read_invoice high_video_stream");
      const response = await request(`${gateway.url}/echo/hello`, {
        headers: { authorization: `Bearer ${opaque}` },
      });
      const text = await response.body.text();
      expect(response.statusCode).toBe(200);
      const seen = JSON.parse(text) as { headers: Record<string, string> };
      const jwt = seen.headers["authorization"]?.replace(/^Bearer /, "") ?? "";
      expect(jwt).not.toContain(opaque);

      const jwks = (await (await fetch(`${gateway.adminUrl}/.well-known/jwks.json`)).json()) as JSONWebKeySet;
      const { payload, protectedHeader } = await jwtVerify(jwt, createLocalJWKSet(jwks), {
        audience: "urn:phantomgate:echo-phantom",
      });
      expect(protectedHeader.typ).toBe("at+jwt");
      // Only the route's policies' scopes (billing): high_video_stream belongs to another domain.
      expect(payload).toMatchObject({ sub: "demo-client", client_id: "demo-client", scope: "read_invoice" });
      expect(payload.exp).toBeDefined();
    });

    it("reads the token's audience from the answer for acceptedAudiences", async () => {
      const { as, gateway } = await start(type);
      const call = async (opaque: string): Promise<{ status: number; code: unknown }> => {
        const response = await request(`${gateway.url}/billing-api/x`, {
          headers: { authorization: `Bearer ${opaque}` },
        });
        const text = await response.body.text();
        return { status: response.statusCode, code: (JSON.parse(text) as { code?: unknown }).code };
      };
      const forBilling = await getToken(as.tokenEndpoint, "read_invoice", {
        resource: "urn:phantomgate:billing",
      });
      expect((await call(forBilling)).status).toBe(200);
      expect(await call(await getToken(as.tokenEndpoint, "read_invoice"))).toEqual({
        status: 401,
        code: "PG_ERR_TOKEN_AUDIENCE",
      });
    });
  },
);
