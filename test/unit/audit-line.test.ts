// The hand-written audit serialiser must give exactly what JSON.stringify gives for the same record, for any
// values a client or an authorization server could put into one.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { auditLine, BATCH_BYTES, createAuditSink, type AuditRecord } from "../../src/gateway/audit/audit.ts";
import { createRandom } from "../helpers/random.ts";

const awkward = [
  "",
  "plain",
  'quote " and backslash \\',
  "newline\n tab\t cr\r",
  "\u0000\u001f control",
  "unicode ü € 😀",
  "lone surrogate \ud800",
  "</script>",
  "api.example.com:8443",
];

function expected(record: AuditRecord): string {
  return `{"type":"audit",${JSON.stringify(record).slice(1)}\n`;
}

describe("auditLine", () => {
  it("matches JSON.stringify on a typical record", () => {
    const record: AuditRecord = {
      time: "2026-11-30T12:00:00.000Z",
      requestId: "4f0c0a4e-6c55-4c0e-9d8f-1b2c3d4e5f60",
      traceId: "0af7651916cd43dd8448eb211c80319c",
      remoteAddress: "::ffff:127.0.0.1",
      host: "api.example.com",
      method: "GET",
      route: "default/invoices#0",
      pathTemplate: "/invoices/**",
      authMode: "phantom",
      clientId: "web-app",
      sub: "alice",
      scopes: ["read_invoice", "openid"],
      tokenFingerprint: "b5f3c2a1d4e6f7089a1b2c3d4e5f6071",
      cache: "hit",
      decision: "allow",
      reason: "ok",
      status: 200,
      upstreamStatus: 200,
      latencyMs: 1.234,
    };
    expect(auditLine(record)).toBe(expected(record));
    expect(JSON.parse(auditLine(record))).toEqual({ type: "audit", ...record });
  });

  it("matches JSON.stringify on 20,000 random records with missing fields and awkward strings", () => {
    const random = createRandom(7);
    const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
    const maybe = <T>(value: T): T | undefined => (random() < 0.3 ? undefined : value);
    for (let i = 0; i < 20_000; i++) {
      const record: AuditRecord = {
        time: new Date(Math.floor(random() * 2e12)).toISOString(),
        requestId: pick(awkward),
        traceId: pick(awkward),
        remoteAddress: maybe(pick(awkward)),
        host: maybe(pick(awkward)),
        method: pick(["GET", "POST", "", "M-SEARCH"]),
        route: maybe(pick(awkward)),
        pathTemplate: maybe(pick(awkward)),
        authMode: maybe(pick(["phantom", "jwt", "none"])),
        clientId: maybe(pick(awkward)),
        sub: maybe(pick(awkward)),
        scopes: maybe(Array.from({ length: Math.floor(random() * 4) }, () => pick(awkward))),
        tokenFingerprint: maybe(pick(awkward)),
        cache: maybe(pick(["hit", "miss"] as const)),
        decision: pick(["allow", "deny", "error"] as const),
        reason: pick(awkward),
        status: pick([0, 200, 401, 503]),
        upstreamStatus: maybe(pick([200, 204, 500])),
        latencyMs:
          random() < 0.5
            ? pick([
                0,
                0.001,
                0.01,
                0.1,
                12.5,
                1.005,
                1e21,
                2 ** 42 / 1000,
                Number.NaN,
                Number.POSITIVE_INFINITY,
                -0,
                -1.5,
                1e-7,
              ])
            : Math.round(random() * 10 ** Math.floor(random() * 12)) / 1000,
      };
      expect(auditLine(record)).toBe(expected(record));
    }
  });

  it("writes every line whole and in order through the batches, also lines larger than a batch", async () => {
    const dir = mkdtempSync(join(tmpdir(), "phantomgate-audit-"));
    try {
      const file = join(dir, "audit.log");
      const sink = createAuditSink(file);
      const random = createRandom(11);
      const records: AuditRecord[] = [];
      for (let i = 0; i < 3000; i++) {
        // Every 500th subject is larger than a whole batch; every 7th needs escaping.
        const sub =
          i % 500 === 499 ? "s".repeat(BATCH_BYTES + 10) : i % 7 === 0 ? `user "${i}" \u00e9\n` : `user-${i}`;
        const record: AuditRecord = {
          time: new Date(1_700_000_000_000 + i).toISOString(),
          requestId: `request-${i}`,
          traceId: Math.floor(random() * 1e16).toString(16),
          remoteAddress: "127.0.0.1",
          host: "api.example.com",
          method: "GET",
          route: "default/invoices#0",
          pathTemplate: "/invoices/**",
          authMode: "phantom",
          clientId: "web-app",
          sub,
          scopes: ["read_invoice"],
          tokenFingerprint: "b5f3c2a1d4e6f708",
          cache: "hit",
          decision: "allow",
          reason: "ok",
          status: 200,
          upstreamStatus: 200,
          latencyMs: Math.round(random() * 1e6) / 1000,
        };
        records.push(record);
        sink.write(record);
      }
      await sink.flush();
      const lines = readFileSync(file, "utf8").split("\n");
      expect(lines.pop()).toBe("");
      expect(lines).toHaveLength(records.length);
      lines.forEach((line, i) => {
        expect(`${line}\n`).toBe(expected(records[i]!));
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
