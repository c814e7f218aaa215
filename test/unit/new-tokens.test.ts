import { describe, expect, it } from "vitest";
import { clientAddress, clientKey, NewTokenLimiter } from "../../src/gateway/pipeline/new-tokens.ts";

describe("new-token limiter", () => {
  it("gives each client `limit` distinct tokens; more waiting for one of them join at no cost", () => {
    const limiter = new NewTokenLimiter(2);
    const a1 = limiter.acquire("10.0.0.1", "fp-a");
    const b1 = limiter.acquire("10.0.0.1", "fp-b");
    expect(a1).toBeDefined();
    expect(b1).toBeDefined();
    expect(limiter.acquire("10.0.0.1", "fp-c")).toBeUndefined();
    // The same token again, with both places taken: joins.
    const a2 = limiter.acquire("10.0.0.1", "fp-a");
    expect(a2).toBeDefined();
    // Another client has places of its own.
    const other = limiter.acquire("10.0.0.2", "fp-c");
    expect(other).toBeDefined();
    expect(limiter.clients).toBe(2);

    // fp-a is held by two requests: one release keeps its place.
    a1?.();
    expect(limiter.acquire("10.0.0.1", "fp-c")).toBeUndefined();
    a2?.();
    const c = limiter.acquire("10.0.0.1", "fp-c");
    expect(c).toBeDefined();
    for (const release of [b1, c, other]) release?.();
    expect(limiter.clients).toBe(0);
  });

  it("releases once however often it is called", () => {
    const limiter = new NewTokenLimiter(1);
    const first = limiter.acquire("c", "x");
    const second = limiter.acquire("c", "x");
    first?.();
    first?.();
    // The second request still waits for x: its place is kept, so y is refused.
    expect(limiter.acquire("c", "y")).toBeUndefined();
    second?.();
    expect(limiter.acquire("c", "y")).toBeDefined();
  });

  it("does not bound anything at 0", () => {
    const limiter = new NewTokenLimiter(0);
    for (let i = 0; i < 1_000; i++) expect(limiter.acquire("c", `fp-${i}`)).toBeDefined();
    expect(limiter.clients).toBe(0);
  });
});

describe("client keys", () => {
  it("keeps IPv4 addresses and takes IPv4-mapped IPv6 addresses as IPv4, however written", () => {
    expect(clientKey("192.0.2.7")).toBe("192.0.2.7");
    expect(clientKey("::ffff:192.0.2.7")).toBe("192.0.2.7");
    expect(clientKey("::FFFF:192.0.2.7")).toBe("192.0.2.7");
    expect(clientKey("::ffff:c000:207")).toBe("192.0.2.7");
    expect(clientKey("0:0:0:0:0:ffff:c000:0207")).toBe("192.0.2.7");
  });

  it("counts an IPv6 address under its /48, however it is written: a subscriber's prefixes are one client", () => {
    const key = "2001:db8:0::/48";
    for (const address of [
      "2001:db8:0:1::5",
      "2001:0db8:0000:0001:ffff:ffff:ffff:ffff",
      "2001:db8::1:0:0:0:9",
      "2001:db8:0:ff00::1",
      "2001:db8:0:1::5%eth0",
      "2001:db8::",
      "[2001:db8:0:1::5]",
      "[2001:db8:0:2::6]:443",
    ]) {
      expect(clientKey(address), address).toBe(key);
    }
    expect(clientKey("2001:db8:1::5")).toBe("2001:db8:1::/48");
    expect(clientKey("::1")).toBe("0:0:0::/48");
    expect(clientKey("fe80::1")).toBe("fe80:0:0::/48");
  });

  it("takes an IPv4 address with a port as the address (as some proxies write X-Forwarded-For)", () => {
    expect(clientKey("203.0.113.7:50001")).toBe("203.0.113.7");
    expect(clientKey("203.0.113.7:50002")).toBe("203.0.113.7");
  });

  it("puts what is not an IP address under one key", () => {
    expect(clientKey(undefined)).toBe("unknown");
    expect(clientKey("")).toBe("unknown");
    expect(clientKey("unknown")).toBe("unknown");
    expect(clientKey("_hidden-proxy")).toBe("unknown");
    expect(clientKey("203.0.113.7:notaport")).toBe("unknown");
    expect(clientKey("[not-an-ip]:80")).toBe("unknown");
  });

  it("takes the last X-Forwarded-For entry with --trust-forwarded, the TCP peer otherwise", () => {
    expect(clientAddress("10.0.0.9", "198.51.100.1, 203.0.113.7", true)).toBe("203.0.113.7");
    expect(clientAddress("10.0.0.9", "203.0.113.7", true)).toBe("203.0.113.7");
    expect(clientAddress("10.0.0.9", "198.51.100.1, 203.0.113.7", false)).toBe("10.0.0.9");
    expect(clientAddress("10.0.0.9", undefined, true)).toBe("10.0.0.9");
    expect(clientAddress("10.0.0.9", " , ", true)).toBe("10.0.0.9");
    expect(clientAddress("10.0.0.9", ["a", "b"], true)).toBe("10.0.0.9");
  });
});
