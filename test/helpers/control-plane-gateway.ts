// Test harness: `phantomgate gateway --control-plane URL` as a real child process on free ports, with its own
// token file and state dir (both kept across restarts of the same gateway, like a pod's volumes).
import type { ChildProcess } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { compile } from "../../src/compile/compile.ts";
import { parseManifestText } from "../../src/provider/file/index.ts";
import { snapshotSchema, type Snapshot } from "../../src/snapshot/snapshot.ts";
import { spawnGateway } from "./gateway-process.ts";

export interface ControlPlaneGatewaySpec {
  readonly name: string;
  readonly controlPlane: string;
  /** The token file; written with `token` when given. */
  readonly tokenFile: string;
  readonly stateDir: string;
  readonly extraArgs?: readonly string[];
}

export interface ControlPlaneGateway {
  readonly spec: ControlPlaneGatewaySpec;
  readonly child: ChildProcess;
  readonly url: string;
  readonly adminUrl: string;
  output(): string;
  /** SIGTERM (or `signal`) and wait for exit. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** A fresh spec: token file (with `token`) and state dir in new temp dirs. */
export function controlPlaneGatewaySpec(
  name: string,
  controlPlane: string,
  token: string,
): ControlPlaneGatewaySpec {
  const dir = mkdtempSync(join(tmpdir(), `phantomgate-${name}-`));
  const tokenFile = join(dir, "token");
  writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
  return { name, controlPlane, tokenFile, stateDir: join(dir, "state") };
}

export async function startControlPlaneGateway(spec: ControlPlaneGatewaySpec): Promise<ControlPlaneGateway> {
  const gateway = await spawnGateway(
    [
      "--control-plane",
      spec.controlPlane,
      "--control-plane-token-file",
      spec.tokenFile,
      "--gateway-name",
      spec.name,
      "--state-dir",
      spec.stateDir,
      "--host",
      "127.0.0.1",
      "--port",
      "0",
      "--admin-port",
      "0",
      "--audit-log",
      "off",
      ...(spec.extraArgs ?? []),
    ],
    { label: `gateway ${spec.name}` },
  );
  return {
    spec,
    child: gateway.child,
    url: `http://127.0.0.1:${gateway.port}`,
    adminUrl: `http://127.0.0.1:${gateway.adminPort}`,
    output: () => gateway.output(),
    stop: (signal) => gateway.stop(signal),
  };
}

export interface Readyz {
  ready: boolean;
  revision: string | null;
  problems: { message: string }[];
  controlPlane?: {
    state: string;
    revision: string | null;
    servingFrom: string | null;
    summary: string;
    lastError: string | null;
  };
}

export async function readyz(
  gateway: ControlPlaneGateway,
): Promise<{ status: number; body: Readyz; cacheControl: string | null }> {
  const response = await fetch(`${gateway.adminUrl}/readyz`);
  return {
    status: response.status,
    body: (await response.json()) as Readyz,
    cacheControl: response.headers.get("cache-control"),
  };
}

/** Polls `check` until it returns true (or throws the last failure after `timeoutMs`). */
export async function eventually(
  check: () => Promise<boolean> | boolean,
  timeoutMs = 15_000,
  what = "condition",
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      if (await check()) return;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) {
      throw new Error(
        `${what} not reached within ${timeoutMs} ms${lastError instanceof Error ? `: ${lastError.message}` : ""}`,
      );
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Compiles manifest texts (file name → YAML) into a validated snapshot, as the operator would. */
export function compileSnapshot(files: Record<string, string>): Snapshot {
  const objects = Object.entries(files).flatMap(([file, text]) => {
    const loaded = parseManifestText(text, file);
    if (loaded.problems.length > 0) throw new Error(JSON.stringify(loaded.problems));
    return loaded.objects;
  });
  const result = compile({ objects });
  const rejected = result.perObjectResults.filter((r) => !r.accepted);
  if (rejected.length > 0) throw new Error(`rejected objects: ${JSON.stringify(rejected)}`);
  return snapshotSchema.parse(result.snapshot);
}
