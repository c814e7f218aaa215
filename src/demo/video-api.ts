// The demo video API: receives JWTs minted by the gateway (mint mode) and verifies them against the gateway's
// JWKS; picks the stream quality from the scopes the gateway passed on.
import Fastify, { type FastifyInstance } from "fastify";
import { createRemoteJWKSet, jwtVerify } from "jose";

export interface VideoApiOptions {
  /** `iss` of gateway-minted JWTs. */
  readonly issuer: string;
  /** The gateway admin port's JWKS. */
  readonly jwksUri: string;
  readonly audience: string;
}

export function createVideoApi(options: VideoApiOptions): FastifyInstance {
  const jwks = createRemoteJWKSet(new URL(options.jwksUri));
  const app = Fastify({ logger: false });
  app.get("/video/*", async (request, reply) => {
    const header = request.headers.authorization;
    if (header?.startsWith("Bearer ") !== true)
      return reply.code(401).send({ error: "internal JWT missing" });
    try {
      const { payload, protectedHeader } = await jwtVerify(header.slice(7), jwks, {
        issuer: options.issuer,
        audience: options.audience,
        algorithms: ["ES256", "RS256", "PS256", "EdDSA"],
      });
      const scopes = typeof payload.scope === "string" ? payload.scope.split(" ") : [];
      const quality = scopes.includes("high_video_stream")
        ? "1080p"
        : scopes.includes("low_video_stream")
          ? "480p"
          : "none";
      // The minted JWT as the API verified it: short-lived, for this audience, with only the claims and scopes
      // the route passes on.
      return {
        video: request.url,
        quality,
        viewer: payload.sub,
        scopesReceived: scopes,
        jwtHeader: protectedHeader,
        jwtClaims: payload,
      };
    } catch {
      return reply.code(401).send({ error: "internal JWT invalid" });
    }
  });
  return app;
}
