// Failures of one dependency are logged at once, then at most once per interval with a count, and once more when
// it answers again; other dependencies are logged on their own.
import { Writable } from "node:stream";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { createTroubleLog } from "../../src/errors/trouble-log.ts";

function capture(): { logger: pino.Logger; lines: () => Record<string, unknown>[] } {
  let text = "";
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      text += chunk.toString();
      callback();
    },
  });
  return {
    logger: pino({ base: null, timestamp: false }, sink),
    lines: () =>
      text
        .split("\n")
        .filter((line) => line !== "")
        .map((line) => JSON.parse(line) as Record<string, unknown>),
  };
}

describe("trouble log", () => {
  it("logs the first failure, then one line per interval with the count, then the recovery", () => {
    const { logger, lines } = capture();
    let now = 1_000;
    const troubles = createTroubleLog(logger, () => now, 10_000);
    troubles.succeeded("as token", { endpoint: "token" }, "back"); // never failed: nothing
    for (let i = 0; i < 5; i++) {
      troubles.failed("as token", { endpoint: "token", reason: `r${i}` }, "failing");
      now += 1_000;
    }
    expect(troubles.failing).toBe(1);
    now = 11_000;
    troubles.failed("as token", { endpoint: "token", reason: "r5" }, "failing");
    troubles.failed("as jwks", { endpoint: "jwks", reason: "j0" }, "failing");
    now = 12_500;
    troubles.succeeded("as token", { endpoint: "token" }, "back");
    troubles.succeeded("as token", { endpoint: "token" }, "back");
    expect(troubles.failing).toBe(1);
    expect(lines()).toEqual([
      { level: 40, endpoint: "token", reason: "r0", msg: "failing" },
      {
        level: 40,
        endpoint: "token",
        reason: "r5",
        failuresSinceLastLine: 5,
        failingForMs: 10_000,
        msg: "failing",
      },
      { level: 40, endpoint: "jwks", reason: "j0", msg: "failing" },
      { level: 30, endpoint: "token", failures: 6, failedForMs: 11_500, msg: "back" },
    ]);
  });
});
