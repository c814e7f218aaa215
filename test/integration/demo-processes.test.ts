// The demo's authorization server and APIs run as processes of their own (spawnReady). However the demo ends,
// they must go with it: a leftover one keeps its fixed port, and the next `make demo` cannot start.
import { spawn } from "node:child_process";
import { once } from "node:events";
import { connect } from "node:net";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { eventually } from "../helpers/control-plane-gateway.ts";

const parentScript = fileURLToPath(new URL("../helpers/demo-parent.ts", import.meta.url));

interface Started {
  readonly parent: ReturnType<typeof spawn>;
  readonly childPid: number;
  readonly port: number;
  readonly lines: string[];
}

// Children a failing test left behind hold this run's output open: they are killed after each test.
const started: number[] = [];
afterEach(() => {
  for (const pid of started.splice(0)) if (alive(pid)) process.kill(pid, "SIGKILL");
});

async function startParent(): Promise<Started> {
  const parent = spawn(process.execPath, [parentScript], { stdio: ["ignore", "pipe", "inherit"] });
  const reader = createInterface({ input: parent.stdout });
  const lines: string[] = [];
  reader.on("line", (line) => lines.push(line));
  const [first] = (await once(reader, "line")) as [string];
  const { child, port } = JSON.parse(first) as { child: number; port: number };
  started.push(child);
  return { parent, childPid: child, port, lines };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

describe("demo processes", () => {
  it("a child stops when its parent is killed with SIGKILL (no handler runs in the parent)", async () => {
    const { parent, childPid, port } = await startParent();
    expect(await listening(port)).toBe(true);
    const exited = once(parent, "exit");
    parent.kill("SIGKILL");
    await exited;
    await eventually(() => !alive(childPid), 10_000, "the authorization server process gone");
    expect(await listening(port)).toBe(false);
  });

  it("SIGHUP (the terminal closed) stops the parent in order, and its child with it", async () => {
    const { parent, childPid, port, lines } = await startParent();
    const exited = once(parent, "exit");
    parent.kill("SIGHUP");
    const [code, signal] = (await exited) as [number | null, NodeJS.Signals | null];
    expect({ code, signal }).toEqual({ code: 0, signal: null });
    expect(lines.at(-1)).toBe(JSON.stringify({ stopped: "SIGHUP" }));
    await eventually(() => !alive(childPid), 10_000, "the authorization server process gone");
    expect(await listening(port)).toBe(false);
  });
});
