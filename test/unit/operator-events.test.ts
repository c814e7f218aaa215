// Events as the operator writes them: notes within the API server's 1024-byte limit (bytes, not characters),
// names that are valid DNS subdomains, and a failed write logged with the kind of the object.
import pino from "pino";
import { describe, expect, it } from "vitest";
import type { KubeClient, KubeRequest, KubeStream } from "../../src/operator/kube/kube-client.ts";
import {
  createEventRecorder,
  eventName,
  maxNoteBytes,
  truncateNote,
} from "../../src/operator/status/events.ts";

const bytes = (text: string): number => Buffer.byteLength(text, "utf8");

class RecordingClient implements KubeClient {
  readonly server = "https://recording";
  readonly requests: KubeRequest[] = [];
  private readonly failWith: Error | undefined;
  constructor(failWith?: Error) {
    this.failWith = failWith;
  }
  request<T>(call: KubeRequest): Promise<T> {
    this.requests.push(call);
    return this.failWith === undefined ? Promise.resolve({} as T) : Promise.reject(this.failWith);
  }
  stream(): Promise<KubeStream> {
    return Promise.reject(new Error("no watches here"));
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

describe("truncateNote", () => {
  it("keeps a note of at most 1024 bytes as it is", () => {
    const note = "a".repeat(maxNoteBytes);
    expect(truncateNote(note)).toBe(note);
    expect(truncateNote("route → backend")).toBe("route → backend");
  });

  it("cuts a long ASCII note to 1024 bytes ending in '...'", () => {
    const cut = truncateNote("x".repeat(5000));
    expect(bytes(cut)).toBe(maxNoteBytes);
    expect(cut.endsWith("x...")).toBe(true);
  });

  it("counts UTF-8 bytes: 1024 characters of '→' are 3072 bytes", () => {
    const note = "→".repeat(maxNoteBytes);
    const cut = truncateNote(note);
    expect(bytes(cut)).toBeLessThanOrEqual(maxNoteBytes);
    expect(cut).toBe(`${"→".repeat(340)}...`);
  });

  it("never splits a character, also one of two UTF-16 units", () => {
    for (let offset = 0; offset < 4; offset++) {
      const note = `${"a".repeat(offset)}${"😀é→".repeat(400)}`;
      const cut = truncateNote(note);
      expect(bytes(cut)).toBeLessThanOrEqual(maxNoteBytes);
      expect(bytes(cut)).toBeGreaterThan(maxNoteBytes - 7);
      expect(cut.endsWith("...")).toBe(true);
      const kept = cut.slice(0, -3);
      expect(note.startsWith(kept)).toBe(true);
      expect(Buffer.from(kept, "utf8").toString("utf8")).toBe(kept); // no lone surrogate
      expect(kept.isWellFormed()).toBe(true);
    }
  });
});

describe("eventName", () => {
  const dnsSubdomain = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

  it("is the object's name, a dot and the suffix", () => {
    expect(eventName("orders", "18f0a1b2c3")).toBe("orders.18f0a1b2c3");
  });

  it("drops a '-' or '.' that would end the name's prefix", () => {
    for (const tail of ["-", ".", "-.-", "a-", "a."]) {
      const name = `${"r".repeat(200 - tail.length)}${tail}rest`;
      const event = eventName(name, "18f0a1b2c3");
      expect(event).toMatch(dnsSubdomain);
      expect(event.length).toBeLessThanOrEqual(253);
    }
    expect(eventName(`${"r".repeat(199)}-x`, "1")).toBe(`${"r".repeat(199)}.1`);
  });
});

describe("event recorder", () => {
  const subject = {
    apiVersion: "phantomgate.dev/v1alpha1",
    kind: "ApiRoute",
    namespace: "default",
    name: "orders",
  };

  it("writes a note of at most 1024 bytes", async () => {
    const client = new RecordingClient();
    const recorder = createEventRecorder({ client, identity: "op-0", logger: pino({ level: "silent" }) });
    await recorder.record(subject, {
      type: "Warning",
      reason: "UnknownScope",
      action: "Compile",
      note: "scope → ".repeat(300),
    });
    const body = client.requests[0]?.body as { note: string; metadata: { name: string } };
    expect(bytes(body.note)).toBeLessThanOrEqual(maxNoteBytes);
    expect(body.note.endsWith("...")).toBe(true);
    expect(body.metadata.name.startsWith("orders.")).toBe(true);
  });

  it("logs a failed write with the object's kind", async () => {
    const lines: string[] = [];
    const logger = pino({ level: "warn" }, { write: (line: string) => lines.push(line) });
    const recorder = createEventRecorder({
      client: new RecordingClient(new Error("boom")),
      identity: "op-0",
      logger,
    });
    await recorder.record(subject, { type: "Warning", reason: "UnknownScope", action: "Compile", note: "x" });
    const logged = JSON.parse(lines[0] ?? "{}") as { msg: string; kind: string };
    expect(logged.kind).toBe("ApiRoute");
    expect(logged.msg).toBe("could not record Event for ApiRoute default/orders");
  });
});
