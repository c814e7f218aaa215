// SDK verifier: an internal JWT becomes a typed identity only with the right signature, algorithm, issuer,
// audience, typ and times (manual clock); the header is parsed strictly; options are validated; the identity never
// exposes the token. Keys are local; the integration suite uses the real authorization server's JWKS.
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { inspect } from "node:util";
import { exportJWK, generateKeyPair, SignJWT, UnsecuredJWT, type CryptoKey, type JWK } from "jose";
import pino from "pino";
import { z } from "zod";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  bearerTokenOf,
  createInternalJwtVerifier,
  createManualClock,
  fingerprintToken,
  SdkError,
  type InternalJwtVerifier,
} from "../../src/sdk/index.ts";

const ISSUER = "https://as.example";
const AUDIENCE = "urn:billing";
const clock = createManualClock(Date.UTC(2030, 0, 1));
const nowSeconds = (): number => Math.floor(clock.now() / 1000);

let esKey: CryptoKey;
let esJwk: JWK;
let verifier: InternalJwtVerifier;

async function sign(
  claims: Record<string, unknown> = {},
  options: {
    key?: CryptoKey;
    alg?: string;
    typ?: string;
    iss?: string;
    aud?: string | string[];
    exp?: number;
  } = {},
): Promise<string> {
  return new SignJWT({ sub: "alice", client_id: "web", scope: "read_invoice write_invoice", ...claims })
    .setProtectedHeader({ alg: options.alg ?? "ES256", kid: "k1", typ: options.typ ?? "at+jwt" })
    .setIssuer(options.iss ?? ISSUER)
    .setAudience(options.aud ?? AUDIENCE)
    .setIssuedAt(nowSeconds())
    .setExpirationTime(options.exp ?? nowSeconds() + 300)
    .sign(options.key ?? esKey);
}

async function failure(promise: Promise<unknown>): Promise<SdkError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof SdkError) return error;
    throw error;
  }
  throw new Error("expected an SdkError");
}

beforeAll(async () => {
  const pair = await generateKeyPair("ES256", { extractable: true });
  esKey = pair.privateKey;
  esJwk = { ...(await exportJWK(pair.publicKey)), kid: "k1", alg: "ES256", use: "sig" };
  verifier = createInternalJwtVerifier({
    issuer: ISSUER,
    audience: [AUDIENCE, "urn:other"],
    jwks: { keys: [esJwk] },
    algorithms: ["ES256"],
    clockSkewSeconds: 5,
    clock,
  });
});

describe("internal JWT verifier", () => {
  it("turns a valid JWT into an identity that names the token only by fingerprint", async () => {
    const jwt = await sign({ act: { sub: "invoices-api", act: { sub: "gateway" } } });
    const identity = await verifier.verify(jwt);
    expect(identity).toMatchObject({
      sub: "alice",
      clientId: "web",
      scopes: ["read_invoice", "write_invoice"],
      issuer: ISSUER,
      audience: [AUDIENCE],
      expiresAt: nowSeconds() + 300,
      actor: { sub: "invoices-api", actor: { sub: "gateway" } },
      tokenFingerprint: fingerprintToken(jwt),
    });
    expect(JSON.stringify(identity)).not.toContain(jwt);
    expect(Object.isFrozen(identity)).toBe(true);
  });

  it("keeps a token carried in a claim readable by name but out of JSON, pino and util.inspect", async () => {
    const ledgerToken = await sign({ sub: "alice" }, { aud: "urn:phantomgate:billing" });
    const jwe = "eyJhbGciOiJSU0EtT0FFUCJ9.a2V5.aXY.Y2lwaGVy.dGFn";
    const identity = await verifier.verify(
      await sign({ ledger_token: ledgerToken, sealed: jwe, version: "1.2.3", region: "eu.west.1" }),
    );
    expect(identity.claims["ledger_token"]).toBe(ledgerToken);
    expect(identity.claims["sealed"]).toBe(jwe);
    expect(Object.keys(identity.claims)).not.toContain("ledger_token");
    const lines: string[] = [];
    const log = pino({ level: "info" }, { write: (line: string) => void lines.push(line) });
    log.info({ identity }, "caller");
    for (const text of [JSON.stringify(identity), inspect(identity, { depth: 10 }), lines.join("")]) {
      expect(text).not.toContain(ledgerToken);
      expect(text).not.toContain(jwe);
      expect(text).toContain("eu.west.1"); // other dotted values stay
      expect(text).toContain("1.2.3");
    }
  });

  it("tries each key for a JWT without kid while the AS publishes two keys for its algorithm", async () => {
    const older = await generateKeyPair("ES256", { extractable: true });
    const newer = await generateKeyPair("ES256", { extractable: true });
    const rotating = createInternalJwtVerifier({
      issuer: ISSUER,
      audience: AUDIENCE,
      jwks: {
        keys: [
          { ...(await exportJWK(older.publicKey)), alg: "ES256", use: "sig" },
          { ...(await exportJWK(newer.publicKey)), alg: "ES256", use: "sig" },
        ],
      },
    });
    for (const pair of [older, newer]) {
      const jwt = await new SignJWT({ sub: "alice" })
        .setProtectedHeader({ alg: "ES256", typ: "at+jwt" })
        .setIssuer(ISSUER)
        .setAudience(AUDIENCE)
        .setExpirationTime(nowSeconds() + 300)
        .sign(pair.privateKey);
      expect((await rotating.verify(jwt)).sub).toBe("alice");
    }
    const stranger = await generateKeyPair("ES256");
    const forged = await new SignJWT({ sub: "alice" })
      .setProtectedHeader({ alg: "ES256", typ: "at+jwt" })
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .setExpirationTime(nowSeconds() + 300)
      .sign(stranger.privateKey);
    expect((await failure(rotating.verify(forged))).code).toBe("PG_SDK_TOKEN_INVALID");
    await rotating.close();
  });

  it("reads scopes from a list or from scp", async () => {
    expect((await verifier.verify(await sign({ scope: ["a", "b", "a"] }))).scopes).toEqual(["a", "b"]);
    expect((await verifier.verify(await sign({ scope: undefined, scp: "x y" }))).scopes).toEqual(["x", "y"]);
  });

  it("rejects an expired token (beyond the skew) as PG_SDK_TOKEN_EXPIRED", async () => {
    const jwt = await sign({}, { exp: nowSeconds() + 60 });
    clock.advance(63_000);
    await expect(verifier.verify(jwt)).resolves.toBeDefined();
    clock.advance(3_000);
    expect((await failure(verifier.verify(jwt))).code).toBe("PG_SDK_TOKEN_EXPIRED");
  });

  it("rejects a token not yet valid", async () => {
    const jwt = await sign({ nbf: nowSeconds() + 60 });
    expect((await failure(verifier.verify(jwt))).code).toBe("PG_SDK_TOKEN_INVALID");
  });

  it("rejects another audience as PG_SDK_TOKEN_WRONG_AUDIENCE", async () => {
    const error = await failure(verifier.verify(await sign({}, { aud: "urn:payments" })));
    expect(error.code).toBe("PG_SDK_TOKEN_WRONG_AUDIENCE");
    expect(error.status).toBe(401);
    await expect(verifier.verify(await sign({}, { aud: ["urn:x", "urn:other"] }))).resolves.toBeDefined();
  });

  it("rejects another issuer, a foreign key, a disallowed or symmetric algorithm and alg none", async () => {
    const other = await generateKeyPair("ES256");
    const rsa = await generateKeyPair("RS256");
    const hmac = new TextEncoder().encode("0123456789abcdef0123456789abcdef");
    const unsecured = new UnsecuredJWT({ sub: "alice" })
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .setExpirationTime(nowSeconds() + 60)
      .encode();
    const bad = [
      await sign({}, { iss: "https://evil.example" }),
      await sign({}, { key: other.privateKey }),
      await sign({}, { key: rsa.privateKey, alg: "RS256" }),
      await new SignJWT({ sub: "alice" })
        .setProtectedHeader({ alg: "HS256", kid: "k1" })
        .setIssuer(ISSUER)
        .setAudience(AUDIENCE)
        .setExpirationTime(nowSeconds() + 60)
        .sign(hmac),
      unsecured,
      "not.a.jwt",
    ];
    for (const jwt of bad) expect((await failure(verifier.verify(jwt))).code).toBe("PG_SDK_TOKEN_INVALID");
  });

  it("rejects JWTs that are not access tokens (typ) and tokens without sub", async () => {
    const introspection = await sign({}, { typ: "token-introspection+jwt" });
    expect((await failure(verifier.verify(introspection))).code).toBe("PG_SDK_TOKEN_INVALID");
    expect((await failure(verifier.verify(await sign({ sub: undefined })))).code).toBe(
      "PG_SDK_TOKEN_INVALID",
    );
    await expect(verifier.verify(await sign({}, { typ: "JWT" }))).resolves.toBeDefined();
  });

  it("with requireAccessTokenTyp takes only typ at+jwt (RFC 9068) for an access token", async () => {
    const strict = createInternalJwtVerifier({
      issuer: ISSUER,
      audience: AUDIENCE,
      jwks: { keys: [esJwk] },
      clock,
      requireAccessTokenTyp: true,
    });
    await expect(strict.verify(await sign({}))).resolves.toMatchObject({ sub: "alice" });
    for (const typ of ["JWT", "application/jwt"]) {
      expect((await failure(strict.verify(await sign({}, { typ })))).code, typ).toBe("PG_SDK_TOKEN_INVALID");
    }
  });

  it("types and checks the claims an API declares", async () => {
    const typed = createInternalJwtVerifier({
      issuer: ISSUER,
      audience: AUDIENCE,
      jwks: { keys: [esJwk] },
      clock,
      claims: z.object({ tenant: z.string() }),
    });
    const identity = await typed.verify(await sign({ tenant: "t1" }));
    const tenant: string = identity.claims.tenant;
    expect(tenant).toBe("t1");
    const error = await failure(typed.verify(await sign({ tenant: 7 })));
    expect(error.code).toBe("PG_SDK_TOKEN_INVALID");
    expect(error.reason).toContain("tenant");
  });

  it("reads exactly one Bearer token from the Authorization header", async () => {
    const jwt = await sign();
    await expect(verifier.verifyAuthorization(`Bearer ${jwt}`)).resolves.toMatchObject({ sub: "alice" });
    expect(bearerTokenOf(`bearer ${jwt}`)).toBe(jwt);
    expect((await failure(verifier.verifyAuthorization(undefined))).code).toBe("PG_SDK_TOKEN_MISSING");
    expect((await failure(verifier.verifyAuthorization([`Bearer ${jwt}`, `Bearer ${jwt}`]))).code).toBe(
      "PG_SDK_TOKEN_MALFORMED_HEADER",
    );
    // Another scheme carries no Bearer credential: 401 with a bare challenge (RFC 6750 §3.1), not 400.
    expect((await failure(verifier.verifyAuthorization("Basic YTpi"))).code).toBe("PG_SDK_TOKEN_MISSING");
    expect((await failure(verifier.verifyAuthorization(`DPoP ${jwt}`))).code).toBe("PG_SDK_TOKEN_MISSING");
    // One header as a list of one (req.headersDistinct).
    await expect(verifier.verifyAuthorization([`Bearer ${jwt}`])).resolves.toMatchObject({ sub: "alice" });
    expect((await failure(verifier.verifyAuthorization(`Bearer ${jwt} extra`))).code).toBe(
      "PG_SDK_TOKEN_MALFORMED_HEADER",
    );
  });

  it("refuses what jose lets through: a non-string typ, an empty sub, infinite times, a non-string audience", async () => {
    const header = (typ: unknown) =>
      new SignJWT({ sub: "alice" })
        .setProtectedHeader({ alg: "ES256", kid: "k1", typ } as unknown as { alg: string })
        .setIssuer(ISSUER)
        .setAudience(AUDIENCE)
        .setExpirationTime(nowSeconds() + 300)
        .sign(esKey);
    for (const typ of [123, ["at+jwt"]]) {
      const error = await failure(verifier.verify(await header(typ)));
      expect(error).toMatchObject({ code: "PG_SDK_TOKEN_INVALID", reason: "typ is not an access token" });
    }
    expect(await failure(verifier.verify(await sign({ sub: "" })))).toMatchObject({
      code: "PG_SDK_TOKEN_INVALID",
      reason: "sub is not a non-empty string",
    });
    // JSON's 1e400 is Infinity: signed by hand, since no JSON encoder writes it.
    const forever = await signedPayload(`{"sub":"alice","iss":"${ISSUER}","aud":"${AUDIENCE}","exp":1e400}`);
    expect(await failure(verifier.verify(forever))).toMatchObject({
      code: "PG_SDK_TOKEN_INVALID",
      reason: "claim exp is malformed",
    });
    const mixed = await signedPayload(
      `{"sub":"alice","iss":"${ISSUER}","aud":["${AUDIENCE}",123],"exp":${nowSeconds() + 300}}`,
    );
    expect(await failure(verifier.verify(mixed))).toMatchObject({
      code: "PG_SDK_TOKEN_INVALID",
      reason: "claim aud is malformed",
    });
  });

  it("refuses a token spelled another way than canonical base64url (each spelling would be another fingerprint)", async () => {
    const jwt = await sign();
    const [head, body, signature] = jwt.split(".") as [string, string, string];
    // The last character of an ES256 signature (64 bytes) carries 4 unused bits: flipping one still decodes.
    const last = signature.at(-1) ?? "A";
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const twin = alphabet[alphabet.indexOf(last) ^ 1] ?? "A";
    for (const variant of [
      `${jwt}==`,
      `${head}.${body}.${signature.slice(0, -1)}${twin}`,
      `${head}=.${body}.${signature}`,
    ]) {
      expect(await failure(verifier.verify(variant))).toMatchObject({
        code: "PG_SDK_TOKEN_INVALID",
        reason: "not a compact JWS in canonical base64url",
      });
    }
    await expect(verifier.verify(jwt)).resolves.toMatchObject({ sub: "alice" });
  });

  it("hides an embedded token however its header was serialised", async () => {
    const spaced = await signedPayload(
      `{"sub":"bob","iss":"${ISSUER}","aud":"urn:fraud","exp":${nowSeconds() + 300}}`,
      '{ "alg": "ES256", "kid": "k1" }',
    );
    expect(spaced.startsWith("eyJ")).toBe(false);
    const identity = await verifier.verify(await sign({ fraud_token: spaced }));
    expect(identity.claims["fraud_token"]).toBe(spaced);
    expect(JSON.stringify(identity.claims)).not.toContain(spaced);
  });

  it("never puts the token in an error", async () => {
    const jwt = await sign({}, { aud: "urn:payments" });
    const error = await failure(verifier.verify(jwt));
    expect(`${error.message} ${error.reason} ${error.detail} ${JSON.stringify(error)}`).not.toContain(jwt);
  });

  it("validates its options", () => {
    const base = { issuer: ISSUER, audience: AUDIENCE };
    const invalid = [
      { ...base },
      { ...base, jwksUri: "http://k.example/jwks", jwks: { keys: [esJwk] } },
      { ...base, jwksUri: "ftp://k.example/jwks" },
      { ...base, jwks: { keys: [esJwk] }, audience: [] },
      { ...base, jwks: { keys: [esJwk] }, algorithms: ["HS256"] },
      { ...base, jwks: { keys: [esJwk] }, issuer: "" },
      { ...base, jwks: { keys: [esJwk] }, requireAccessTokenTyp: "yes" },
    ];
    for (const options of invalid) {
      expect(() =>
        createInternalJwtVerifier(options as Parameters<typeof createInternalJwtVerifier>[0]),
      ).toThrow(expect.objectContaining({ code: "PG_SDK_CONFIG_INVALID" }) as Error);
    }
  });
});

describe("remote keys", () => {
  let server: ReturnType<typeof createServer>;
  let jwksUri: string;
  let fetches = 0;
  let broken = false;

  beforeAll(async () => {
    server = createServer((req, res) => {
      fetches += 1;
      if (broken) res.writeHead(500).end();
      else res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ keys: [esJwk] }));
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    jwksUri = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks`;
  });

  afterAll(() => {
    server.close();
  });

  it("fetches the JWKS once and answers 503 PG_SDK_KEYS_UNAVAILABLE when it cannot", async () => {
    const remote = createInternalJwtVerifier({ issuer: ISSUER, audience: AUDIENCE, jwksUri, clock });
    await remote.verify(await sign());
    await remote.verify(await sign());
    expect(fetches).toBe(1);
    await remote.close();

    broken = true;
    const failing = createInternalJwtVerifier({ issuer: ISSUER, audience: AUDIENCE, jwksUri, clock });
    const error = await failure(failing.verify(await sign()));
    expect(error).toMatchObject({ code: "PG_SDK_KEYS_UNAVAILABLE", status: 503 });
    await failing.close();

    const closed = createInternalJwtVerifier({
      issuer: ISSUER,
      audience: AUDIENCE,
      jwksUri: "http://127.0.0.1:1/jwks",
      clock,
      jwksTimeoutMs: 500,
    });
    expect((await failure(closed.verify(await sign()))).code).toBe("PG_SDK_KEYS_UNAVAILABLE");
    await closed.close();
  });
});

/** A JWS over exactly these payload (and header) bytes, with the test key (ES256, kid k1). */
async function signedPayload(
  payload: string,
  header = '{"alg":"ES256","kid":"k1","typ":"at+jwt"}',
): Promise<string> {
  const encode = (text: string) => Buffer.from(text).toString("base64url");
  const input = `${encode(header)}.${encode(payload)}`;
  const signature = await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, esKey, Buffer.from(input));
  return `${input}.${Buffer.from(signature).toString("base64url")}`;
}
