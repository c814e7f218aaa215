// The processes under test: one `phantomgate operator` and N `phantomgate gateway --control-plane` processes,
// spawned through bench/lib/processes.ts (so every one is stopped on exit, Ctrl-C or a crash of the driver).
// Their pino lines carry `time` (epoch ms, stamped in the child), which is the one clock all processes on this
// machine share: the moments a gateway swapped a revision in or evicted revoked tokens are read from there,
// not from when the driver happened to notice. A /readyz poller adds what an outside observer sees.
import { mkdtempSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { Pool } from "undici";
import { spawnPinned, type Spawned } from "../lib/processes.ts";

const bin = fileURLToPath(new URL("../../bin/phantomgate.js", import.meta.url));

export interface LogEvent {
  /** `time` of the pino line: when the child logged it. */
  readonly timeMs: number;
  readonly msg: string;
  readonly fields: Readonly<Record<string, unknown>>;
}

/** Keeps the lines whose `msg` is one of `messages`. */
class LogRecorder {
  readonly events: LogEvent[] = [];
  readonly #messages: ReadonlySet<string>;

  constructor(spawned: Spawned, messages: readonly string[]) {
    this.#messages = new Set(messages);
    const stdout = spawned.child.stdout;
    if (stdout === null) throw new Error(`${spawned.name} has no stdout`);
    createInterface({ input: stdout }).on("line", (line) => this.#take(line));
  }

  #take(line: string): void {
    // Cheap pre-filter: most lines are not wanted and some are long.
    if (!line.includes('"msg"')) return;
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch {
      return;
    }
    if (typeof parsed !== "object" || parsed === null) return;
    const fields = parsed as Record<string, unknown>;
    const msg = fields["msg"];
    const time = fields["time"];
    if (typeof msg !== "string" || typeof time !== "number" || !this.#messages.has(msg)) return;
    this.events.push({ timeMs: time, msg, fields });
  }

  find(msg: string, predicate: (event: LogEvent) => boolean = () => true): LogEvent | undefined {
    return this.events.find((event) => event.msg === msg && predicate(event));
  }
}

export interface OperatorProcess {
  readonly process: Spawned;
  readonly snapshotUrl: string;
  readonly metricsUrl: string;
  readonly log: LogRecorder;
}

export interface OperatorSpec {
  readonly kubeconfig: string;
  readonly namespace: string;
  readonly gatewayServiceAccount: string;
  readonly leaseName: string;
  readonly extraArgs: readonly string[];
}

/** The flags the operator runs with (also used to render its RBAC, so they must agree). */
export function operatorFlags(spec: Omit<OperatorSpec, "kubeconfig">): string[] {
  return [
    "--pod-namespace",
    spec.namespace,
    "--listen-host",
    "127.0.0.1",
    "--snapshot-port",
    "0",
    "--metrics-port",
    "0",
    "--no-webhook",
    "--lease-name",
    spec.leaseName,
    "--gateway-service-accounts",
    `${spec.namespace}:${spec.gatewayServiceAccount}`,
    "--log-level",
    "info",
    ...spec.extraArgs,
  ];
}

export async function startOperatorProcess(spec: OperatorSpec): Promise<OperatorProcess> {
  const spawned = await spawnPinned({
    name: "operator",
    core: 0,
    args: [
      bin,
      "operator",
      "--kubeconfig",
      spec.kubeconfig,
      "--identity",
      "bench-operator",
      ...operatorFlags(spec),
    ],
    isReady: (line) => line["msg"] === "operator started",
    timeoutMs: 120_000,
  });
  const log = new LogRecorder(spawned, ["snapshot compiled", "snapshot published", "revocation accepted"]);
  return {
    process: spawned,
    snapshotUrl: `http://127.0.0.1:${Number(spawned.ready["snapshotPort"])}`,
    metricsUrl: `http://127.0.0.1:${Number(spawned.ready["metricsPort"])}`,
    log,
  };
}

export interface GatewayProcess {
  readonly name: string;
  readonly process: Spawned;
  readonly url: string;
  readonly adminUrl: string;
  readonly log: LogRecorder;
  /** Keep-alive pool to the public port (revocation probes). */
  readonly publicPool: Pool;
  /** Keep-alive pool to the admin port (/readyz, /metrics). */
  readonly adminPool: Pool;
}

export const SWAPPED = "snapshot swapped in";
export const EVICTED = "revoked tokens evicted";

/** Starts a control-plane gateway with its own token file and state dir (like a pod's volumes) under `parentDir`. */
export async function startGatewayProcess(
  name: string,
  controlPlane: string,
  token: string,
  parentDir: string,
): Promise<GatewayProcess> {
  const dir = mkdtempSync(join(parentDir, `${name}-`));
  const tokenFile = join(dir, "token");
  writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
  const spawned = await spawnPinned({
    name,
    core: 0,
    args: [
      bin,
      "gateway",
      "--control-plane",
      controlPlane,
      "--control-plane-token-file",
      tokenFile,
      "--gateway-name",
      name,
      "--state-dir",
      join(dir, "state"),
      "--host",
      "127.0.0.1",
      "--port",
      "0",
      "--admin-port",
      "0",
      "--audit-log",
      "off",
    ],
    isReady: (line) => line["msg"] === "gateway listening",
    timeoutMs: 60_000,
  });
  const url = `http://127.0.0.1:${Number(spawned.ready["port"])}`;
  const adminUrl = `http://127.0.0.1:${Number(spawned.ready["adminPort"])}`;
  return {
    name,
    process: spawned,
    url,
    adminUrl,
    log: new LogRecorder(spawned, [SWAPPED, EVICTED]),
    publicPool: new Pool(url, { connections: 4 }),
    adminPool: new Pool(adminUrl, { connections: 2 }),
  };
}

export interface Readyz {
  readonly revision: string | null;
  readonly routes: number;
}

export async function readyz(gateway: GatewayProcess): Promise<Readyz> {
  const response = await gateway.adminPool.request({ path: "/readyz", method: "GET" });
  const body = (await response.body.json()) as { revision?: string | null; routes?: number };
  return { revision: body.revision ?? null, routes: body.routes ?? 0 };
}

/**
 * Polls every gateway's /readyz and remembers, per gateway, when each revision was first seen there (the
 * moment the answer arrived). What an outside observer sees; the log times say when the swap happened.
 */
export class ReadyzPoller {
  readonly #gateways: readonly GatewayProcess[];
  readonly #firstSeen = new Map<string, Map<string, number>>();
  readonly #latest = new Map<string, Readyz>();
  #running = false;
  #loops: Promise<void>[] = [];

  constructor(gateways: readonly GatewayProcess[]) {
    this.#gateways = gateways;
    for (const gateway of gateways) this.#firstSeen.set(gateway.name, new Map());
  }

  start(intervalMs: number): void {
    if (this.#running) return;
    this.#running = true;
    this.#loops = this.#gateways.map(async (gateway) => {
      while (this.#running) {
        try {
          const answer = await readyz(gateway);
          const seenAt = Date.now();
          this.#latest.set(gateway.name, answer);
          const seen = this.#firstSeen.get(gateway.name);
          if (answer.revision !== null && seen !== undefined && !seen.has(answer.revision)) {
            seen.set(answer.revision, seenAt);
          }
        } catch {
          // A gateway busy swapping may answer late; the next poll tells.
        }
        await new Promise((resolve) => setTimeout(resolve, intervalMs));
      }
    });
  }

  async stop(): Promise<void> {
    this.#running = false;
    await Promise.all(this.#loops);
  }

  firstSeen(gateway: string, revision: string): number | undefined {
    return this.#firstSeen.get(gateway)?.get(revision);
  }

  latest(gateway: string): Readyz | undefined {
    return this.#latest.get(gateway);
  }

  /** True when every gateway's last answer named `revision`. */
  allOn(revision: string): boolean {
    return this.#gateways.every((gateway) => this.#latest.get(gateway.name)?.revision === revision);
  }
}
