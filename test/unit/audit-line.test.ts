// The hand-written audit serialiser must give exactly what JSON.stringify gives for the same record, for any
// values a client or an authorization server could put into one, with DEL, the C1 controls and U+2028/U+2029
// escaped as well.
import { spawn, spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import {
  auditLine,
  BATCH_BYTES,
  isoTime,
  newAuditTokenMemo,
  openAuditSink,
  type AuditRecord,
} from "../../src/gateway/audit/audit.ts";
import { eventually } from "../helpers/control-plane-gateway.ts";
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
  "del \u007f next-line \u0085 csi \u009b31m separators \u2028\u2029 nbsp \u00a0",
];

function expected(record: AuditRecord): string {
  const json = JSON.stringify(record).replace(
    /[\u007f-\u009f\u2028\u2029]/g,
    (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
  return `{"type":"audit",${json.slice(1)}\n`;
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

  it("escapes DEL, C1 controls and U+2028/U+2029, which JSON.stringify leaves raw, and still reads back the same", () => {
    const host = "evil\u009b31m\u007f\u2028.example";
    const record: AuditRecord = {
      time: "2026-11-30T12:00:00.000Z",
      requestId: "r",
      traceId: "t",
      remoteAddress: undefined,
      host,
      method: "GET",
      route: undefined,
      pathTemplate: undefined,
      authMode: undefined,
      clientId: undefined,
      sub: undefined,
      scopes: undefined,
      tokenFingerprint: undefined,
      cache: undefined,
      decision: "deny",
      reason: "PG_ERR_BAD_REQUEST",
      detail: "bad host \u0085",
      status: 400,
      upstreamStatus: undefined,
      latencyMs: 0,
    };
    const line = auditLine(record);
    expect(line).toContain('"host":"evil\\u009b31m\\u007f\\u2028.example"');
    expect(line).toContain('"detail":"bad host \\u0085"');
    expect(/[\u007f-\u009f\u2028\u2029]/.test(line)).toBe(false);
    expect(JSON.parse(line)).toMatchObject({ host, detail: "bad host \u0085" });
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
        forwardedFor: maybe(pick(awkward)),
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
        detail: maybe(pick(awkward)),
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

  it("matches JSON.stringify when route ids and scope lists come back with the same or other values", () => {
    // The route's fields are kept encoded per route id: an id seen before with other values must be encoded
    // again.
    const random = createRandom(19);
    const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
    const scopeLists = [["read"], [], ["a b", "é"], ["read", "write", "admin"]].map((list) =>
      Object.freeze(list),
    );
    for (let i = 0; i < 20_000; i++) {
      const record: AuditRecord = {
        ...auditRecord(i),
        route: pick(["r1", "r2", undefined]),
        pathTemplate: pick(["/a/**", "/b", undefined]),
        authMode: pick(["phantom", "jwt", undefined]),
        clientId: pick(["web", 'we"b', undefined]),
        sub: pick(["alice", "bob\n", undefined]),
        scopes: pick([...scopeLists, undefined]),
        tokenFingerprint: pick(["fp1", "fp2", undefined]),
      };
      expect(auditLine(record)).toBe(expected(record));
    }
  });

  it("matches JSON.stringify when a token memo sees the same, equal or other token fields", () => {
    // A connection's memo keeps the last token fields encoded: equal values (also in another array) reuse them,
    // any other value must be encoded again, and the line must never carry another request's fields.
    const random = createRandom(23);
    const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
    const memos = [newAuditTokenMemo(), newAuditTokenMemo()];
    const shared = Object.freeze(["read", "write"]);
    let reused = 0;
    for (let i = 0; i < 20_000; i++) {
      const memo = pick(memos);
      const before = memo.bytes;
      const record: AuditRecord = {
        ...auditRecord(i),
        clientId: pick(["web", 'we"b', undefined]),
        sub: pick(["alice", "bob\n", "alice ", undefined]),
        scopes: pick([shared, ["read", "write"], ["read"], ["write", "read"], [], undefined]),
        tokenFingerprint: pick(["fp1", "fp2", undefined]),
      };
      expect(auditLine(record, memo)).toBe(expected(record));
      if (before !== undefined && memo.bytes === before) reused += 1;
    }
    // The memo was reused often enough for the comparison to be exercised both ways.
    expect(reused).toBeGreaterThan(100);
    expect(reused).toBeLessThan(19_000);
  });

  it("writes every line whole and in order through the batches (recycled ones too), also lines larger than a batch", async () => {
    const dir = mkdtempSync(join(tmpdir(), "phantomgate-audit-"));
    try {
      const file = join(dir, "audit.log");
      const sink = await openAuditSink(file);
      const random = createRandom(11);
      const records: AuditRecord[] = [];
      for (let i = 0; i < 3000; i++) {
        // Every 500th subject is larger than a whole batch; every 7th needs escaping.
        const sub =
          i % 500 === 499 ? "s".repeat(BATCH_BYTES + 10) : i % 7 === 0 ? `user "${i}" \u00e9\n` : `user-${i}`;
        const record: AuditRecord = {
          ...auditRecord(i),
          traceId: Math.floor(random() * 1e16).toString(16),
          sub,
          latencyMs: Math.round(random() * 1e6) / 1000,
        };
        records.push(record);
        sink.write(record);
        // Let writes complete now and then, so later batches go into recycled buffers while others still wait.
        if (i % 400 === 0) await new Promise((resolve) => setTimeout(resolve, 1));
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

/** A typical cache-hit line, numbered `i`. */
function auditRecord(i: number): AuditRecord {
  return {
    time: new Date(1_700_000_000_000 + i).toISOString(),
    requestId: `request-${i}`,
    traceId: "0af7651916cd43dd8448eb211c80319c",
    remoteAddress: "127.0.0.1",
    host: "api.example.com",
    method: "GET",
    route: "default/invoices#0",
    pathTemplate: "/invoices/**",
    authMode: "phantom",
    clientId: "web-app",
    sub: `user-${i}`,
    scopes: ["read_invoice"],
    tokenFingerprint: "b5f3c2a1d4e6f708",
    cache: "hit",
    decision: "allow",
    reason: "ok",
    status: 200,
    upstreamStatus: 200,
    latencyMs: 1.25,
  };
}

describe("isoTime", () => {
  const check = (ms: number): void => {
    expect(isoTime(ms)).toBe(new Date(ms).toISOString());
  };

  it("gives Date#toISOString across millisecond, second, day and year boundaries, in any order", () => {
    const start = Date.UTC(2026, 11, 31, 23, 59, 59, 990);
    for (let ms = start; ms < start + 30; ms++) check(ms);
    // The same millisecond twice, then back in time (the clock was set back), then forward again.
    check(start + 29);
    check(start);
    check(start - 1_000);
    check(start + 5_000);
  });

  it("gives Date#toISOString for random times, before 1970 and past year 9999 too", () => {
    const random = createRandom(23);
    for (let i = 0; i < 2_000; i++) check(Math.floor((random() * 2 - 1) * 8.64e15));
    for (const ms of [
      0, -1, 999, 1_000, -1_000, -1_001, 253_402_300_799_999, 253_402_300_800_000, 8.64e15, -8.64e15,
    ])
      check(ms);
  });
});

describe("audit targets that fail", () => {
  it("refuses to open a path it cannot write, naming it", async () => {
    const dir = mkdtempSync(join(tmpdir(), "phantomgate-audit-"));
    try {
      writeFileSync(join(dir, "a-file"), "");
      // A directory where a file is, and a file where a directory is.
      await expect(openAuditSink(dir)).rejects.toThrow(`cannot open the audit log ${dir}: EISDIR`);
      await expect(openAuditSink(join(dir, "a-file", "audit.log"))).rejects.toThrow(/ENOTDIR|EEXIST/);
      if (process.getuid?.() !== 0) {
        chmodSync(dir, 0o500);
        await expect(openAuditSink(join(dir, "audit.log"))).rejects.toThrow(/EACCES/);
      }
    } finally {
      chmodSync(dir, 0o700);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("reports a reader that went away (EPIPE) instead of crashing, and still flushes at shutdown", async () => {
    const dir = mkdtempSync(join(tmpdir(), "phantomgate-audit-"));
    try {
      const fifo = join(dir, "audit.fifo");
      expect(spawnSync("mkfifo", [fifo]).status).toBe(0);
      const reader = spawn("head", ["-c", "1000", fifo], { stdio: ["ignore", "ignore", "inherit"] });
      const errors: string[] = [];
      const sink = await openAuditSink(fifo, { onError: (error) => errors.push(error.code ?? "") });
      // The reader takes 1,000 bytes and exits: the writes after that hit a pipe with no reader.
      for (let i = 0; i < 2000; i++) sink.write(auditRecord(i));
      await new Promise<void>((resolve) => reader.once("exit", () => resolve()));
      for (let i = 0; i < 200 && !errors.includes("EPIPE"); i++) {
        for (let j = 0; j < 200; j++) sink.write(auditRecord(j));
        await new Promise((resolve) => setTimeout(resolve, 120));
      }
      expect(errors).toContain("EPIPE");
      await sink.flush();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("keeps the lines of a failing disk and writes them, whole and in order, once it has room again", async () => {
    // A full disk, simulated with the file size limit of a child process running the sink: writes past the limit
    // fail with EFBIG (Node ignores SIGXFSZ), as they would with ENOSPC, until the limit is raised again.
    const dir = mkdtempSync(join(tmpdir(), "phantomgate-audit-"));
    const file = join(dir, "audit.log");
    const audit = new URL("../../src/gateway/audit/audit.ts", import.meta.url).pathname;
    const script = `
      const { openAuditSink } = await import(${JSON.stringify(audit)});
      const sink = await openAuditSink(${JSON.stringify(file)}, {
        onError: (error) => process.stdout.write("error " + error.code + "\\n"),
      });
      let next = 0;
      const base = ${JSON.stringify(auditRecord(0))};
      process.stdin.setEncoding("utf8").on("data", (text) => {
        for (let n = Number(text.trim()); n > 0; n--, next++) sink.write({ ...base, requestId: "request-" + next });
      });
      process.stdin.on("end", () => sink.flush().then(() => process.stdout.write("flushed\\n")));
      process.stdout.write("ready\\n");
    `;
    const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
      stdio: ["pipe", "pipe", "inherit"],
    });
    let output = "";
    child.stdout.setEncoding("utf8").on("data", (text: string) => (output += text));
    const waitFor = (text: string): Promise<void> => eventually(() => output.includes(text), 5_000, text);
    const limit = (soft: string): void => {
      const result = spawnSync("prlimit", ["--pid", String(child.pid), `--fsize=${soft}:`], {
        encoding: "utf8",
      });
      expect(result.status, result.stderr).toBe(0);
    };
    try {
      await waitFor("ready");
      limit("100000");
      child.stdin.write("2000\n"); // ~800 KB of lines against 100 KB of room
      await waitFor("error EFBIG");
      // Past the flush interval: every line has been handed to the writer, and no write is left to come.
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(statSync(file).size).toBeLessThanOrEqual(100_000);
      limit("unlimited");
      // The sink offers the kept bytes again about once a second; then new lines follow.
      // Written by the sink's own retry: no new line was written since the limit was raised.
      await eventually(() => statSync(file).size > 100_000, 5_000, "the kept lines written");
      child.stdin.end("100\n");
      await waitFor("flushed");
      const lines = readFileSync(file, "utf8").split("\n");
      expect(lines.pop()).toBe("");
      expect(lines).toHaveLength(2100);
      lines.forEach((line, i) => {
        expect(`${line}\n`).toBe(expected({ ...auditRecord(0), requestId: `request-${i}` }));
      });
    } finally {
      child.kill("SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("drops and counts lines beyond the pending limit when the reader stalls, instead of growing memory", async () => {
    const dir = mkdtempSync(join(tmpdir(), "phantomgate-audit-"));
    // A reader that opens the pipe and never reads: the pipe fills and every later write waits.
    const fifo = join(dir, "audit.fifo");
    expect(spawnSync("mkfifo", [fifo]).status).toBe(0);
    const reader = spawn("sh", ["-c", `exec 3<"${fifo}"; sleep 60`], { stdio: "ignore" });
    try {
      let dropped = 0;
      const sink = await openAuditSink(fifo, {
        maxPendingBytes: 1024 * 1024,
        onDrop: (lines) => (dropped += lines),
      });
      const total = 20_000; // ~9 MB of lines against 1 MiB allowed to wait
      for (let i = 0; i < total; i++) sink.write(auditRecord(i));
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(dropped).toBeGreaterThan(total * 0.8);
      expect(dropped).toBeLessThan(total);
    } finally {
      reader.kill("SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
