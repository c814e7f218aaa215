// The caching TokenReviewer over a mock API server (a stand-in for kube-apiserver's review endpoints; the real
// ones are exercised in test/k8s/distribution.test.ts): audience checks, positive-only caching keyed by token
// fingerprint, expiry, timeouts, and errors that never carry the token.
import { describe, expect, it } from "vitest";
import {
  ReviewUnavailableError,
  createCachingTokenReviewer,
  type ReviewBackend,
} from "../../src/operator/kube/reviews.ts";
import { createManualClock } from "../../src/tokens/clock.ts";

type TokenAnswer = Awaited<ReturnType<ReviewBackend["tokenReview"]>>;

function mockApiServer(
  answer: (token: string, audiences: readonly string[]) => TokenAnswer | Promise<TokenAnswer>,
) {
  const calls = {
    tokenReviews: [] as string[][],
    accessReviews: [] as Parameters<ReviewBackend["subjectAccessReview"]>[0][],
  };
  let allowed = false;
  const backend: ReviewBackend = {
    async tokenReview(token, audiences) {
      calls.tokenReviews.push([...audiences]);
      return answer(token, audiences);
    },
    async subjectAccessReview(spec) {
      calls.accessReviews.push(spec);
      return Promise.resolve(allowed);
    },
  };
  return { backend, calls, allow: (value: boolean) => (allowed = value) };
}

const gatewayUser = { username: "system:serviceaccount:pg:gateway", groups: ["system:serviceaccounts"] };
const accepted = (audiences: readonly string[]): TokenAnswer => ({
  authenticated: true,
  audiences,
  ...gatewayUser,
});

function jwtWithExp(expSeconds: number): string {
  const part = (value: object): string => Buffer.from(JSON.stringify(value)).toString("base64url");
  return `${part({ alg: "RS256" })}.${part({ exp: expSeconds })}.sig`;
}

describe("createCachingTokenReviewer", () => {
  it("accepts a token the API server authenticates for our audience, and reuses the answer", async () => {
    const api = mockApiServer((_t, audiences) => accepted(audiences));
    const reviewer = createCachingTokenReviewer(api.backend);
    const first = await reviewer.reviewToken("token-1", ["phantomgate"]);
    expect(first).toEqual({ authenticated: true, ...gatewayUser });
    await reviewer.reviewToken("token-1", ["phantomgate"]);
    expect(api.calls.tokenReviews).toEqual([["phantomgate"]]);
    await reviewer.reviewToken("token-2", ["phantomgate"]);
    await reviewer.reviewToken("token-1", ["other"]);
    expect(api.calls.tokenReviews).toHaveLength(3);
  });

  it("rejects a token authenticated without our audience (an audience-unaware authenticator)", async () => {
    const api = mockApiServer(() => ({ authenticated: true, audiences: [], ...gatewayUser }));
    const result = await createCachingTokenReviewer(api.backend).reviewToken("t", ["phantomgate"]);
    expect(result).toEqual({ authenticated: false, error: "token is not valid for this audience" });
  });

  it("never caches a rejection", async () => {
    let ok = false;
    const api = mockApiServer((_t, audiences) =>
      ok ? accepted(audiences) : { authenticated: false, audiences: [], error: "invalid bearer token" },
    );
    const reviewer = createCachingTokenReviewer(api.backend);
    expect(await reviewer.reviewToken("t", ["phantomgate"])).toEqual({
      authenticated: false,
      error: "invalid bearer token",
    });
    ok = true;
    expect((await reviewer.reviewToken("t", ["phantomgate"])).authenticated).toBe(true);
    expect(api.calls.tokenReviews).toHaveLength(2);
  });

  it("expires cached answers after the TTL, and no later than the token's exp", async () => {
    const clock = createManualClock();
    const api = mockApiServer((_t, audiences) => accepted(audiences));
    const reviewer = createCachingTokenReviewer(api.backend, { clock, cacheTtlMs: 30_000 });
    await reviewer.reviewToken("t", ["phantomgate"]);
    clock.advance(29_000);
    await reviewer.reviewToken("t", ["phantomgate"]);
    expect(api.calls.tokenReviews).toHaveLength(1);
    clock.advance(2_000);
    await reviewer.reviewToken("t", ["phantomgate"]);
    expect(api.calls.tokenReviews).toHaveLength(2);

    const soon = jwtWithExp(Math.floor(clock.now() / 1000) + 5);
    await reviewer.reviewToken(soon, ["phantomgate"]);
    clock.advance(6_000);
    await reviewer.reviewToken(soon, ["phantomgate"]);
    expect(api.calls.tokenReviews).toHaveLength(4);
  });

  it("reports an API server that fails or hangs as unavailable, without the token in the message", async () => {
    const secret = "very-secret-token-value";
    const failing = mockApiServer(() => {
      throw Object.assign(new Error(`request with ${secret} failed`), { code: "ECONNREFUSED" });
    });
    const error = await createCachingTokenReviewer(failing.backend)
      .reviewToken(secret, ["phantomgate"])
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ReviewUnavailableError);
    expect((error as Error).message).toBe("TokenReview: API server unreachable (ECONNREFUSED)");
    expect((error as Error).message).not.toContain(secret);

    const hanging = mockApiServer(() => new Promise<never>(() => undefined));
    await expect(
      createCachingTokenReviewer(hanging.backend, { timeoutMs: 20 }).reviewToken(secret, ["phantomgate"]),
    ).rejects.toThrow(/did not answer within 20 ms/);
  });

  it("asks a SubjectAccessReview for create on revocations.phantomgate.dev and caches only a yes", async () => {
    const clock = createManualClock();
    const api = mockApiServer((_t, audiences) => accepted(audiences));
    const reviewer = createCachingTokenReviewer(api.backend, { clock, revocationNamespace: "phantomgate" });
    expect(await reviewer.canCreateRevocations("alice", ["dev", "admins"])).toBe(false);
    api.allow(true);
    expect(await reviewer.canCreateRevocations("alice", ["admins", "dev"])).toBe(true);
    expect(await reviewer.canCreateRevocations("alice", ["dev", "admins"])).toBe(true);
    expect(api.calls.accessReviews).toHaveLength(2);
    expect(api.calls.accessReviews[0]).toEqual({
      user: "alice",
      groups: ["dev", "admins"],
      namespace: "phantomgate",
      verb: "create",
      group: "phantomgate.dev",
      resource: "revocations",
    });
    clock.advance(31_000);
    api.allow(false);
    expect(await reviewer.canCreateRevocations("alice", ["dev", "admins"])).toBe(false);
  });
});
