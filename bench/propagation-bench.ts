// `npm run bench:propagation`: how fast a change made with the Kubernetes API reaches every gateway, on a real
// etcd + kube-apiserver with one `phantomgate operator` process and N `phantomgate gateway --control-plane`
// processes (ServiceAccount tokens from the TokenRequest API, TokenReview on every stream). Not a test: nothing
// here asserts on timing; it prints figures and whether the targets were met.
//
//   1. compile: in-process `compile()` of 10,000 generated ApiRoutes (median of a few runs), and the gateway's
//      handling of one 10,000-route snapshot line (parse, validate, build, swap) — before the cluster starts.
//   2. propagation: 1,000 ApiRoutes created, then every one of them changed (several rounds), by server-side
//      apply; per gateway, the time from the last write to the moment it swapped the revision holding all
//      writes in (its own log line; /readyz as seen from outside as a cross-check); status convergence.
//   3. revocation: a token cached by every gateway and revoked at the AS is POSTed to /v1/revocations; the time
//      until each gateway answers it with 401 (and until each logged the eviction).
//   4. swap: the cluster grows to 10,000 ApiRoutes; then single changes publish 10,000-route snapshots: operator
//      publish → gateway swapped in, ACK latency, each gateway's CPU time and VmRSS; last, a new gateway joins
//      and receives that snapshot once.
//
// --profile adds CPU profiles of the in-process parts (hot spots by function and by file).
//
//   node bench/propagation-bench.ts [--help]      (BENCH_QUICK=1 for a smoke run)
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { request } from "undici";
import { compile } from "../src/compile/compile.ts";
import { REVOCATIONS_PATH } from "../src/operator/distribute/protocol.ts";
import { metricValue, scrape, tokenSource, type TokenSource } from "./lib/http.ts";
import { cpuSeconds, killAllNow, memory, setPinning, stopAll, warmCompileCache } from "./lib/processes.ts";
import {
  EVICTED,
  ReadyzPoller,
  startGatewayProcess,
  SWAPPED,
  type GatewayProcess,
} from "./propagation/fleet.ts";
import {
  measureCompile,
  measureRetainedHeap,
  measureSwap,
  profileInProcess,
  type CompileFigures,
  type SwapFigures,
} from "./propagation/in-process.ts";
import {
  baseObjects,
  generatedRoutes,
  REVOCATION_PATH,
  routePath,
  type FixtureOptions,
  type KubeObject,
} from "./propagation/objects.ts";
import {
  describe,
  distribution,
  mib,
  ms,
  seconds,
  table,
  targetsTable,
  type Target,
} from "./propagation/report.ts";
import { createWorld, startFleet, type World } from "./propagation/setup.ts";
import { numberSetting } from "./lib/options.ts";

// ---- options ------------------------------------------------------------------------------------------------

const PARTS = ["compile", "propagation", "revocation", "swap"] as const;
type Part = (typeof PARTS)[number];

interface Options {
  readonly quick: boolean;
  readonly routes: number;
  readonly gateways: number;
  readonly rounds: number;
  readonly revocations: number;
  readonly swapRoutes: number;
  readonly swapRounds: number;
  readonly compileRoutes: number;
  readonly compileRuns: number;
  readonly writer: "ssa" | "kubectl";
  readonly concurrency: number;
  readonly pollMs: number;
  readonly parts: ReadonlySet<Part>;
  readonly profile: boolean;
  readonly json: string | undefined;
  readonly operatorArgs: readonly string[];
}

const usage = `Usage: node bench/propagation-bench.ts [flags]      (npm run bench:propagation -- [flags])

Flags (environment variable in brackets; defaults, then BENCH_QUICK=1 defaults):
  --routes N          ApiRoutes created, then changed                 [BENCH_ROUTES]        1000 | 100
  --gateways N        gateway processes                               [BENCH_GATEWAYS]      5 | 2
  --rounds N          rounds of "change every route"                  [BENCH_ROUNDS]        5 | 1
  --revocations N     revocation rounds (a fresh token each)          [BENCH_REVOCATIONS]   5 | 2
  --swap-routes N     ApiRoutes in the cluster for the swap part      [BENCH_SWAP_ROUTES]   10000 | 1000
  --swap-rounds N     single-route changes publishing that snapshot   [BENCH_SWAP_ROUNDS]   3 | 2
  --compile-routes N  ApiRoutes compiled in process                   [BENCH_COMPILE_ROUTES] 10000 | 1000
  --compile-runs N    measured compiles (median)                      [BENCH_COMPILE_RUNS]  5 | 3
  --writer W          ssa (server-side apply over the API, --concurrency in flight) or kubectl
                      (kubectl apply --server-side -f of one multi-document file)  [BENCH_WRITER] ssa
  --concurrency N     server-side apply requests in flight            [BENCH_CONCURRENCY]   16
  --poll-ms N         /readyz poll interval per gateway               [BENCH_POLL_MS]       25
  --parts LIST        of ${PARTS.join(",")}                    [BENCH_PARTS]         all
  --profile           CPU profiles of compile and of the gateway's snapshot handling (in process) [BENCH_PROFILE=1]
  --operator-arg A    extra flag for the operator (repeatable), e.g. --operator-arg=--debounce-ms=50
  --json FILE         also write every figure as JSON to FILE         [BENCH_JSON]
`;

function parseOptions(): Options {
  const { values } = parseArgs({
    options: {
      routes: { type: "string" },
      gateways: { type: "string" },
      rounds: { type: "string" },
      revocations: { type: "string" },
      "swap-routes": { type: "string" },
      "swap-rounds": { type: "string" },
      "compile-routes": { type: "string" },
      "compile-runs": { type: "string" },
      writer: { type: "string" },
      concurrency: { type: "string" },
      "poll-ms": { type: "string" },
      parts: { type: "string" },
      profile: { type: "boolean" },
      "operator-arg": { type: "string", multiple: true },
      json: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
  });
  if (values.help === true) {
    process.stdout.write(usage);
    process.exit(0);
  }
  const env = process.env;
  const quick = env["BENCH_QUICK"] === "1";
  const integer = (flag: string | undefined, envName: string, fallback: number, min: number): number =>
    numberSetting(flag, envName, fallback, min, { integer: true });
  const parts = new Set(
    (values.parts ?? env["BENCH_PARTS"] ?? PARTS.join(","))
      .split(",")
      .map((part) => part.trim())
      .filter((part) => part !== ""),
  );
  for (const part of parts) {
    if (!(PARTS as readonly string[]).includes(part))
      throw new Error(`unknown part ${part}; parts: ${PARTS.join(",")}`);
  }
  const writer = values.writer ?? env["BENCH_WRITER"] ?? "ssa";
  if (writer !== "ssa" && writer !== "kubectl") throw new Error(`--writer: ssa or kubectl, got ${writer}`);
  const routes = integer(values.routes, "BENCH_ROUTES", quick ? 100 : 1000, 1);
  return {
    quick,
    routes,
    gateways: integer(values.gateways, "BENCH_GATEWAYS", quick ? 2 : 5, 1),
    rounds: integer(values.rounds, "BENCH_ROUNDS", quick ? 1 : 5, 1),
    revocations: integer(values.revocations, "BENCH_REVOCATIONS", quick ? 2 : 5, 1),
    swapRoutes: Math.max(
      routes,
      integer(values["swap-routes"], "BENCH_SWAP_ROUTES", quick ? 1000 : 10_000, 1),
    ),
    swapRounds: integer(values["swap-rounds"], "BENCH_SWAP_ROUNDS", quick ? 2 : 3, 1),
    compileRoutes: integer(values["compile-routes"], "BENCH_COMPILE_ROUTES", quick ? 1000 : 10_000, 1),
    compileRuns: integer(values["compile-runs"], "BENCH_COMPILE_RUNS", quick ? 3 : 5, 1),
    writer,
    concurrency: integer(values.concurrency, "BENCH_CONCURRENCY", 16, 1),
    pollMs: integer(values["poll-ms"], "BENCH_POLL_MS", 25, 1),
    parts: parts as Set<Part>,
    profile: values.profile === true || env["BENCH_PROFILE"] === "1",
    json: values.json ?? env["BENCH_JSON"],
    operatorArgs: values["operator-arg"] ?? [],
  };
}

// ---- small helpers ------------------------------------------------------------------------------------------

function log(message: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${message}\n`);
}

const sleep = (milliseconds: number): Promise<void> =>
  new Promise((resolve) => setTimeout(resolve, milliseconds));

const loadAverage = (): string =>
  loadavg()
    .map((value) => value.toFixed(2))
    .join(" ");

function uptime(): string {
  const result = spawnSync("uptime", { encoding: "utf8" });
  return result.status === 0 ? result.stdout.trim() : `load average: ${loadAverage()}`;
}

/** Polls `check` every `intervalMs` until true; throws `what` after `timeoutMs`. */
async function until(
  check: () => Promise<boolean> | boolean,
  timeoutMs: number,
  what: () => string,
  intervalMs = 50,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if (await check()) return;
    } catch {
      // Keep polling until the deadline.
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${what()}`);
    await sleep(intervalMs);
  }
}

async function operatorRevision(world: World): Promise<string | null> {
  const operator = world.operator;
  if (operator === undefined) return null;
  const response = await request(`${operator.metricsUrl}/readyz`);
  const body = (await response.body.json()) as { revision?: string | null };
  return body.revision ?? null;
}

async function operatorMetrics(world: World): Promise<string> {
  if (world.operator === undefined) throw new Error("operator not started");
  return scrape(world.operator.metricsUrl);
}

/** What the cluster should hold: the objects by kind/name, compiled locally to predict the revision. */
class DesiredState {
  readonly #objects = new Map<string, KubeObject>();
  /** Generation of each generated route (by index). */
  readonly generations = new Map<number, number>();

  set(objects: readonly KubeObject[]): void {
    for (const object of objects) this.#objects.set(`${object.kind}/${object.metadata.name}`, object);
  }

  setRoutes(fixture: FixtureOptions, from: number, to: number, generation: number): KubeObject[] {
    const routes = generatedRoutes(fixture, from, to, generation);
    this.set(routes);
    for (let index = from; index < to; index += 1) this.generations.set(index, generation);
    return routes;
  }

  get routeCount(): number {
    return this.generations.size;
  }

  /** The revision compile gives these objects: the one the operator should publish once it has seen them all. */
  expectedRevision(): string {
    return compile({ objects: [...this.#objects.values()].map((object) => ({ object })) }).snapshot.revision;
  }
}

// ---- writing ------------------------------------------------------------------------------------------------

interface WriteTiming {
  readonly objects: number;
  readonly firstWriteMs: number;
  readonly lastWriteMs: number;
  readonly retries: number;
}

async function writeObjects(
  world: World,
  objects: readonly KubeObject[],
  options: Options,
  temp: string,
): Promise<WriteTiming> {
  if (options.writer === "ssa") return world.admin.applyAll(objects, options.concurrency);
  // One multi-document file (JSON is YAML), one kubectl invocation; the last write is when kubectl returned.
  const file = join(temp, "apply.yaml");
  writeFileSync(file, objects.map((object) => JSON.stringify(object)).join("\n---\n"));
  const firstWriteMs = Date.now();
  await world.cluster.kubectl([
    "apply",
    "--server-side",
    "--force-conflicts",
    "--field-manager=phantomgate-bench",
    "-f",
    file,
  ]);
  return { objects: objects.length, firstWriteMs, lastWriteMs: Date.now(), retries: 0 };
}

// ---- propagation steps --------------------------------------------------------------------------------------

interface StepResult {
  readonly label: string;
  readonly writes: number;
  readonly routesInCluster: number;
  readonly writeWindowMs: number;
  readonly retries: number;
  readonly revision: string;
  /** False when the operator settled on another revision than compile predicted (then that one is used). */
  readonly predicted: boolean;
  /** From the last write (ms): the operator logged "snapshot published" / "snapshot compiled" for the revision. */
  readonly publishedMs: number;
  readonly compiledMs: number;
  /** `compileMs` of the operator's "snapshot compiled" line: compile() inside the operator. */
  readonly operatorCompileMs: number;
  /** Per gateway, from the last write: its "snapshot swapped in" line for the revision, and /readyz seeing it. */
  readonly swappedMs: readonly number[];
  readonly observedMs: readonly number[];
  /** Per gateway: from the operator's publish line to its swap line. */
  readonly publishToSwapMs: readonly number[];
  /** From the last write until every ApiRoute showed Programmed=True for its generation (when measured). */
  readonly statusMs: number | undefined;
  readonly sampleProblems: readonly string[];
}

interface StepOptions {
  readonly measureStatus: boolean;
  readonly statusPollMs: number;
  readonly timeoutMs: number;
  /** Generated route indexes to check with real requests afterwards. */
  readonly sample: readonly number[];
}

/** Waits until every gateway's /readyz shows `expected`, or the operator settled elsewhere (returned). */
async function waitForFleet(
  world: World,
  poller: ReadyzPoller,
  expected: string,
  lastWriteMs: number,
  timeoutMs: number,
): Promise<{ revision: string; predicted: boolean }> {
  const deadline = Date.now() + timeoutMs;
  let operatorAt: string | null = null;
  let operatorSinceMs = Date.now();
  let nextOperatorCheck = 0;
  for (;;) {
    if (poller.allOn(expected)) return { revision: expected, predicted: true };
    const now = Date.now();
    if (now >= nextOperatorCheck) {
      nextOperatorCheck = now + 250;
      const revision = await operatorRevision(world).catch(() => null);
      if (revision !== operatorAt) {
        operatorAt = revision;
        operatorSinceMs = now;
      }
      // Compile and the cluster disagree on what the objects give (e.g. a default the API server fills in):
      // once the operator has sat on one revision for 5 s after the last write and the fleet serves it, that is
      // the converged state.
      if (
        operatorAt !== null &&
        operatorAt !== expected &&
        now - operatorSinceMs > 5_000 &&
        now - lastWriteMs > 5_000 &&
        poller.allOn(operatorAt)
      ) {
        return { revision: operatorAt, predicted: false };
      }
    }
    if (now > deadline) {
      const states = world.gateways
        .map((g) => `${g.name}=${poller.latest(g.name)?.revision ?? "?"}`)
        .join(" ");
      throw new Error(
        `fleet did not converge on ${expected} within ${timeoutMs} ms (operator at ${operatorAt ?? "?"}; ${states})`,
      );
    }
    await sleep(10);
  }
}

/** Real requests on each gateway: a sampled route answers 401 (exists, no token) on its path, 404 on the old one. */
async function checkSample(
  gateways: readonly GatewayProcess[],
  state: DesiredState,
  indexes: readonly number[],
): Promise<string[]> {
  const problems: string[] = [];
  for (const gateway of gateways) {
    for (const index of indexes) {
      const generation = state.generations.get(index);
      if (generation === undefined) continue;
      const expectations: [string, number][] = [[routePath(index, generation), 401]];
      if (generation > 1) expectations.push([routePath(index, generation - 1), 404]);
      for (const [path, status] of expectations) {
        const response = await gateway.publicPool.request({ path: `${path}/x`, method: "GET" });
        await response.body.dump();
        if (response.statusCode !== status) {
          problems.push(`${gateway.name} ${path}: ${response.statusCode}, expected ${status}`);
        }
      }
    }
  }
  return problems;
}

/** Waits until the operator has written no status for `quietMs` (bounded by `timeoutMs`). */
async function waitStatusQuiet(world: World, quietMs: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = Number.NaN;
  let sinceMs = Date.now();
  while (Date.now() < deadline) {
    const writes = metricValue(await operatorMetrics(world), "phantomgate_operator_status_writes_total");
    if (writes !== last) {
      last = writes;
      sinceMs = Date.now();
    } else if (Date.now() - sinceMs >= quietMs) {
      return;
    }
    await sleep(250);
  }
  log(`status writes still going after ${timeoutMs} ms; carrying on`);
}

async function propagate(
  world: World,
  state: DesiredState,
  label: string,
  writes: readonly KubeObject[],
  options: Options,
  step: StepOptions,
  temp: string,
  pollMs = options.pollMs,
): Promise<StepResult> {
  const gateways = world.gateways;
  const operator = world.operator;
  if (operator === undefined) throw new Error("operator not started");
  const expected = state.expectedRevision();
  const poller = new ReadyzPoller(gateways);
  poller.start(pollMs);
  let timing: WriteTiming;
  let converged: { revision: string; predicted: boolean };
  try {
    log(`${label}: writing ${writes.length} object(s) (${options.writer})`);
    timing = await writeObjects(world, writes, options, temp);
    log(
      `${label}: writes took ${seconds(timing.lastWriteMs - timing.firstWriteMs)}; waiting for ${gateways.length} gateway(s) to serve ${expected}`,
    );
    converged = await waitForFleet(world, poller, expected, timing.lastWriteMs, step.timeoutMs);
  } finally {
    await poller.stop();
  }
  const { revision } = converged;
  if (!converged.predicted) {
    log(`${label}: the operator settled on ${revision}, not the predicted ${expected}; timing that one`);
  }
  // The log lines travel through a pipe: give them a moment to arrive.
  await until(
    () => gateways.every((g) => g.log.find(SWAPPED, (e) => e.fields["revision"] === revision) !== undefined),
    5_000,
    () => `"${SWAPPED}" lines for ${revision}`,
  ).catch((error: unknown) => log(String(error)));
  const published = operator.log.find("snapshot published", (e) => e.fields["revision"] === revision);
  const compiled = operator.log.find("snapshot compiled", (e) => e.fields["revision"] === revision);
  const swapTimes = gateways.map(
    (g) => g.log.find(SWAPPED, (e) => e.fields["revision"] === revision)?.timeMs ?? Number.NaN,
  );
  const sampleProblems = await checkSample(gateways, state, step.sample);

  let statusMs: number | undefined;
  if (step.measureStatus) {
    log(`${label}: waiting until every ApiRoute shows Programmed=True for its generation`);
    const expectedRoutes = state.routeCount + 1; // + the revocation route
    let lastSeen = "";
    await until(
      async () => {
        const routes = await world.admin.listRouteStatus(world.fixture.namespace);
        const programmed = routes.filter((r) => r.programmed && r.accepted).length;
        lastSeen = `${programmed}/${routes.length} programmed`;
        if (routes.length === expectedRoutes && programmed === routes.length) {
          statusMs = Date.now() - timing.lastWriteMs;
          return true;
        }
        return false;
      },
      step.timeoutMs * 10,
      () => `status of ${expectedRoutes} ApiRoutes (last: ${lastSeen})`,
      step.statusPollMs,
    );
  }
  await waitStatusQuiet(world, 1_500, 600_000);

  return {
    label,
    writes: writes.length,
    routesInCluster: state.routeCount,
    writeWindowMs: timing.lastWriteMs - timing.firstWriteMs,
    retries: timing.retries,
    revision,
    predicted: converged.predicted,
    publishedMs: (published?.timeMs ?? Number.NaN) - timing.lastWriteMs,
    compiledMs: (compiled?.timeMs ?? Number.NaN) - timing.lastWriteMs,
    operatorCompileMs: Number(compiled?.fields["compileMs"] ?? Number.NaN),
    swappedMs: swapTimes.map((time) => time - timing.lastWriteMs),
    observedMs: gateways.map((g) => (poller.firstSeen(g.name, revision) ?? Number.NaN) - timing.lastWriteMs),
    publishToSwapMs: swapTimes.map((time) => time - (published?.timeMs ?? Number.NaN)),
    statusMs,
    sampleProblems,
  };
}

function sampleIndexes(from: number, to: number): number[] {
  return [...new Set([from, Math.floor((from + to) / 2), to - 1])];
}

// ---- revocation ---------------------------------------------------------------------------------------------

interface RevocationRound {
  readonly postStatus: number;
  readonly postBody: string;
  /** From just before the POST: the 202 arrived. */
  readonly postMs: number;
  /** Per gateway, from just before the POST: its eviction log line, and the first 401 for the token. */
  readonly evictedMs: readonly number[];
  readonly rejectedMs: readonly number[];
  /** Gateways that still answered 200 after the AS had revoked the token (served from their cache). */
  readonly servedFromCache: number;
}

async function probe(gateway: GatewayProcess, token: string): Promise<number> {
  const response = await gateway.publicPool.request({
    path: `${REVOCATION_PATH}/item`,
    method: "GET",
    headers: { authorization: `Bearer ${token}` },
  });
  await response.body.dump();
  return response.statusCode;
}

async function revokeAtAs(world: World, token: string): Promise<void> {
  const response = await request(world.as.revocationEndpoint, {
    method: "POST",
    headers: {
      authorization: `Basic ${Buffer.from("gateway:gateway-secret").toString("base64")}`,
      "content-type": "application/x-www-form-urlencoded",
    },
    body: new URLSearchParams({ token, token_type_hint: "access_token" }).toString(),
  });
  const text = await response.body.text();
  if (response.statusCode !== 200) throw new Error(`AS revocation: HTTP ${response.statusCode}: ${text}`);
}

async function revocationRound(world: World, tokens: TokenSource): Promise<RevocationRound> {
  const operator = world.operator;
  if (operator === undefined) throw new Error("operator not started");
  const gateways = world.gateways;
  const token = await tokens.token("read_invoice");
  // Cache the token's facts in every gateway (first request introspects, second is a cache hit).
  for (const gateway of gateways) {
    for (let i = 0; i < 2; i += 1) {
      const status = await probe(gateway, token);
      if (status !== 200)
        throw new Error(`${gateway.name}: warm-up request answered ${status}, expected 200`);
    }
  }
  await revokeAtAs(world, token);
  let servedFromCache = 0;
  for (const gateway of gateways) if ((await probe(gateway, token)) === 200) servedFromCache += 1;

  const startMs = Date.now();
  const deadline = startMs + 15_000;
  const rejected = gateways.map(async (gateway) => {
    while (Date.now() < deadline) {
      const status = await probe(gateway, token);
      if (status === 401) return Date.now() - startMs;
      await sleep(5);
    }
    return Number.NaN;
  });
  const response = await request(`${operator.snapshotUrl}${REVOCATIONS_PATH}`, {
    method: "POST",
    headers: { authorization: `Bearer ${world.revokerToken}`, "content-type": "application/json" },
    body: JSON.stringify({ tokens: [token] }),
  });
  const postBody = await response.body.text();
  const postMs = Date.now() - startMs;
  const rejectedMs = await Promise.all(rejected);
  await until(
    () => gateways.every((g) => g.log.find(EVICTED, (e) => e.timeMs >= startMs) !== undefined),
    3_000,
    () => `"${EVICTED}" lines`,
  ).catch((error: unknown) => log(String(error)));
  return {
    postStatus: response.statusCode,
    postBody,
    postMs,
    evictedMs: gateways.map(
      (g) => (g.log.find(EVICTED, (e) => e.timeMs >= startMs)?.timeMs ?? Number.NaN) - startMs,
    ),
    rejectedMs,
    servedFromCache,
  };
}

// ---- swap with a large snapshot -----------------------------------------------------------------------------

interface GatewayMemory {
  readonly name: string;
  readonly rssBytes: number;
  readonly hwmBytes: number;
  readonly heapUsedBytes: number;
}

async function gatewayMemory(gateways: readonly GatewayProcess[]): Promise<GatewayMemory[]> {
  return Promise.all(
    gateways.map(async (gateway) => {
      const { rss, hwm } = memory(gateway.process.pid);
      const metrics = await scrape(gateway.adminUrl);
      return {
        name: gateway.name,
        rssBytes: rss,
        hwmBytes: hwm,
        heapUsedBytes: metricValue(metrics, "nodejs_heap_size_used_bytes"),
      };
    }),
  );
}

interface SwapRound {
  readonly step: StepResult;
  /** Per gateway: CPU time (user + system) it used from just before the write until 1 s after convergence. */
  readonly gatewayCpuMs: readonly number[];
  /** Mean ACK latency of this revision over the fleet (operator histogram: Δsum / Δcount). */
  readonly ackMeanMs: number;
  readonly acks: number;
  readonly memory: readonly GatewayMemory[];
}

interface LateJoiner {
  readonly name: string;
  /** From spawning the process to serving the current revision (its log line, else /readyz). */
  readonly spawnToServingMs: number;
  readonly memory: GatewayMemory;
}

/** A new gateway (empty state dir, like a new pod) joins the fleet and receives the large snapshot once. */
async function joinLate(world: World, revision: string, temp: string): Promise<LateJoiner> {
  const operator = world.operator;
  if (operator === undefined) throw new Error("operator not started");
  const name = `gw-${world.gateways.length + 1}`;
  log(`${name}: a new gateway joins and receives the ${revision} snapshot`);
  const spawnedMs = Date.now();
  const gateway = await startGatewayProcess(name, operator.snapshotUrl, world.gatewayToken, temp);
  world.gateways.push(gateway);
  const poller = new ReadyzPoller([gateway]);
  poller.start(20);
  await until(
    () => poller.allOn(revision),
    120_000,
    () => `${name} serving ${revision}`,
  ).finally(() => poller.stop());
  const swapped = gateway.log.find(SWAPPED, (e) => e.fields["revision"] === revision)?.timeMs;
  const servingMs = swapped ?? poller.firstSeen(name, revision) ?? Number.NaN;
  await sleep(1_000);
  const [memoryNow] = await gatewayMemory([gateway]);
  if (memoryNow === undefined) throw new Error("no memory figures");
  return { name, spawnToServingMs: servingMs - spawnedMs, memory: memoryNow };
}

// ---- the report ---------------------------------------------------------------------------------------------

interface Report {
  date: string;
  machine: { cpu: string; cores: number; memoryBytes: number; kube?: string; etcd?: string };
  options: Record<string, unknown>;
  operatorFlags?: readonly string[];
  loadStart: string;
  loadEnd?: string;
  compile?: CompileFigures;
  swapInProcess?: SwapFigures;
  /** Heap held by one validated snapshot + its serving state (in process, after full GCs). */
  retainedHeapBytes?: number;
  profile?: string;
  steps: StepResult[];
  revocations: RevocationRound[];
  /** With the initial snapshot (the revocation route only). */
  memoryAtStart?: readonly GatewayMemory[];
  memoryBeforeScale?: readonly GatewayMemory[];
  scale?: StepResult;
  swapRounds: SwapRound[];
  operatorRssBytes?: number;
  lateJoiner?: LateJoiner;
  targets: Target[];
}

function printSteps(title: string, steps: readonly StepResult[]): void {
  if (steps.length === 0) return;
  console.log(`\n${title}`);
  console.log(
    table(
      [
        "step",
        "writes",
        "write window",
        "→ published",
        "→ swapped p50",
        "→ swapped max",
        "→ /readyz max",
        "→ status Programmed",
      ],
      steps.map((s) => {
        const swapped = distribution(s.swappedMs);
        return [
          `${s.label}${s.predicted ? "" : " (*)"}`,
          String(s.writes),
          seconds(s.writeWindowMs),
          ms(s.publishedMs),
          ms(swapped.p50),
          ms(swapped.max),
          ms(distribution(s.observedMs).max),
          s.statusMs === undefined ? "-" : seconds(s.statusMs, 1),
        ];
      }),
    ),
  );
  console.log(
    '(times from the answer to the last write; "swapped": the gateway\'s own log line; "/readyz": first poll that showed it)',
  );
  if (steps.some((s) => !s.predicted)) {
    console.log("(*) the operator settled on another revision than the in-process compile predicted");
  }
  for (const s of steps) {
    if (s.sampleProblems.length > 0)
      console.log(`${s.label}: sample requests: ${s.sampleProblems.join("; ")}`);
    if (s.retries > 0) console.log(`${s.label}: ${s.retries} write(s) retried`);
  }
}

function printReport(report: Report, options: Options): void {
  console.log(`\nPropagation benchmark — ${report.date}`);
  console.log(
    `machine: ${report.machine.cpu} × ${report.machine.cores}, ${mib(report.machine.memoryBytes)} RAM, Node ${process.version}${report.machine.kube === undefined ? "" : `, kube-apiserver ${report.machine.kube}, etcd ${report.machine.etcd ?? "?"}`}`,
  );
  console.log(`uptime at start: ${report.loadStart}`);
  if (report.operatorFlags !== undefined) console.log(`operator flags: ${report.operatorFlags.join(" ")}`);
  const targets = report.targets;

  if (report.compile !== undefined) {
    const c = report.compile;
    console.log(
      `\nCompile (in process): ${c.objects} objects → ${c.routes} routes (${c.rejected} rejected), snapshot line ${mib(c.snapshotBytes)}: median ${ms(c.medianMs)} of ${c.runsMs.length} runs (${c.runsMs.map((v) => ms(v)).join(", ")})`,
    );
    targets.push({
      name: `compile ${options.compileRoutes} ApiRoutes (median, in process)`,
      value: ms(c.medianMs),
      target: "< 1 s",
      met: c.medianMs < 1000,
    });
  }
  if (report.swapInProcess !== undefined) {
    const s = report.swapInProcess;
    if (report.retainedHeapBytes !== undefined) {
      console.log(
        `Heap held by one ${s.routes}-route snapshot + its serving state (in process, after full GCs): ${mib(report.retainedHeapBytes)}`,
      );
    }
    console.log(
      `Gateway snapshot handling (in process), ${s.routes} routes, ${mib(s.snapshotBytes)} line, median of ${s.totalRunsMs.length}: JSON.parse ${ms(s.parseMs)} + validate ${ms(s.validateMs)} + build router & swap ${ms(s.buildMs)} = ${ms(s.totalMs)}`,
    );
  }

  printSteps(
    `Propagation: ${options.routes} ApiRoutes, ${options.gateways} gateways, writer ${options.writer}${options.writer === "ssa" ? ` (${options.concurrency} in flight)` : ""}`,
    report.steps,
  );
  const changes = report.steps.filter((s) => s.label.startsWith("change"));
  if (changes.length > 0) {
    const perGateway = distribution(changes.flatMap((s) => s.swappedMs));
    const observed = distribution(changes.flatMap((s) => s.observedMs));
    const allConverged = distribution(changes.map((s) => distribution(s.swappedMs).max));
    const compiled = distribution(changes.map((s) => s.compiledMs));
    const publishToSwap = distribution(changes.flatMap((s) => s.publishToSwapMs));
    console.log(`\nChange rounds (${changes.length}), from the last write:`);
    console.log(`  per gateway, swapped in:            ${describe(perGateway)}`);
    console.log(`  per gateway, seen on /readyz:       ${describe(observed)}`);
    console.log(`  all ${options.gateways} gateways converged (per round): ${describe(allConverged)}`);
    console.log(`  operator compiled (incl. debounce): ${describe(compiled)}`);
    console.log(
      `  … compile() in the operator:      ${describe(distribution(changes.map((s) => s.operatorCompileMs)))}`,
    );
    console.log(`  operator publish → gateway swapped: ${describe(publishToSwap)}`);
    targets.push({
      name: `change ${options.routes} routes: last write → gateway serves it, p99 over ${perGateway.count} (gateway × round)`,
      value: ms(perGateway.p99),
      target: "< 1 s",
      met: perGateway.p99 < 1000,
    });
    targets.push({
      name: `… end-to-end: last write → all ${options.gateways} converged, worst round`,
      value: ms(allConverged.max),
      target: "(< 1 s)",
      met: allConverged.max < 1000,
    });
  }

  if (report.revocations.length > 0) {
    const rounds = report.revocations;
    console.log(
      `\nRevocation fan-out (${rounds.length} rounds, ${options.gateways} gateways), from just before the POST:`,
    );
    console.log(
      table(
        [
          "round",
          "POST",
          "202 after",
          "evicted (log) max",
          "401 seen max",
          "served from cache after AS revoked",
        ],
        rounds.map((r, index) => [
          String(index + 1),
          `${r.postStatus} ${r.postBody}`,
          ms(r.postMs),
          ms(distribution(r.evictedMs).max),
          ms(distribution(r.rejectedMs).max),
          `${r.servedFromCache}/${options.gateways}`,
        ]),
      ),
    );
    const allRejected = distribution(rounds.map((r) => distribution(r.rejectedMs).max));
    console.log(
      `  per gateway, eviction logged: ${describe(distribution(rounds.flatMap((r) => r.evictedMs)))}`,
    );
    console.log(
      `  per gateway, first 401:       ${describe(distribution(rounds.flatMap((r) => r.rejectedMs)))}`,
    );
    console.log(`  all gateways answer 401:      ${describe(allRejected)}`);
    targets.push({
      name: `revocation: POST → every gateway answers 401, p99 over ${allRejected.count} rounds`,
      value: ms(allRejected.p99),
      target: "< 1 s",
      met: allRejected.p99 < 1000,
    });
  }

  if (report.scale !== undefined)
    printSteps(`Growing the cluster to ${options.swapRoutes} ApiRoutes`, [report.scale]);
  if (report.swapRounds.length > 0) {
    console.log(
      `\nSwap with ${options.swapRoutes} ApiRoutes: one route changed per round, the whole snapshot republished`,
    );
    console.log(
      table(
        [
          "round",
          "last write → published",
          "operator compile",
          "publish → swapped p50",
          "publish → swapped max",
          "ACK latency (mean)",
          "last write → all swapped",
          "gateway CPU p50",
          "max VmRSS",
          "max VmHWM",
        ],
        report.swapRounds.map((r, index) => {
          const d = distribution(r.step.publishToSwapMs);
          return [
            String(index + 1),
            ms(r.step.publishedMs),
            ms(r.step.operatorCompileMs),
            ms(d.p50),
            ms(d.max),
            `${ms(r.ackMeanMs)} (${r.acks} ACKs)`,
            ms(distribution(r.step.swappedMs).max),
            ms(distribution(r.gatewayCpuMs).p50),
            mib(Math.max(...r.memory.map((m) => m.rssBytes))),
            mib(Math.max(...r.memory.map((m) => m.hwmBytes))),
          ];
        }),
      ),
    );
    const last = report.swapRounds[report.swapRounds.length - 1];
    if (last !== undefined) {
      console.log(
        "\nGateway memory after the last round (VmRSS/VmHWM from /proc/<pid>/status, heap from /metrics):",
      );
      console.log(
        table(
          [
            "gateway",
            "VmRSS",
            "VmHWM",
            "heap used",
            `VmRSS with ${options.routes} routes`,
            "VmRSS with 1 route (start)",
            "heap used (start)",
          ],
          last.memory.map((m) => [
            m.name,
            mib(m.rssBytes),
            mib(m.hwmBytes),
            mib(m.heapUsedBytes),
            mib(report.memoryBeforeScale?.find((b) => b.name === m.name)?.rssBytes),
            mib(report.memoryAtStart?.find((b) => b.name === m.name)?.rssBytes),
            mib(report.memoryAtStart?.find((b) => b.name === m.name)?.heapUsedBytes),
          ]),
        ),
      );
      if (report.operatorRssBytes !== undefined) {
        console.log(`operator VmRSS with ${options.swapRoutes} ApiRoutes: ${mib(report.operatorRssBytes)}`);
      }
      const late = report.lateJoiner;
      if (late !== undefined) {
        console.log(
          `a new gateway (${late.name}, empty state dir) serving the ${options.swapRoutes}-route snapshot ${ms(late.spawnToServingMs)} after spawn (Node start-up included): VmRSS ${mib(late.memory.rssBytes)}, VmHWM ${mib(late.memory.hwmBytes)}, heap used ${mib(late.memory.heapUsedBytes)}`,
        );
      }
      const maxRss = Math.max(...last.memory.map((m) => m.rssBytes));
      targets.push({
        name: `gateway VmRSS with a ${options.swapRoutes}-route snapshot, after the rounds (max over gateways)`,
        value: mib(maxRss),
        target: "< 200 MB (190.7 MiB)",
        met: maxRss < 200 * 1000 * 1000,
      });
      if (late !== undefined) {
        targets.push({
          name: "… a new gateway that received that snapshot once",
          value: mib(late.memory.rssBytes),
          target: "(< 200 MB)",
          met: late.memory.rssBytes < 200 * 1000 * 1000,
        });
      }
    }
    const publishToSwap = distribution(report.swapRounds.flatMap((r) => r.step.publishToSwapMs));
    console.log(
      `  publish → swapped, ${options.gateways} gateways at once on this machine: ${describe(publishToSwap)}`,
    );
  }
  if (report.swapInProcess !== undefined) {
    const s = report.swapInProcess;
    targets.push({
      name: `swap-in of a ${s.routes}-route snapshot: parse + validate + build + swap (in process)`,
      value: ms(s.totalMs),
      target: "< 100 ms",
      met: s.totalMs < 100,
    });
    targets.push({
      name: "… of which build router & swap alone",
      value: ms(s.buildMs),
      target: "(< 100 ms)",
      met: s.buildMs < 100,
    });
  }
  if (targets.length > 0) {
    console.log("\nTargets:");
    console.log(targetsTable(targets));
  }
  if (report.profile !== undefined) console.log(`\nCPU profiles (in process):\n${report.profile}`);
  console.log(`\nuptime at start: ${report.loadStart}`);
  console.log(`uptime at end:   ${report.loadEnd ?? "-"}`);
}

// ---- main ---------------------------------------------------------------------------------------------------

let world: World | undefined;
let tempDir: string | undefined;

async function main(): Promise<void> {
  const options = parseOptions();
  setPinning(false);
  const temp = mkdtempSync(join(tmpdir(), "phantomgate-propagation-bench-"));
  tempDir = temp;
  const report: Report = {
    date: new Date().toISOString(),
    machine: { cpu: cpus()[0]?.model ?? "unknown", cores: cpus().length, memoryBytes: totalmem() },
    options: { ...options, parts: [...options.parts] },
    loadStart: uptime(),
    steps: [],
    revocations: [],
    swapRounds: [],
    targets: [],
  };
  log(`uptime: ${report.loadStart}`);
  log(warmCompileCache());
  // The in-process parts need no URLs that resolve: compile never calls out.
  const offline: FixtureOptions = {
    namespace: "bench",
    issuer: "http://127.0.0.1:9",
    upstream: "http://127.0.0.1:9",
  };
  try {
    // 1. In process, before anything else runs.
    if (options.parts.has("compile")) {
      log(`compile: ${options.compileRoutes} ApiRoutes, ${options.compileRuns} runs`);
      report.compile = measureCompile(offline, options.compileRoutes, options.compileRuns);
      log(`compile: median ${ms(report.compile.medianMs)}`);
      log(
        `gateway snapshot handling: ${options.swapRoutes} routes, ${Math.max(10, options.compileRuns)} runs`,
      );
      report.swapInProcess = measureSwap(offline, options.swapRoutes, Math.max(10, options.compileRuns));
      log(`gateway snapshot handling: median ${ms(report.swapInProcess.totalMs)}`);
      report.retainedHeapBytes = measureRetainedHeap(offline, options.swapRoutes);
      log(`heap held for one ${options.swapRoutes}-route snapshot: ${mib(report.retainedHeapBytes)}`);
    }
    if (options.profile) {
      log("profiling compile and snapshot handling in process");
      report.profile = await profileInProcess(offline, options.compileRoutes, temp);
    }

    const clusterParts = (["propagation", "revocation", "swap"] as const).filter((p) => options.parts.has(p));
    if (clusterParts.length > 0) {
      world = await createWorld(log, options.operatorArgs);
      const w = world;
      report.machine.kube = w.cluster.tools.kubeVersion;
      report.machine.etcd = w.cluster.tools.etcdVersion;
      report.operatorFlags = w.operatorArgs;
      const state = new DesiredState();
      const base = baseObjects(w.fixture);
      state.set(base);
      await w.admin.applyAll(base, 4);
      log(`starting the operator and ${options.gateways} gateway(s)`);
      await startFleet(w, options.gateways, temp);
      const first = state.expectedRevision();
      const initial = new ReadyzPoller(w.gateways);
      initial.start(100);
      await until(
        () => initial.allOn(first),
        120_000,
        () => `gateways serving the initial revision ${first}`,
      ).finally(() => initial.stop());
      log("fleet connected and serving the initial snapshot");
      await sleep(1_000);
      report.memoryAtStart = await gatewayMemory(w.gateways);

      const stepOptions = (routes: number, sample: readonly number[]): StepOptions => ({
        measureStatus: true,
        statusPollMs: Math.max(500, Math.round(routes / 2)),
        timeoutMs: 120_000 + routes * 20,
        sample,
      });

      // 2. Create N routes, then change all of them, round after round.
      if (options.parts.has("propagation") || options.parts.has("swap")) {
        const created = state.setRoutes(w.fixture, 0, options.routes, 1);
        report.steps.push(
          await propagate(
            w,
            state,
            `create ${options.routes}`,
            created,
            options,
            stepOptions(options.routes, sampleIndexes(0, options.routes)),
            temp,
          ),
        );
      }
      if (options.parts.has("propagation")) {
        for (let round = 1; round <= options.rounds; round += 1) {
          const changed = state.setRoutes(w.fixture, 0, options.routes, round + 1);
          report.steps.push(
            await propagate(
              w,
              state,
              `change ${options.routes} #${round}`,
              changed,
              options,
              stepOptions(options.routes, sampleIndexes(0, options.routes)),
              temp,
            ),
          );
        }
      }

      // 3. Revocations.
      if (options.parts.has("revocation")) {
        const tokens = tokenSource(w.as.tokenEndpoint, 2);
        try {
          for (let round = 1; round <= options.revocations; round += 1) {
            log(`revocation round ${round}/${options.revocations}`);
            report.revocations.push(await revocationRound(w, tokens));
            await sleep(500);
          }
        } finally {
          await tokens.close();
        }
      }

      // 4. Grow to the large snapshot, then republish it a few times.
      if (options.parts.has("swap")) {
        report.memoryBeforeScale = await gatewayMemory(w.gateways);
        if (options.swapRoutes > state.routeCount) {
          const from = state.routeCount;
          const grown = state.setRoutes(w.fixture, from, options.swapRoutes, 1);
          report.scale = await propagate(
            w,
            state,
            `create ${options.swapRoutes - from} more`,
            grown,
            options,
            {
              ...stepOptions(options.swapRoutes, sampleIndexes(from, options.swapRoutes)),
              statusPollMs: 5_000,
            },
            temp,
          );
        }
        await sleep(1_000);
        for (let round = 1; round <= options.swapRounds; round += 1) {
          const before = await operatorMetrics(w);
          const cpuBefore = w.gateways.map((g) => cpuSeconds(g.process.pid));
          const generation = (state.generations.get(0) ?? 1) + 1;
          const changed = state.setRoutes(w.fixture, 0, 1, generation);
          const step = await propagate(
            w,
            state,
            `swap #${round}`,
            changed,
            options,
            { ...stepOptions(options.swapRoutes, [0]), measureStatus: false },
            temp,
            100,
          );
          const after = await operatorMetrics(w);
          const delta = (name: string): number => metricValue(after, name) - metricValue(before, name);
          const acks = delta("phantomgate_operator_ack_latency_seconds_count");
          await sleep(1_000);
          report.swapRounds.push({
            step,
            gatewayCpuMs: w.gateways.map((g, i) => (cpuSeconds(g.process.pid) - (cpuBefore[i] ?? 0)) * 1000),
            acks,
            ackMeanMs:
              acks > 0 ? (delta("phantomgate_operator_ack_latency_seconds_sum") / acks) * 1000 : Number.NaN,
            memory: await gatewayMemory(w.gateways),
          });
        }
        if (w.operator !== undefined) report.operatorRssBytes = memory(w.operator.process.pid).rss;
        const current = report.swapRounds[report.swapRounds.length - 1]?.step.revision;
        if (current !== undefined) report.lateJoiner = await joinLate(w, current, temp);
      }
    }
    report.loadEnd = uptime();
    printReport(report, options);
    if (options.json !== undefined) {
      writeFileSync(options.json, `${JSON.stringify(report, null, 2)}\n`);
      console.log(`\nJSON written to ${options.json}`);
    }
  } finally {
    await world?.close();
    world = undefined;
    await stopAll();
    rmSync(temp, { recursive: true, force: true });
  }
}

let interrupted = false;
const onSignal = (signal: NodeJS.Signals): void => {
  if (interrupted) return;
  interrupted = true;
  log(`${signal}: stopping every process`);
  // The cluster harness kills etcd and kube-apiserver in its own exit hook; the rest is stopped here.
  void stopAll(2000).finally(() => {
    if (tempDir !== undefined) rmSync(tempDir, { recursive: true, force: true });
    process.exit(130);
  });
};
process.on("SIGINT", onSignal);
process.on("SIGTERM", onSignal);
process.on("exit", killAllNow);

main().catch(async (error: unknown) => {
  log(`failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
  await world?.close().catch(() => undefined);
  await stopAll(2000);
  process.exitCode = 1;
});
