// A mock TokenReviewer: it stands in for the Kubernetes API server's TokenReview and SubjectAccessReview in
// tests that run without a cluster. The real reviews are exercised against a real kube-apiserver in
// test/k8s/distribution.test.ts.
import { ReviewUnavailableError, type TokenReviewer } from "../../src/operator/kube/reviews.ts";
import { fingerprintToken } from "../../src/tokens/fingerprint.ts";

export interface MockIdentity {
  readonly username: string;
  readonly groups?: string[];
  /** The audience the token is bound to. Default `phantomgate`. */
  readonly audience?: string;
  /** Whether RBAC would let this identity create revocations. */
  readonly mayRevoke?: boolean;
}

export interface MockApiServerReviewer extends TokenReviewer {
  /** Fingerprints of the tokens reviewed, in order. */
  readonly reviewed: string[];
  /** Makes the "API server" unreachable (reviews reject) until called with false. */
  setDown(down: boolean): void;
  /** Makes every review take `ms` before it answers (0: at once). */
  setDelayMs(ms: number): void;
}

/** Tokens are known by value: `tokens[token]` is who it belongs to; anything else is not authenticated. */
export function mockApiServerReviewer(tokens: Record<string, MockIdentity>): MockApiServerReviewer {
  const reviewed: string[] = [];
  let down = false;
  let delayMs = 0;
  const byUser = new Map(Object.values(tokens).map((identity) => [identity.username, identity]));
  return {
    reviewed,
    setDown(value) {
      down = value;
    },
    setDelayMs(ms) {
      delayMs = ms;
    },
    reviewToken(token, audiences) {
      const answer = (): ReturnType<TokenReviewer["reviewToken"]> => {
        reviewed.push(fingerprintToken(token));
        if (down) return Promise.reject(new ReviewUnavailableError("mock API server is down"));
        const identity = tokens[token];
        if (identity === undefined)
          return Promise.resolve({ authenticated: false, error: "invalid bearer token" });
        if (!audiences.includes(identity.audience ?? "phantomgate")) {
          return Promise.resolve({ authenticated: false, error: "token audiences are invalid" });
        }
        return Promise.resolve({
          authenticated: true,
          username: identity.username,
          groups: identity.groups ?? [],
        });
      };
      if (delayMs === 0) return answer();
      return new Promise((resolve) => setTimeout(resolve, delayMs)).then(answer);
    },
    canCreateRevocations(user) {
      if (down) return Promise.reject(new ReviewUnavailableError("mock API server is down"));
      return Promise.resolve(byUser.get(user)?.mayRevoke === true);
    },
  };
}
