// JWKS key source: cached keys, refetch on unknown kid at most once per cooldown, stale keys survive a failed
// refresh — with an in-memory key set and a manual clock (the integration suite covers the real AS).
import { exportJWK, generateKeyPair, SignJWT, type JWK } from "jose";
import { describe, expect, it } from "vitest";
import { GatewayError } from "../../src/errors/catalogue.ts";
import { createManualClock } from "../../src/tokens/clock.ts";
import { createJwksKeySource, isAccessTokenTyp, verifyJwt } from "../../src/tokens/jwks.ts";

const ISSUER = "https://as.example";

async function signingKey(kid: string) {
  const { privateKey, publicKey } = await generateKeyPair("ES256", { extractable: true });
  const jwk: JWK = { ...(await exportJWK(publicKey)), kid, alg: "ES256", use: "sig" };
  const sign = (nowMs: number, claims: Record<string, unknown> = {}) =>
    new SignJWT({ sub: "alice", ...claims })
      .setProtectedHeader({ alg: "ES256", kid, typ: "at+jwt" })
      .setIssuer(ISSUER)
      .setAudience("urn:api")
      .setIssuedAt(Math.floor(nowMs / 1000))
      .setExpirationTime(Math.floor(nowMs / 1000) + 300)
      .sign(privateKey);
  const signWithoutKid = (nowMs: number) =>
    new SignJWT({ sub: "alice" })
      .setProtectedHeader({ alg: "ES256", typ: "at+jwt" })
      .setIssuer(ISSUER)
      .setIssuedAt(Math.floor(nowMs / 1000))
      .setExpirationTime(Math.floor(nowMs / 1000) + 300)
      .sign(privateKey);
  return { jwk, sign, signWithoutKid };
}

/** A key source over what the AS publishes at the time (`published()`), counting its fetches. */
function publishedKeys(clock: ReturnType<typeof createManualClock>, published: () => JWK[]) {
  let fetches = 0;
  const keys = createJwksKeySource({
    clock,
    cooldownMs: 10_000,
    fetchJwks: () => {
      fetches += 1;
      return Promise.resolve({ keys: published() });
    },
  });
  return { keys, fetches: () => fetches };
}

describe("JWKS key source", () => {
  it("fetches once, then refetches for an unknown kid at most once per cooldown", async () => {
    const clock = createManualClock(Date.now());
    const first = await signingKey("k1");
    const second = await signingKey("k2");
    let published: JWK[] = [first.jwk];
    const { keys, fetches } = publishedKeys(clock, () => published);
    const options = {
      issuer: ISSUER,
      audience: "urn:api",
      algorithms: ["ES256"] as const,
      clockSkewSeconds: 0,
      clock,
    };

    await verifyJwt(await first.sign(clock.now()), keys, options);
    await verifyJwt(await first.sign(clock.now()), keys, options);
    expect(fetches()).toBe(1);

    // k2 appears at the AS; within the cooldown the gateway does not look.
    published = [first.jwk, second.jwk];
    await expect(verifyJwt(await second.sign(clock.now()), keys, options)).rejects.toMatchObject({
      code: "ERR_JWKS_NO_MATCHING_KEY",
    });
    expect(fetches()).toBe(1);
    clock.advance(10_000);
    const tokens = await Promise.all(Array.from({ length: 20 }, () => second.sign(clock.now())));
    await Promise.all(tokens.map((token) => verifyJwt(token, keys, options)));
    expect(fetches()).toBe(2); // twenty concurrent unknown-kid verifications, one fetch
    expect(keys.fetchCount()).toBe(2);
  });

  it("answers an unknown kid while the AS is down as the AS being unavailable, also within the cooldown", async () => {
    const clock = createManualClock(Date.now());
    const first = await signingKey("k1");
    const rotated = await signingKey("k2");
    let up = true;
    const keys = createJwksKeySource({
      clock,
      cooldownMs: 10_000,
      fetchJwks: () =>
        up
          ? Promise.resolve({ keys: [first.jwk, rotated.jwk] })
          : Promise.reject(new GatewayError("PG_ERR_AS_UNAVAILABLE", "down")),
    });
    const options = { issuer: ISSUER, algorithms: ["ES256"] as const, clockSkewSeconds: 0, clock };
    const stranger = await signingKey("k3");
    await verifyJwt(await first.sign(clock.now()), keys, options);
    // The AS rotated to k3 and went down: the refetch fails, and so does every new-kid token until it is back.
    up = false;
    clock.advance(10_000);
    for (let i = 0; i < 3; i++) {
      await expect(verifyJwt(await stranger.sign(clock.now()), keys, options)).rejects.toMatchObject({
        code: "PG_ERR_AS_UNAVAILABLE",
      });
      clock.advance(1_000);
    }
    // Known keys keep working meanwhile.
    await expect(verifyJwt(await first.sign(clock.now()), keys, options)).resolves.toBeDefined();
    // Back up (and past the cooldown): a kid it really does not publish is a bad token again.
    up = true;
    clock.advance(10_000);
    await expect(verifyJwt(await stranger.sign(clock.now()), keys, options)).rejects.toMatchObject({
      code: "ERR_JWKS_NO_MATCHING_KEY",
    });
    await expect(verifyJwt(await stranger.sign(clock.now()), keys, options)).rejects.toMatchObject({
      code: "ERR_JWKS_NO_MATCHING_KEY",
    });
  });

  it("keeps verifying with cached keys when a refresh of stale keys fails", async () => {
    const clock = createManualClock(Date.now());
    const key = await signingKey("k1");
    let up = true;
    const keys = createJwksKeySource({
      clock,
      cooldownMs: 1_000,
      maxAgeMs: 60_000,
      fetchJwks: () =>
        up
          ? Promise.resolve({ keys: [key.jwk] })
          : Promise.reject(new GatewayError("PG_ERR_AS_UNAVAILABLE", "down")),
    });
    const options = { issuer: ISSUER, algorithms: ["ES256"] as const, clockSkewSeconds: 0, clock };
    await verifyJwt(await key.sign(clock.now()), keys, options);
    up = false;
    clock.advance(120_000);
    await expect(verifyJwt(await key.sign(clock.now()), keys, options)).resolves.toBeDefined();
    expect(keys.fetchCount()).toBe(2);
  });

  it("without any keys, fails with PG_ERR_AS_UNAVAILABLE and retries only after a pause", async () => {
    const clock = createManualClock(Date.now());
    const key = await signingKey("k1");
    let up = false;
    const keys = createJwksKeySource({
      clock,
      cooldownMs: 30_000,
      fetchJwks: () =>
        up
          ? Promise.resolve({ keys: [key.jwk] })
          : Promise.reject(new GatewayError("PG_ERR_AS_UNAVAILABLE", "down")),
    });
    const options = { issuer: ISSUER, algorithms: ["ES256"] as const, clockSkewSeconds: 0, clock };
    const token = await key.sign(clock.now());
    await expect(verifyJwt(token, keys, options)).rejects.toMatchObject({ code: "PG_ERR_AS_UNAVAILABLE" });
    up = true;
    await expect(verifyJwt(token, keys, options)).rejects.toMatchObject({ code: "PG_ERR_AS_UNAVAILABLE" });
    expect(keys.fetchCount()).toBe(1);
    clock.advance(5_000);
    await expect(verifyJwt(token, keys, options)).resolves.toBeDefined();
  });

  it("rejects a malformed JWKS document as PG_ERR_AS_UNAVAILABLE", async () => {
    const clock = createManualClock(Date.now());
    const key = await signingKey("k1");
    const keys = createJwksKeySource({
      clock,
      cooldownMs: 0,
      fetchJwks: () => Promise.resolve({ keys: "nope" }),
    });
    await expect(
      verifyJwt(await key.sign(clock.now()), keys, {
        issuer: ISSUER,
        algorithms: ["ES256"],
        clockSkewSeconds: 0,
        clock,
      }),
    ).rejects.toMatchObject({ code: "PG_ERR_AS_UNAVAILABLE", reason: "JWKS document is malformed" });
  });

  it("uses the injected clock for exp, with the allowed skew", async () => {
    const clock = createManualClock(Date.now());
    const key = await signingKey("k1");
    const keys = createJwksKeySource({
      clock,
      cooldownMs: 0,
      fetchJwks: () => Promise.resolve({ keys: [key.jwk] }),
    });
    const token = await key.sign(clock.now());
    const options = { issuer: ISSUER, algorithms: ["ES256"] as const, clockSkewSeconds: 30, clock };
    clock.advance(300_000 + 29_000);
    await expect(verifyJwt(token, keys, options)).resolves.toBeDefined();
    clock.advance(2_000);
    await expect(verifyJwt(token, keys, options)).rejects.toMatchObject({ code: "ERR_JWT_EXPIRED" });
  });
});

describe("verifyJwt with a JWT that names no kid", () => {
  it("tries each key of the algorithm while the AS publishes two (a rotation); a wrong signature still fails", async () => {
    const clock = createManualClock(Date.now());
    const old = await signingKey("old");
    const fresh = await signingKey("fresh");
    const stranger = await signingKey("stranger");
    const keys = createJwksKeySource({
      clock,
      cooldownMs: 30_000,
      fetchJwks: () => Promise.resolve({ keys: [old.jwk, fresh.jwk] }),
    });
    const options = { issuer: ISSUER, algorithms: ["ES256"] as const, clockSkewSeconds: 0, clock };
    for (const key of [old, fresh]) {
      const { payload, protectedHeader } = await verifyJwt(
        await key.signWithoutKid(clock.now()),
        keys,
        options,
      );
      expect(protectedHeader.kid).toBeUndefined();
      expect(payload.sub).toBe("alice");
    }
    await expect(verifyJwt(await stranger.signWithoutKid(clock.now()), keys, options)).rejects.toMatchObject({
      code: "ERR_JWS_SIGNATURE_VERIFICATION_FAILED",
    });
  });
});

describe("isAccessTokenTyp", () => {
  it("refetches once for a JWT without kid that the held keys do not verify (the AS replaced its key)", async () => {
    const clock = createManualClock(Date.now());
    const oldKey = await signingKey("old");
    const newKey = await signingKey("new");
    let published: JWK[] = [oldKey.jwk];
    const { keys, fetches } = publishedKeys(clock, () => published);
    const options = { issuer: ISSUER, algorithms: ["ES256"] as const, clockSkewSeconds: 0, clock };
    await verifyJwt(await oldKey.signWithoutKid(clock.now()), keys, options);
    expect(fetches()).toBe(1);
    published = [newKey.jwk];
    clock.advance(11_000);
    await expect(verifyJwt(await newKey.signWithoutKid(clock.now()), keys, options)).resolves.toMatchObject({
      payload: { sub: "alice" },
    });
    expect(fetches()).toBe(2);
    // A forged kid-less token sets off no more than one fetch per cooldown.
    const stranger = await signingKey("stranger");
    for (let i = 0; i < 3; i++) {
      await expect(
        verifyJwt(await stranger.signWithoutKid(clock.now()), keys, options),
      ).rejects.toMatchObject({
        code: "ERR_JWS_SIGNATURE_VERIFICATION_FAILED",
      });
    }
    expect(fetches()).toBe(2);
  });

  it("answers a key the runtime cannot import (corrupt material) as the AS being unavailable, not a bad token", async () => {
    const clock = createManualClock(Date.now());
    const key = await signingKey("k1");
    const keys = createJwksKeySource({
      clock,
      cooldownMs: 10_000,
      fetchJwks: () => Promise.resolve({ keys: [{ ...key.jwk, x: "AAAA" }] }),
    });
    const error = await verifyJwt(await key.sign(clock.now()), keys, {
      issuer: ISSUER,
      algorithms: ["ES256"],
      clockSkewSeconds: 0,
      clock,
    }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(GatewayError);
    expect(error).toMatchObject({ code: "PG_ERR_AS_UNAVAILABLE" });
  });

  it("refreshes stale keys in the background: a hung JWKS endpoint delays no verification", async () => {
    const clock = createManualClock(Date.now());
    const key = await signingKey("k1");
    let fetches = 0;
    const keys = createJwksKeySource({
      clock,
      cooldownMs: 10_000,
      maxAgeMs: 60_000,
      fetchJwks: () => {
        fetches += 1;
        // The first fetch answers; every later one hangs, as an AS that stopped answering.
        return fetches === 1 ? Promise.resolve({ keys: [key.jwk] }) : new Promise<never>(() => undefined);
      },
    });
    const options = { issuer: ISSUER, algorithms: ["ES256"] as const, clockSkewSeconds: 0, clock };
    await verifyJwt(await key.sign(clock.now()), keys, options);
    clock.advance(61_000);
    await expect(verifyJwt(await key.sign(clock.now()), keys, options)).resolves.toMatchObject({
      payload: { sub: "alice" },
    });
    expect(fetches).toBe(2);
  });

  it("accepts absent, JWT and at+jwt; refuses other explicit types", () => {
    for (const typ of [undefined, "JWT", "at+jwt", "application/at+JWT"])
      expect(isAccessTokenTyp(typ)).toBe(true);
    for (const typ of ["token-introspection+jwt", "logout+jwt", "dpop+jwt"])
      expect(isAccessTokenTyp(typ)).toBe(false);
  });

  it("strict (requireAccessTokenTyp): only at+jwt, in either spelling", () => {
    for (const typ of ["at+jwt", "AT+JWT", "application/at+jwt"])
      expect(isAccessTokenTyp(typ, true)).toBe(true);
    for (const typ of [undefined, "JWT", "application/jwt", "token-introspection+jwt", "at+jwtx"])
      expect(isAccessTokenTyp(typ, true), String(typ)).toBe(false);
  });
});
