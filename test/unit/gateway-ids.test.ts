// Request ids and trace context come from a pooled random buffer: they must still be well-formed and unique,
// across refills of the pool.
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { describe, expect, it } from "vitest";
import { continuesTrace, isForwardableTracestate, newRequestIds } from "../../src/gateway/pipeline/ids.ts";

const uuidV4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe("request ids and trace context", () => {
  it("gives well-formed, distinct version 4 UUIDs across many refills of the pool", () => {
    const seen = new Set<string>();
    const variants = new Set<string>();
    const digits = new Set<string>();
    for (let i = 0; i < 20_000; i++) {
      const id = newRequestIds(undefined).requestId;
      expect(id).toMatch(uuidV4);
      seen.add(id);
      variants.add(id.charAt(19));
      digits.add(id.charAt(15));
    }
    expect(seen.size).toBe(20_000);
    // The variant digit keeps its two random bits, and the digits around the fixed ones stay random.
    expect([...variants].sort()).toEqual(["8", "9", "a", "b"]);
    expect(digits.size).toBe(16);
  });

  it("keeps a client's valid trace id and sampled flag, and starts a new trace otherwise", () => {
    const incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
    const kept = newRequestIds(incoming);
    expect(kept.traceId).toBe("0af7651916cd43dd8448eb211c80319c");
    expect(kept.traceparent).toMatch(/^00-0af7651916cd43dd8448eb211c80319c-[0-9a-f]{16}-00$/);
    expect(kept.traceparent).not.toContain("b7ad6b7169203331");
    expect(kept.requestId).toMatch(uuidV4);

    const bad = [
      undefined,
      "garbage",
      `00-${"0".repeat(32)}-b7ad6b7169203331-01`,
      "01-abc",
      "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
      "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01x",
      "0g-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
      "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
      "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
      "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
      "00-0af7651916cd43dd8448eb211c80319cxb7ad6b7169203331-01",
      "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331x01",
      "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01",
      "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0g",
    ];
    for (const value of bad) {
      const fresh = newRequestIds(value);
      expect(fresh.traceId).toMatch(/^[0-9a-f]{32}$/);
      expect(fresh.traceId).not.toBe("0".repeat(32));
      expect(fresh.traceId).not.toBe("0af7651916cd43dd8448eb211c80319c");
      expect(fresh.requestId).toMatch(uuidV4);
      expect(fresh.traceparent).toBe(`00-${fresh.traceId}-${fresh.traceparent.slice(36, 52)}-01`);
    }
    // A later version is read as far as version 00 goes (W3C Trace Context §3.2.4): its trace id and flags are
    // kept, and the traceparent sent on is version 00.
    for (const later of [
      "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
      "cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-what-the-future-holds",
    ]) {
      const continued = newRequestIds(later);
      expect(continued.traceId).toBe("0af7651916cd43dd8448eb211c80319c");
      expect(continued.traceparent).toMatch(/^00-0af7651916cd43dd8448eb211c80319c-[0-9a-f]{16}-01$/);
    }
    const spans = new Set(Array.from({ length: 2000 }, () => newRequestIds(incoming).traceparent));
    expect(spans.size).toBe(2000);
  });

  it("does not keep the pool's text alive through the ids it handed out", () => {
    setFlagsFromString("--expose-gc");
    const gc = runInNewContext("gc") as () => void;
    const kept: string[] = [];
    gc();
    const before = process.memoryUsage().heapUsed;
    // One id of each kind kept per refill of the pool (~200 requests each): a view into the pool's 16 KiB text
    // would keep ~4,000 of those texts alive, about 64 MB.
    for (let i = 0; i < 4_000 * 200; i++) {
      const ids = newRequestIds(undefined);
      if (i % 200 === 0) kept.push(ids.traceId, ids.traceparent, ids.requestId);
    }
    gc();
    const grown = process.memoryUsage().heapUsed - before;
    expect(kept).toHaveLength(12_000);
    expect(grown).toBeLessThan(8 * 1024 * 1024);
  });
});

describe("tracestate passed on with a continued trace", () => {
  const incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

  it("continues a trace only when the client's traceparent was valid and its trace id kept", () => {
    expect(continuesTrace(incoming, newRequestIds(incoming).traceparent)).toBe(true);
    expect(continuesTrace(incoming, newRequestIds(undefined).traceparent)).toBe(false);
    for (const invalid of [undefined, "garbage", [incoming, incoming], `${incoming}, ${incoming}`]) {
      expect(continuesTrace(invalid, newRequestIds(undefined).traceparent)).toBe(false);
    }
    // The same trace id in an invalid header does not count.
    const zeroParent = "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01";
    expect(continuesTrace(zeroParent, incoming)).toBe(false);
  });

  it("takes W3C tracestate lists: members, empty members, whitespace around them, up to the limits", () => {
    for (const value of [
      "rojo=00f067aa0ba902b7",
      "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
      "rojo=00f067aa0ba902b7, congo=t61rcWkgMzE",
      " rojo=1 ,\t congo=2\t",
      "rojo=1,,congo=2",
      ",rojo=1,",
      "fw529a3039@dt=ffffffffffffffff,1a-2f@xyz=1,7=x,a_b-c*d/e=1",
      "rojo= leading spaces are part of the value",
      "rojo=!\"#$%&'()*+-./:;<>?@[\\]^_`{|}~",
      `k=${"v".repeat(256)}`,
      `${"k".repeat(256)}=v`,
      Array.from({ length: 32 }, (_, i) => `k${i}=v`).join(","),
      `a=${"x".repeat(254)},b=${"y".repeat(253)}`, // 512 characters
    ]) {
      expect(isForwardableTracestate(value), value).toBe(true);
    }
  });

  it("refuses what is not one: bad keys or values, over 32 members or 512 characters, nothing at all", () => {
    for (const value of [
      "",
      " ",
      ",",
      " , ,",
      "rojo",
      "rojo=",
      "rojo= ",
      "=1",
      "Rojo=1",
      "_rojo=1",
      "ro jo=1",
      "rojo =1",
      "rojo=a=b",
      "rojo=a\tb",
      "rojo=a\u0000b",
      "rojo=caf\u00e9",
      "rojo=\u007f",
      "rojo=1;congo=2",
      `k=${"v".repeat(257)}`,
      `${"k".repeat(257)}=v`,
      Array.from({ length: 33 }, (_, i) => `k${i}=v`).join(","),
      `a=${"x".repeat(254)},b=${"y".repeat(254)}`, // 513 characters
    ]) {
      expect(isForwardableTracestate(value), JSON.stringify(value)).toBe(false);
    }
  });
});
