// The gateway's last-known-good snapshot on disk: round trip, permissions, atomic replacement, and what a
// missing, corrupt or invalid file does (nothing is served from it; the problem is logged).
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import pino, { type Logger } from "pino";
import { describe, expect, it } from "vitest";
import {
  LAST_KNOWN_GOOD_FILE,
  StateDirError,
  loadLastKnownGood,
  prepareStateDir,
  saveLastKnownGood,
} from "../../src/gateway/state/last-known-good.ts";
import { createManualClock } from "../../src/tokens/clock.ts";
import { compileSnapshot } from "../helpers/control-plane-gateway.ts";
import { allManifests } from "../helpers/manifests.ts";

const snapshotA = compileSnapshot(
  allManifests({ issuer: "http://127.0.0.1:9000", echoOrigin: "http://127.0.0.1:9101" }),
);
const snapshotB = compileSnapshot(
  allManifests({ issuer: "http://127.0.0.1:9000", echoOrigin: "http://127.0.0.1:9102" }),
);

function capturingLogger(): { logger: Logger; lines: () => { msg: string; level: number }[] } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      chunks.push(chunk.toString("utf8"));
      done();
    },
  });
  const logger = pino({ level: "debug" }, stream);
  return {
    logger,
    lines: () =>
      chunks
        .join("")
        .split("\n")
        .filter((l) => l !== "")
        .map((l) => JSON.parse(l) as { msg: string; level: number }),
  };
}

function freshDir(): string {
  return join(mkdtempSync(join(tmpdir(), "phantomgate-lkg-")), "state");
}

describe("last-known-good snapshot", () => {
  it("differs between the two fixtures (sanity)", () => {
    expect(snapshotA.revision).not.toBe(snapshotB.revision);
    expect(snapshotA.authServers[0]?.client.secret).toBe("gateway-secret");
  });

  it("is absent in a new state dir, and a missing file logs nothing", async () => {
    const dir = freshDir();
    await prepareStateDir(dir);
    const { logger, lines } = capturingLogger();
    expect(await loadLastKnownGood(dir, logger)).toBeUndefined();
    expect(lines()).toEqual([]);
  });

  it("round-trips a snapshot with its save time; dir 0700, file 0600", async () => {
    const dir = freshDir();
    await prepareStateDir(dir);
    const clock = createManualClock(Date.UTC(2031, 4, 6, 7, 8, 9));
    await saveLastKnownGood(dir, snapshotA, clock);
    const loaded = await loadLastKnownGood(dir, capturingLogger().logger);
    expect(loaded?.snapshot).toEqual(snapshotA);
    expect(loaded?.savedAtMs).toBe(clock.now());
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(statSync(join(dir, LAST_KNOWN_GOOD_FILE)).mode & 0o777).toBe(0o600);
  });

  it("is ignored, with a warning, when it was saved from another control plane", async () => {
    const dir = freshDir();
    await prepareStateDir(dir);
    await saveLastKnownGood(dir, snapshotA, undefined, "https://operator-a.example:8443");
    const other = capturingLogger();
    expect(await loadLastKnownGood(dir, other.logger, "https://operator-b.example:8443")).toBeUndefined();
    expect(other.lines().map((line) => line.msg)).toEqual([
      "last-known-good snapshot came from another control plane; ignoring it",
    ]);
    const same = await loadLastKnownGood(dir, capturingLogger().logger, "https://operator-a.example:8443");
    expect(same?.snapshot).toEqual(snapshotA);
    // A file of an older gateway names no control plane: taken, as before.
    await saveLastKnownGood(dir, snapshotB);
    const older = await loadLastKnownGood(dir, capturingLogger().logger, "https://operator-b.example:8443");
    expect(older?.snapshot).toEqual(snapshotB);
  });

  it("narrows an existing state directory others may write to (an emptyDir is 0777) to 0700", async () => {
    const dir = freshDir();
    mkdirSync(dir, { mode: 0o777 });
    chmodSync(dir, 0o777);
    const warnings: string[] = [];
    await prepareStateDir(dir, (message) => warnings.push(message));
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(warnings).toEqual([]);
  });

  it("replaces the previous snapshot whole and leaves no temp files", async () => {
    const dir = freshDir();
    await prepareStateDir(dir);
    await saveLastKnownGood(dir, snapshotA);
    await saveLastKnownGood(dir, snapshotB);
    expect((await loadLastKnownGood(dir, capturingLogger().logger))?.snapshot.revision).toBe(
      snapshotB.revision,
    );
    expect(readdirSync(dir)).toEqual([LAST_KNOWN_GOOD_FILE]);
  });

  it("never exposes a half-written file: concurrent saves each land whole", async () => {
    const dir = freshDir();
    await prepareStateDir(dir);
    await Promise.all(
      Array.from({ length: 20 }, (_, i) => saveLastKnownGood(dir, i % 2 === 0 ? snapshotA : snapshotB)),
    );
    const loaded = await loadLastKnownGood(dir, capturingLogger().logger);
    expect([snapshotA.revision, snapshotB.revision]).toContain(loaded?.snapshot.revision);
    expect(readdirSync(dir)).toEqual([LAST_KNOWN_GOOD_FILE]);
  });

  it("keeps the old file when a write died before its rename, and clears that temp file at start", async () => {
    const dir = freshDir();
    await prepareStateDir(dir);
    await saveLastKnownGood(dir, snapshotA);
    // What a crash between write and rename leaves behind: a partial temp file next to the good one.
    const temp = join(dir, `.${LAST_KNOWN_GOOD_FILE}.12345.abcdef.tmp`);
    writeFileSync(temp, JSON.stringify({ snapshot: snapshotB }).slice(0, 100));
    expect((await loadLastKnownGood(dir, capturingLogger().logger))?.snapshot.revision).toBe(
      snapshotA.revision,
    );
    await prepareStateDir(dir);
    expect(existsSync(temp)).toBe(false);
    expect(readdirSync(dir)).toEqual([LAST_KNOWN_GOOD_FILE]);
  });

  it("ignores a corrupt file (not JSON) and says so in the log", async () => {
    const dir = freshDir();
    await prepareStateDir(dir);
    await saveLastKnownGood(dir, snapshotA);
    const file = join(dir, LAST_KNOWN_GOOD_FILE);
    writeFileSync(file, readFileSync(file, "utf8").slice(0, 200));
    const { logger, lines } = capturingLogger();
    expect(await loadLastKnownGood(dir, logger)).toBeUndefined();
    expect(lines().map((l) => l.msg)).toEqual(["last-known-good snapshot is not JSON; ignoring it"]);
    expect(JSON.stringify(lines())).not.toContain("gateway-secret");
  });

  it("ignores a file of another format and a snapshot that fails snapshotSchema", async () => {
    const dir = freshDir();
    await prepareStateDir(dir);
    const file = join(dir, LAST_KNOWN_GOOD_FILE);
    const { logger, lines } = capturingLogger();
    writeFileSync(file, JSON.stringify(snapshotA));
    expect(await loadLastKnownGood(dir, logger)).toBeUndefined();
    writeFileSync(
      file,
      JSON.stringify({
        format: "phantomgate.dev/last-known-good/v1",
        savedAt: new Date().toISOString(),
        snapshot: { ...snapshotA, revision: "not-a-revision" },
      }),
    );
    expect(await loadLastKnownGood(dir, logger)).toBeUndefined();
    expect(lines().map((l) => l.msg)).toEqual([
      "last-known-good file has an unknown format; ignoring it",
      "last-known-good snapshot is invalid; ignoring it",
    ]);
    expect(JSON.stringify(lines())).not.toContain("gateway-secret");
  });

  it("logs an unreadable file and ignores it", async () => {
    const dir = freshDir();
    await prepareStateDir(dir);
    mkdirSync(join(dir, LAST_KNOWN_GOOD_FILE)); // a directory where the file should be: EISDIR
    const { logger, lines } = capturingLogger();
    expect(await loadLastKnownGood(dir, logger)).toBeUndefined();
    expect(lines()[0]?.msg).toBe("last-known-good snapshot unreadable; ignoring it");
  });

  it("refuses a state dir that cannot be created", async () => {
    const parent = mkdtempSync(join(tmpdir(), "phantomgate-lkg-"));
    const blocker = join(parent, "file");
    writeFileSync(blocker, "");
    await expect(prepareStateDir(join(blocker, "state"))).rejects.toThrow(StateDirError);
    await expect(prepareStateDir(join(blocker, "state"))).rejects.toThrow(/not writable \(ENOTDIR\)/);
  });
});
