// HTTP helpers of the driver: tokens from the demo AS, one-off requests and Prometheus scrapes.
import { Pool, request } from "undici";

export interface TokenSource {
  /** An opaque access token (or, with `resource`, a JWT access token) for `scope` by client_credentials. */
  token(scope: string, resource?: string): Promise<string>;
  close(): Promise<void>;
}

/** Tokens from the demo AS for `demo-client` over one keep-alive pool. */
export function tokenSource(tokenEndpoint: string, connections = 16): TokenSource {
  const url = new URL(tokenEndpoint);
  const pool = new Pool(url.origin, { connections });
  const authorization = `Basic ${Buffer.from("demo-client:demo-secret").toString("base64")}`;
  return {
    async token(scope, resource) {
      const form = new URLSearchParams({ grant_type: "client_credentials", scope });
      if (resource !== undefined) form.set("resource", resource);
      const response = await pool.request({
        path: url.pathname,
        method: "POST",
        headers: { authorization, "content-type": "application/x-www-form-urlencoded" },
        body: form.toString(),
      });
      const body = (await response.body.json()) as { access_token?: unknown };
      if (typeof body.access_token !== "string") {
        throw new Error(`token request failed (${response.statusCode}): ${JSON.stringify(body)}`);
      }
      return body.access_token;
    },
    close: () => pool.close(),
  };
}

/** Many tokens at once, `concurrency` in flight. */
export async function manyTokens(
  source: TokenSource,
  count: number,
  scope: string,
  concurrency = 16,
): Promise<string[]> {
  const tokens: string[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, count) }, async () => {
      while (next < count) {
        next += 1;
        tokens.push(await source.token(scope));
      }
    }),
  );
  return tokens;
}

/** GET with an optional bearer token; returns status and body text. */
export async function get(url: string, token?: string): Promise<{ status: number; body: string }> {
  const response = await request(url, {
    headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
  });
  return { status: response.statusCode, body: await response.body.text() };
}

/**
 * Sums the samples of one Prometheus metric whose labels contain every `labels` pair (text format 0.0.4).
 * NaN when the metric has no matching sample.
 */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  let found = false;
  for (const line of text.split("\n")) {
    if (!line.startsWith(name)) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)/.exec(line);
    if (match?.[1] !== name) continue;
    const labelText = match[2] ?? "";
    if (!Object.entries(labels).every(([key, value]) => labelText.includes(`${key}="${value}"`))) continue;
    sum += Number(match[3]);
    found = true;
  }
  return found ? sum : Number.NaN;
}

export async function scrape(adminUrl: string): Promise<string> {
  return (await get(`${adminUrl}/metrics`)).body;
}
