// The stream's wire contract: NDJSON framing both ways, message and body schemas, ServiceAccount names.
import { describe, expect, it } from "vitest";
import {
  DEFAULT_LIVENESS_TIMEOUT_MS,
  HEARTBEAT_LINE,
  LineTooLongError,
  ackBodySchema,
  createLineSplitter,
  encodeStreamMessage,
  heartbeatIntervalFor,
  parseHeartbeatInterval,
  revocationBodySchema,
  serviceAccountOf,
  streamMessageSchema,
} from "../../src/operator/distribute/protocol.ts";
import { fingerprintToken } from "../../src/tokens/fingerprint.ts";
import type { Snapshot } from "../../src/snapshot/snapshot.ts";

const snapshot: Snapshot = { revision: "0123456789abcdef", authServers: [], routes: [] };

function collect(maxLineChars = 1_000_000): { lines: string[]; push: (text: string) => void } {
  const lines: string[] = [];
  const splitter = createLineSplitter((line) => lines.push(line), maxLineChars);
  return { lines, push: (text) => splitter.push(text) };
}

describe("encodeStreamMessage", () => {
  it("writes one JSON object and exactly one newline, also when strings hold newlines", () => {
    const line = encodeStreamMessage({
      type: "snapshot",
      snapshot: { ...snapshot, routes: [], authServers: [] },
    });
    expect(line.endsWith("\n")).toBe(true);
    expect(line.indexOf("\n")).toBe(line.length - 1);
    const tricky = encodeStreamMessage({ type: "revoke", fingerprints: ["a\nb", "c\r\nd"] });
    expect(tricky.indexOf("\n")).toBe(tricky.length - 1);
    expect(JSON.parse(tricky)).toEqual({ type: "revoke", fingerprints: ["a\nb", "c\r\nd"] });
  });
});

describe("createLineSplitter", () => {
  it("joins a line split over many chunks and splits many lines in one chunk", () => {
    const { lines, push } = collect();
    const first = encodeStreamMessage({ type: "snapshot", snapshot });
    for (const char of first) push(char);
    push(`${encodeStreamMessage({ type: "ping" })}${encodeStreamMessage({ type: "ping" })}{"type":`);
    push('"ping"}\n');
    expect(lines.map((l) => (JSON.parse(l) as { type: string }).type)).toEqual([
      "snapshot",
      "ping",
      "ping",
      "ping",
    ]);
  });

  it("skips empty lines and accepts CRLF", () => {
    const { lines, push } = collect();
    push('\n\n{"type":"ping"}\r\n\r\n');
    expect(lines).toEqual(['{"type":"ping"}']);
  });

  it("keeps an unterminated line until its newline arrives", () => {
    const lines: string[] = [];
    const splitter = createLineSplitter((line) => lines.push(line), 100);
    splitter.push('{"type":');
    expect(lines).toEqual([]);
    expect(splitter.pending()).toBe(8);
    splitter.push('"ping"}\n');
    expect(lines).toEqual(['{"type":"ping"}']);
    expect(splitter.pending()).toBe(0);
  });

  it("refuses a line longer than its bound, terminated or not", () => {
    expect(() => collect(10).push(`${"x".repeat(11)}\n`)).toThrow(LineTooLongError);
    const { push } = collect(10);
    push("x".repeat(6));
    expect(() => push("x".repeat(6))).toThrow(LineTooLongError);
  });

  it("with a streaming TextDecoder, survives a multi-byte character cut between chunks", () => {
    const { lines, push } = collect();
    const bytes = Buffer.from('{"type":"revoke","fingerprints":["ünïcødé"]}\n', "utf8");
    const decoder = new TextDecoder("utf-8");
    const cut = bytes.indexOf(0xc3) + 1; // inside the two-byte ü
    push(decoder.decode(bytes.subarray(0, cut), { stream: true }));
    push(decoder.decode(bytes.subarray(cut), { stream: true }));
    expect(JSON.parse(lines[0]!)).toEqual({ type: "revoke", fingerprints: ["ünïcødé"] });
  });
});

describe("message schemas", () => {
  it("accepts the three stream messages and leaves the snapshot body to snapshotSchema", () => {
    expect(streamMessageSchema.parse({ type: "ping" })).toEqual({ type: "ping" });
    expect(streamMessageSchema.parse({ type: "snapshot", snapshot: { anything: 1 } })).toEqual({
      type: "snapshot",
      snapshot: { anything: 1 },
    });
    expect(streamMessageSchema.safeParse({ type: "revoke", fingerprints: ["x"] }).success).toBe(true);
    expect(streamMessageSchema.safeParse({ type: "teleport" }).success).toBe(false);
  });

  it("validates ACK bodies", () => {
    expect(ackBodySchema.safeParse({ gateway: "gw-1", revision: "abc", status: "ACK" }).success).toBe(true);
    expect(
      ackBodySchema.safeParse({ gateway: "gw-1", revision: "abc", status: "NACK", reason: "bad" }).success,
    ).toBe(true);
    expect(ackBodySchema.safeParse({ gateway: "gw 1", revision: "abc", status: "ACK" }).success).toBe(false);
    expect(ackBodySchema.safeParse({ gateway: "gw-1", revision: "abc", status: "MAYBE" }).success).toBe(
      false,
    );
    expect(
      ackBodySchema.safeParse({ gateway: "gw-1", revision: "abc", status: "ACK", extra: 1 }).success,
    ).toBe(false);
  });

  it("validates revocation bodies without quoting a token in its errors", () => {
    const fingerprint = fingerprintToken("some-token");
    expect(revocationBodySchema.safeParse({ fingerprints: [fingerprint] }).success).toBe(true);
    expect(revocationBodySchema.safeParse({ tokens: ["opaque"] }).success).toBe(true);
    expect(revocationBodySchema.safeParse({}).success).toBe(false);
    expect(revocationBodySchema.safeParse({ fingerprints: [] }).success).toBe(false);
    expect(revocationBodySchema.safeParse({ fingerprints: ["not-a-fingerprint"] }).success).toBe(false);
    const secret = `secret-${"s".repeat(20_000)}`;
    const tooLong = revocationBodySchema.safeParse({ tokens: [secret] });
    expect(tooLong.success).toBe(false);
    expect(JSON.stringify(tooLong.error?.issues)).not.toContain("secret-");
  });

  it("reads ServiceAccount usernames", () => {
    expect(serviceAccountOf("system:serviceaccount:phantomgate:gateway")).toBe("phantomgate:gateway");
    expect(serviceAccountOf("system:serviceaccount:ns:")).toBeUndefined();
    expect(serviceAccountOf("system:serviceaccount:ns:a:b")).toBeUndefined();
    expect(serviceAccountOf("alice")).toBeUndefined();
  });
});

describe("heartbeats", () => {
  it("asks for a heartbeat every third of the liveness timeout: 10 s by default", () => {
    expect(heartbeatIntervalFor(DEFAULT_LIVENESS_TIMEOUT_MS)).toBe(10_000);
    expect(heartbeatIntervalFor(1_500)).toBe(500);
    expect(heartbeatIntervalFor(1)).toBe(1);
  });

  it("reads the interval header, clamped to 100 ms…60 s, and falls back to 10 s without a usable one", () => {
    expect(parseHeartbeatInterval("10000")).toBe(10_000);
    expect(parseHeartbeatInterval(" 250 ")).toBe(250);
    expect(parseHeartbeatInterval(["500", "900"])).toBe(500);
    expect(parseHeartbeatInterval("5")).toBe(100);
    expect(parseHeartbeatInterval("0")).toBe(100);
    expect(parseHeartbeatInterval("3600000")).toBe(60_000);
    for (const unusable of [undefined, [], "", "soon", "-5", "1e4", "12.5", "9".repeat(20)]) {
      expect(parseHeartbeatInterval(unusable)).toBe(10_000);
    }
  });

  it("is one NDJSON line", () => {
    expect(HEARTBEAT_LINE.indexOf("\n")).toBe(HEARTBEAT_LINE.length - 1);
    expect(JSON.parse(HEARTBEAT_LINE)).toEqual({ type: "heartbeat" });
  });
});
