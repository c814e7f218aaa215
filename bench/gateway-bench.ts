// `npm run bench`: throughput and latency of the gateway against baselines measured in the same invocation.
// Not a test: nothing here asserts on timing; it prints figures, ratios and whether the targets were met.
//
// Layout (2 cores): the process under test runs alone on core 0; the load generator, the hello upstream, the
// demo authorization server and this driver share core 1. Every variant runs once per round, rounds
// interleaved (order rotated each round), and the table shows the median over rounds, so drift hits all alike.
//
//   node bench/gateway-bench.ts [--help]      (BENCH_QUICK=1 for a smoke run)
import { fork, spawn, spawnSync, type ChildProcess } from "node:child_process";
import {
  closeSync,
  copyFileSync,
  mkdtempSync,
  openSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { startDemoAuthServer } from "../src/demo/auth-server.ts";
import { get, manyTokens, metricValue, scrape, tokenSource, type TokenSource } from "./lib/http.ts";
import { JWT_AUDIENCE, writeBenchConfig } from "./lib/manifests.ts";
import {
  benchCpuSeconds,
  checkPinning,
  coreTimes,
  cpuSeconds,
  killAllNow,
  memory,
  pinProcess,
  setPinning,
  spawnPinned,
  stopAll,
  track,
  warmCompileCache,
  type Spawned,
} from "./lib/processes.ts";
import { formatAllocations, summariseAllocations, type SamplingHeapProfile } from "./lib/allocations.ts";
import { formatProfile, summariseProfile } from "./lib/profile.ts";
import type { GeneratorMessage, LoadJob, LoadResult } from "./lib/protocol.ts";
import { commandLineFlags, mallocEnv, runTimeFlag } from "../bin/start-up-settings.js";
import { numberSetting } from "./lib/options.ts";
import { median } from "./lib/stats.ts";
import { ensureWrk, runWrk } from "./lib/wrk.ts";

const repo = fileURLToPath(new URL("../", import.meta.url));
const gatewayBin = join(repo, "bin/phantomgate.js");
const SUT_CORE = 0;
const LOAD_CORE = 1;
const SCOPE = "read_invoice";
/**
 * V8 settings every gateway runs with (bin/phantomgate.js sets them); the baselines get them too, so the ratios
 * compare work done, not runtime settings.
 */
const RUNTIME_FLAGS = [...commandLineFlags, runTimeFlag];

// ---- options ------------------------------------------------------------------------------------------------

const PARTS = ["main", "half", "single-flight", "rss", "profile", "alloc", "survivors"] as const;
type Part = (typeof PARTS)[number];

interface Options {
  readonly quick: boolean;
  readonly rounds: number;
  readonly warmupMs: number;
  readonly durationMs: number;
  readonly connections: number;
  readonly halfConnections: number;
  readonly halfRounds: number;
  /** Fixed rate for the latency runs instead of half the gateway's max (NaN: half the max). */
  readonly halfRate: number;
  /** Unmeasured load before each fixed-rate run. */
  readonly halfWarmupMs: number;
  readonly singleFlightRequests: number;
  readonly rssTokens: readonly number[];
  readonly missTokens: number;
  readonly parts: ReadonlySet<Part>;
  readonly waitQuietSeconds: number;
  readonly json: string | undefined;
  readonly pin: boolean;
  readonly generator: "auto" | "wrk" | "node";
  readonly install: boolean;
  readonly maxOtherCpu: number;
  readonly retries: number;
  /** Audit target of the profiled gateway: a file, or none. */
  readonly profileAudit: "file" | "off";
  /** Node/V8 flags of the extra "tuned" bare-proxy and gateway variants; empty: no tuned variants. */
  readonly tunedFlags: readonly string[];
}

const usage = `Usage: node bench/gateway-bench.ts [flags]      (npm run bench -- [flags])

Flags (environment variable in brackets):
  --rounds N            rounds of every variant, median reported      [BENCH_ROUNDS]      default 5
  --duration S          measured seconds per run                      [BENCH_DURATION]    default 8
  --warmup S            unmeasured warm-up seconds before each run    [BENCH_WARMUP]      default 2
  --connections N       keep-alive connections for max-throughput runs [BENCH_CONNECTIONS] default 32
  --half-connections N  connections for the fixed-rate runs           [BENCH_HALF_CONNECTIONS] default 64
  --half-rounds N       rounds of the fixed-rate runs (p99 is noisy)  [BENCH_HALF_ROUNDS] default 7
  --half-warmup S       warm-up seconds before each fixed-rate run    [BENCH_HALF_WARMUP] default 6 (each
                        variant sat idle while the others ran, and V8 collects its old generation once or
                        twice in the first seconds of load after that: not the steady state measured)
  --half-rate N         req/s of the fixed-rate runs                  [BENCH_HALF_RATE]   default half the
                        gateway's max (audit file); another rate shows latency at another load
  --single-flight N     concurrent requests with one fresh token      [BENCH_SINGLE_FLIGHT] default 1000
  --rss-tokens LIST     cached-token counts to measure RSS at         [BENCH_RSS_TOKENS]  default 20000,100000
  --miss-tokens N       distinct tokens rotated in the cache-miss run [BENCH_MISS_TOKENS] default 512
  --parts LIST          of ${PARTS.join(",")}                          [BENCH_PARTS]
                        default main,half,single-flight,rss (profile: CPU profile of the gateway, cache hit;
                        alloc: bytes allocated per cache-hit request, by function, gateway and dispatch proxy;
                        survivors: bytes per request that outlive the young generation at the fixed rate)
  --profile             same as adding "profile" to --parts           [BENCH_PROFILE=1]
                        (the profiled gateway writes its audit to a file; BENCH_PROFILE_AUDIT=off: none)
  --wait-quiet S        wait up to S seconds for 1-min load avg < 1   [BENCH_WAIT_QUIET]  default 0
  --json FILE           also write every figure as JSON to FILE       [BENCH_JSON]
  --no-pin              do not pin processes to cores (not comparable) [BENCH_NO_PIN=1]
  --generator G         closed-loop load: auto (wrk if present, else node), wrk, node  [BENCH_GENERATOR]
                        (fixed-rate and burst runs always use the built-in Node.js generator)
  --tuned-flags FLAGS   node flags for extra "tuned" bare-proxy and gateway variants, to try a runtime
                        setting against the defaults (e.g. --max-semi-space-size=64) [BENCH_TUNED_FLAGS]
                        default none
  --max-other-cpu P     repeat a run when other processes used > P % of a core [BENCH_MAX_OTHER_CPU] default 10
  --retries N           … at most N times (least disturbed attempt kept) [BENCH_RETRIES] default 2 (quick: 0)
  BENCH_NO_INSTALL=1    never apt-get install wrk when it is missing
  BENCH_QUICK=1         smoke run: 1 round, 0.5 s warm-up, 1.5 s runs, 2,000 tokens for RSS
  BENCH_CHILD_OUTPUT=DIR also keep every line each child process prints in DIR/<name>.log
`;

function parseOptions(): Options {
  const { values } = parseArgs({
    options: {
      rounds: { type: "string" },
      duration: { type: "string" },
      warmup: { type: "string" },
      connections: { type: "string" },
      "half-connections": { type: "string" },
      "half-rounds": { type: "string" },
      "half-rate": { type: "string" },
      "half-warmup": { type: "string" },
      "single-flight": { type: "string" },
      "rss-tokens": { type: "string" },
      "miss-tokens": { type: "string" },
      parts: { type: "string" },
      profile: { type: "boolean" },
      "wait-quiet": { type: "string" },
      json: { type: "string" },
      "no-pin": { type: "boolean" },
      generator: { type: "string" },
      "max-other-cpu": { type: "string" },
      "tuned-flags": { type: "string" },
      retries: { type: "string" },
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
  const number = numberSetting;
  const parts = new Set(
    (values.parts ?? env["BENCH_PARTS"] ?? "main,half,single-flight,rss")
      .split(",")
      .map((part) => part.trim())
      .filter((part) => part !== ""),
  );
  for (const part of parts) {
    if (!(PARTS as readonly string[]).includes(part))
      throw new Error(`unknown part ${part}; parts: ${PARTS.join(",")}`);
  }
  if (values.profile === true || env["BENCH_PROFILE"] === "1") parts.add("profile");
  const rssList = (values["rss-tokens"] ?? env["BENCH_RSS_TOKENS"] ?? (quick ? "2000" : "20000,100000"))
    .split(",")
    .map(Number)
    .filter((count) => Number.isInteger(count) && count > 0)
    .sort((a, b) => a - b);
  return {
    quick,
    rounds: Math.round(number(values.rounds, "BENCH_ROUNDS", quick ? 1 : 5, 1)),
    warmupMs: number(values.warmup, "BENCH_WARMUP", quick ? 0.5 : 2, 0) * 1000,
    durationMs: number(values.duration, "BENCH_DURATION", quick ? 1.5 : 8, 0.1) * 1000,
    connections: Math.round(number(values.connections, "BENCH_CONNECTIONS", 32, 1)),
    halfConnections: Math.round(number(values["half-connections"], "BENCH_HALF_CONNECTIONS", 64, 1)),
    halfRounds: Math.round(number(values["half-rounds"], "BENCH_HALF_ROUNDS", quick ? 1 : 7, 1)),
    halfRate: Math.round(number(values["half-rate"], "BENCH_HALF_RATE", Number.NaN, 1)),
    halfWarmupMs: number(values["half-warmup"], "BENCH_HALF_WARMUP", quick ? 0.5 : 6, 0) * 1000,
    singleFlightRequests: Math.round(number(values["single-flight"], "BENCH_SINGLE_FLIGHT", 1000, 1)),
    rssTokens: rssList,
    missTokens: Math.round(number(values["miss-tokens"], "BENCH_MISS_TOKENS", 512, 1)),
    parts: parts as Set<Part>,
    waitQuietSeconds: number(values["wait-quiet"], "BENCH_WAIT_QUIET", 0, 0),
    json: values.json ?? env["BENCH_JSON"],
    pin: values["no-pin"] !== true && env["BENCH_NO_PIN"] !== "1",
    generator: parseGenerator(values.generator ?? env["BENCH_GENERATOR"] ?? "auto"),
    install: env["BENCH_NO_INSTALL"] !== "1",
    maxOtherCpu: number(values["max-other-cpu"], "BENCH_MAX_OTHER_CPU", 10, 0),
    retries: Math.round(number(values.retries, "BENCH_RETRIES", quick ? 0 : 2, 0)),
    profileAudit: env["BENCH_PROFILE_AUDIT"] === "off" ? "off" : "file",
    tunedFlags: (values["tuned-flags"] ?? env["BENCH_TUNED_FLAGS"] ?? "")
      .split(/\s+/)
      .filter((flag) => flag !== ""),
  };
}

function parseGenerator(value: string): Options["generator"] {
  if (value === "auto" || value === "wrk" || value === "node") return value;
  throw new Error(`--generator: expected auto, wrk or node, got ${value}`);
}

// ---- formatting ---------------------------------------------------------------------------------------------

const ms = (value: number): string => (Number.isFinite(value) ? value.toFixed(3) : "-");
const fixed = (value: number, digits = 0): string => (Number.isFinite(value) ? value.toFixed(digits) : "-");
const mib = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
const loadAverage = (): string =>
  loadavg()
    .map((value) => value.toFixed(2))
    .join(" ");

function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((title, column) =>
    Math.max(title.length, ...rows.map((row) => (row[column] ?? "").length)),
  );
  const line = (cells: readonly string[]): string =>
    `| ${cells.map((cell, column) => (column === 0 ? cell.padEnd(widths[column] ?? 0) : cell.padStart(widths[column] ?? 0))).join(" | ")} |`;
  const rule = `|${widths.map((width, column) => (column === 0 ? `:${"-".repeat(width + 1)}` : `${"-".repeat(width + 1)}:`)).join("|")}|`;
  return [line(header), rule, ...rows.map(line)].join("\n");
}

function log(message: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${message}\n`);
}

// ---- load generator -----------------------------------------------------------------------------------------

class LoadGenerator {
  readonly #child;
  readonly #waiting = new Map<
    number,
    { resolve: (result: LoadResult) => void; reject: (error: Error) => void }
  >();
  #nextId = 1;

  private constructor(child: ReturnType<typeof fork>) {
    this.#child = child;
    child.on("message", (message: GeneratorMessage) => {
      if (message.type === "result") {
        this.#waiting.get(message.result.id)?.resolve(message.result);
        this.#waiting.delete(message.result.id);
      } else if (message.type === "failed") {
        this.#waiting.get(message.id)?.reject(new Error(`load generator: ${message.message}`));
        this.#waiting.delete(message.id);
      }
    });
    child.once("exit", (code) => {
      for (const waiter of this.#waiting.values())
        waiter.reject(new Error(`load generator exited (${code ?? "signal"})`));
      this.#waiting.clear();
    });
  }

  static async start(): Promise<LoadGenerator> {
    const child = fork(fileURLToPath(new URL("load-generator.ts", import.meta.url)), [], {
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    track(child);
    await new Promise<void>((resolve, reject) => {
      child.once("message", (message: GeneratorMessage) => {
        if (message.type === "ready") resolve();
      });
      child.once("exit", () => reject(new Error("load generator exited at start")));
    });
    if (child.pid !== undefined) pinProcess(child.pid, LOAD_CORE);
    return new LoadGenerator(child);
  }

  get pid(): number | undefined {
    return this.#child.pid;
  }

  run(job: Omit<LoadJob, "id">): Promise<LoadResult> {
    const id = this.#nextId;
    this.#nextId += 1;
    return new Promise((resolve, reject) => {
      this.#waiting.set(id, { resolve, reject });
      this.#child.send({ ...job, id });
    });
  }
}

// ---- processes under test -----------------------------------------------------------------------------------

interface Gateway {
  readonly process: Spawned;
  readonly port: number;
  readonly adminUrl: string;
}

async function startGateway(
  name: string,
  configDir: string,
  auditLog: string,
  nodeFlags: readonly string[] = [],
  env: Record<string, string> = {},
): Promise<Gateway> {
  const spawned = await spawnPinned({
    name,
    core: SUT_CORE,
    env,
    args: [
      ...nodeFlags,
      gatewayBin,
      "gateway",
      "--config",
      configDir,
      "--host",
      "127.0.0.1",
      "--port",
      "0",
      "--admin-port",
      "0",
      "--audit-log",
      auditLog,
      "--shutdown-grace-ms",
      "2000",
      // The load generator is one address standing for many clients: the cache-miss variant keeps 32 new tokens
      // in flight, which the per-client bound (16) would refuse half of.
      "--max-new-tokens-per-client",
      "0",
    ],
    isReady: (line) => line["msg"] === "gateway listening",
  });
  const port = Number(spawned.ready["port"]);
  const adminPort = Number(spawned.ready["adminPort"]);
  return { process: spawned, port, adminUrl: `http://127.0.0.1:${adminPort}` };
}

/**
 * A log collector, as a container runtime is for a gateway's stdout: `cat` on the load core, copying what the
 * gateway writes into a pipe (the FIFO `fifo`, made here) to `file`.
 */
function startLogCollector(fifo: string, file: string): ChildProcess {
  const made = spawnSync("mkfifo", [fifo], { encoding: "utf8" });
  if (made.status !== 0) throw new Error(`mkfifo ${fifo} failed: ${made.stderr}`);
  const fd = openSync(file, "a");
  const child = spawn("cat", [fifo], { stdio: ["ignore", fd, "inherit"] });
  closeSync(fd);
  track(child);
  if (child.pid !== undefined) pinProcess(child.pid, LOAD_CORE);
  return child;
}

function startNodeServer(
  name: string,
  core: number,
  script: string,
  args: readonly string[] = [],
  nodeFlags: readonly string[] = [],
): Promise<Spawned> {
  return spawnPinned({
    name,
    core,
    args: [...nodeFlags, fileURLToPath(new URL(script, import.meta.url)), ...args],
    isReady: (line) => line["ready"] === true,
  });
}

async function expectOk(
  url: string,
  token: string | undefined,
  what: string,
  owner?: Spawned,
): Promise<void> {
  const response = await get(url, token);
  if (response.status !== 200) {
    throw new Error(
      `${what}: GET ${url} answered ${response.status}: ${response.body.slice(0, 400)}${owner === undefined ? "" : `\n${owner.tail()}`}`,
    );
  }
}

// ---- main benchmark -----------------------------------------------------------------------------------------

interface Variant {
  readonly key: string;
  readonly label: string;
  readonly port: number;
  readonly path: string;
  readonly authorizations: readonly string[];
  /** The process whose CPU time is reported (the one on core 0). */
  readonly sut: Spawned;
  /** Admin URL when the process under test is a gateway: AS calls per request are read from its metrics. */
  readonly adminUrl?: string;
}

interface RunFigures {
  readonly result: LoadResult;
  /** CPU of the process under test over the window, in % of one core. */
  readonly sutCpu: number;
  readonly core0: number;
  readonly core1: number;
  /** CPU used by processes outside the benchmark over the window, in % of one core (interference). */
  readonly otherCpu: number;
  /** Calls from the gateway to the AS per completed request (warm-up included), gateways only. */
  readonly asCallsPerRequest: number;
}

/** How load is generated: wrk for closed-loop runs when available, the Node.js generator for everything else. */
interface Load {
  readonly generator: LoadGenerator;
  readonly wrk: boolean;
  /** Repeat a run when processes outside the benchmark used more than this (% of one core) … */
  readonly maxOtherCpu: number;
  /** … at most this many times. */
  readonly retries: number;
  readonly temp: string;
  readonly pinned: boolean;
}

interface Sample {
  readonly at: number;
  readonly sut: number;
  readonly bench: number;
  readonly cores: { busy: number; total: number }[];
}

function sample(sut: Spawned): Sample {
  return { at: performance.now(), sut: cpuSeconds(sut.pid), bench: benchCpuSeconds(), cores: coreTimes() };
}

async function measure(
  load: Load,
  variant: Variant,
  job: Pick<LoadJob, "mode" | "connections" | "warmupMs" | "durationMs"> & { rate?: number },
): Promise<RunFigures> {
  const asCalls = async (): Promise<number> =>
    variant.adminUrl === undefined
      ? Number.NaN
      : metricValue(await scrape(variant.adminUrl), "phantomgate_as_requests_total", {
          endpoint: "introspection",
        });
  const asBefore = await asCalls();
  let start: Sample | undefined;
  let end: Sample | undefined;
  let result: LoadResult;
  let warmupRequests = 0;
  if (job.mode === "closed" && load.wrk) {
    const wrkJob = {
      port: variant.port,
      path: variant.path,
      authorizations: variant.authorizations,
      connections: job.connections,
      core: load.pinned ? LOAD_CORE : undefined,
      temp: load.temp,
    };
    if (job.warmupMs > 0)
      warmupRequests = (await runWrk({ ...wrkJob, durationMs: job.warmupMs })).completedTotal;
    start = sample(variant.sut);
    result = await runWrk({ ...wrkJob, durationMs: job.durationMs });
    end = sample(variant.sut);
  } else {
    // The generator's window opens after its warm-up; sample at the same moments (the window is what counts).
    const startTimer = setTimeout(() => (start = sample(variant.sut)), job.warmupMs);
    const endTimer = setTimeout(() => (end = sample(variant.sut)), job.warmupMs + job.durationMs);
    result = await load.generator.run({
      port: variant.port,
      path: variant.path,
      authorizations: variant.authorizations,
      expectStatus: 200,
      ...job,
    });
    clearTimeout(startTimer);
    clearTimeout(endTimer);
    // Timers on a starved core can fire late: fall back to "now" so the figures stay defined.
    start ??= sample(variant.sut);
    end ??= sample(variant.sut);
  }
  const asAfter = await asCalls();
  const seconds = Math.max(1e-3, (end.at - start.at) / 1000);
  const from = start;
  const to = end;
  const corePercent = (core: number): number => {
    const a = from.cores[core];
    const b = to.cores[core];
    if (a === undefined || b === undefined || b.total === a.total) return Number.NaN;
    return ((b.busy - a.busy) / (b.total - a.total)) * 100;
  };
  const coresBusy = to.cores.reduce(
    (sum, core, index) => sum + core.busy - (from.cores[index]?.busy ?? 0),
    0,
  );
  return {
    result,
    sutCpu: ((to.sut - from.sut) / seconds) * 100,
    core0: corePercent(0),
    core1: corePercent(1),
    otherCpu: Math.max(0, ((coresBusy - (to.bench - from.bench)) / seconds) * 100),
    asCallsPerRequest: (asAfter - asBefore) / (result.completedTotal + warmupRequests),
  };
}

interface VariantSummary {
  readonly key: string;
  readonly label: string;
  readonly rps: number;
  readonly p50: number;
  readonly p99: number;
  readonly p999: number;
  readonly errors: number;
  readonly sutCpu: number;
  readonly core0: number;
  readonly core1: number;
  readonly otherCpu: number;
  readonly asCallsPerRequest: number;
  readonly roundsRps: readonly number[];
  readonly roundsP99: readonly number[];
  readonly scheduledP99?: number;
  readonly queued?: number;
}

function summarise(variant: Variant, runs: readonly RunFigures[]): VariantSummary {
  const scheduled = runs.map((run) => run.result.scheduledLatency?.p99 ?? Number.NaN);
  return {
    key: variant.key,
    label: variant.label,
    rps: median(runs.map((run) => run.result.rps)),
    p50: median(runs.map((run) => run.result.latency.p50)),
    p99: median(runs.map((run) => run.result.latency.p99)),
    p999: median(runs.map((run) => run.result.latency.p999)),
    errors: runs.reduce((sum, run) => sum + run.result.errors, 0),
    sutCpu: median(runs.map((run) => run.sutCpu)),
    core0: median(runs.map((run) => run.core0)),
    core1: median(runs.map((run) => run.core1)),
    otherCpu: median(runs.map((run) => run.otherCpu)),
    asCallsPerRequest: median(runs.map((run) => run.asCallsPerRequest)),
    roundsRps: runs.map((run) => run.result.rps),
    roundsP99: runs.map((run) => run.result.latency.p99),
    ...(scheduled.some(Number.isFinite)
      ? {
          scheduledP99: median(scheduled),
          queued: runs.reduce((sum, run) => sum + (run.result.queued ?? 0), 0),
        }
      : {}),
  };
}

/** Runs every variant once per round, rotating the order each round, and returns the per-variant summaries. */
async function interleave(
  load: Load,
  variants: readonly Variant[],
  rounds: number,
  job: Pick<LoadJob, "mode" | "connections" | "warmupMs" | "durationMs"> & { rate?: number },
): Promise<VariantSummary[]> {
  const runs = new Map<string, RunFigures[]>(variants.map((variant) => [variant.key, []]));
  for (let round = 0; round < rounds; round += 1) {
    for (let index = 0; index < variants.length; index += 1) {
      const variant = variants[(index + round) % variants.length];
      if (variant === undefined) continue;
      let figures = await measure(load, variant, job);
      // Other engineers share the machine: a run that other processes disturbed is repeated (a few times at most),
      // keeping the least disturbed attempt.
      for (let retry = 1; retry <= load.retries && figures.otherCpu > load.maxOtherCpu; retry += 1) {
        log(
          `${variant.label}: other processes used ${fixed(figures.otherCpu)} % CPU during the run (> ${load.maxOtherCpu} %); waiting 10 s and repeating (${retry}/${load.retries})`,
        );
        await new Promise((resolve) => setTimeout(resolve, 10_000));
        const again = await measure(load, variant, job);
        if (again.otherCpu < figures.otherCpu) figures = again;
      }
      runs.get(variant.key)?.push(figures);
      const { result } = figures;
      const errors = result.errors === 0 ? "" : ` errors=${result.errors} ${JSON.stringify(result.statuses)}`;
      log(
        `round ${round + 1}/${rounds} ${variant.label}: ${fixed(result.rps)} rps, p50 ${ms(result.latency.p50)} ms, p99 ${ms(result.latency.p99)} ms, cpu ${fixed(figures.sutCpu)} %, other load ${fixed(figures.otherCpu)} %${errors}`,
      );
    }
  }
  return variants.map((variant) => summarise(variant, runs.get(variant.key) ?? []));
}

// ---- report -------------------------------------------------------------------------------------------------

interface Report {
  readonly date: string;
  readonly node: string;
  readonly cpu: string;
  readonly cores: number;
  readonly pinned: boolean;
  readonly generator: string;
  readonly loadStart: string;
  loadEnd?: string;
  readonly options: Record<string, unknown>;
  main?: VariantSummary[];
  half?: { rate: number; variants: VariantSummary[] };
  singleFlight?: Record<string, unknown>;
  rss?: Record<string, unknown>[];
  profile?: unknown;
  alloc?: unknown;
  survivors?: unknown;
  auditBytesPerRequest?: number;
  targets: { name: string; value: string; target: string; met: boolean | undefined }[];
}

function printMain(summaries: readonly VariantSummary[]): void {
  console.log(
    table(
      [
        "variant",
        "rps",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "errors",
        "SUT cpu %",
        "core0 %",
        "core1 %",
        "other cpu %",
        "AS calls/req",
        "rps per round",
      ],
      summaries.map((s) => [
        s.label,
        fixed(s.rps),
        ms(s.p50),
        ms(s.p99),
        ms(s.p999),
        String(s.errors),
        fixed(s.sutCpu),
        fixed(s.core0),
        fixed(s.core1),
        fixed(s.otherCpu),
        Number.isFinite(s.asCallsPerRequest) ? s.asCallsPerRequest.toFixed(3) : "-",
        s.roundsRps.map((rps) => fixed(rps)).join(" / "),
      ]),
    ),
  );
}

function printHalf(rate: number, summaries: readonly VariantSummary[]): void {
  console.log(`\nFixed rate ${rate} req/s (≈ half the gateway's max, audit on):`);
  console.log(
    table(
      [
        "variant",
        "rps",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "p99 from schedule ms",
        "queued",
        "SUT cpu %",
        "other cpu %",
        "p99 per round",
      ],
      summaries.map((s) => [
        s.label,
        fixed(s.rps),
        ms(s.p50),
        ms(s.p99),
        ms(s.p999),
        ms(s.scheduledP99 ?? Number.NaN),
        String(s.queued ?? 0),
        fixed(s.sutCpu),
        fixed(s.otherCpu),
        s.roundsP99.map((p99) => ms(p99)).join(" / "),
      ]),
    ),
  );
}

// ---- parts --------------------------------------------------------------------------------------------------

interface Fixture {
  readonly load: Load;
  readonly asIssuer: string;
  readonly tokens: TokenSource;
  readonly upstreamUrl: string;
  readonly temp: string;
}

async function singleFlight(fixture: Fixture, options: Options): Promise<Record<string, unknown>> {
  // The AS runs inside this driver (core 1) so its own request counters can be read directly.
  const as = await startDemoAuthServer({ port: 0 });
  try {
    const configDir = writeBenchConfig({ issuer: as.issuer, upstream: fixture.upstreamUrl }, fixture.temp);
    const gateway = await startGateway("gateway-single-flight", configDir, "off");
    try {
      const tokens = tokenSource(as.tokenEndpoint, 2);
      // Warm the gateway (discovery, JWKS, pools) with another token, so only the fresh token's introspection counts.
      await expectOk(
        `http://127.0.0.1:${gateway.port}/hit/warm`,
        await tokens.token(SCOPE),
        "single-flight warm-up",
        gateway.process,
      );
      const fresh = await tokens.token(SCOPE);
      await tokens.close();
      const before = await scrape(gateway.adminUrl);
      as.stats.introspections = 0;
      const result = await fixture.load.generator.run({
        port: gateway.port,
        path: "/hit/single-flight",
        authorizations: [`Bearer ${fresh}`],
        connections: options.singleFlightRequests,
        mode: "burst",
        warmupMs: 0,
        durationMs: 0,
        expectStatus: 200,
      });
      const after = await scrape(gateway.adminUrl);
      const delta = (name: string, labels: Record<string, string>): number =>
        metricValue(after, name, labels) - metricValue(before, name, labels);
      return {
        requests: options.singleFlightRequests,
        statuses: result.statuses,
        introspectionsSeenByAs: as.stats.introspections,
        gatewayIntrospectionCalls: delta("phantomgate_as_requests_total", { endpoint: "introspection" }),
        cacheMisses: delta("phantomgate_token_cache_total", { result: "miss" }),
        cacheHits: delta("phantomgate_token_cache_total", { result: "hit" }),
        burstMs: result.windowMs,
        latency: result.latency,
      };
    } finally {
      await gateway.process.stop();
    }
  } finally {
    await as.close();
  }
}

/** The gateway's inspector WebSocket URL (it prints "Debugger listening on ws://…" on stderr at start). */
async function inspectorUrl(process: Spawned): Promise<string> {
  for (let attempt = 0; attempt < 40; attempt += 1) {
    const url = /Debugger listening on (ws:\/\/\S+)/.exec(process.tail())?.[1];
    if (url !== undefined) return url;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`${process.name}: no inspector URL on stderr:\n${process.tail()}`);
}

interface InspectorSession {
  /** Sends one DevTools protocol command and resolves with its result. */
  post(method: string, params?: Record<string, unknown>): Promise<unknown>;
  close(): void;
}

/** A DevTools protocol session with an inspected process. */
async function inspectorSession(url: string): Promise<InspectorSession> {
  const socket = new WebSocket(url);
  await new Promise<void>((resolve, reject) => {
    socket.onopen = () => resolve();
    socket.onerror = () => reject(new Error(`inspector ${url}: connection failed`));
  });
  let nextId = 1;
  const waiting = new Map<number, { resolve: (result: unknown) => void; reject: (error: Error) => void }>();
  socket.onmessage = (event) => {
    const message = JSON.parse(String(event.data)) as {
      id?: number;
      result?: unknown;
      error?: { message?: string };
    };
    const pending = message.id === undefined ? undefined : waiting.get(message.id);
    if (pending === undefined || message.id === undefined) return;
    waiting.delete(message.id);
    if (message.error !== undefined)
      pending.reject(new Error(`inspector: ${message.error.message ?? "error"}`));
    else pending.resolve(message.result);
  };
  return {
    post(method, params = {}) {
      const id = nextId++;
      return new Promise((resolve, reject) => {
        waiting.set(id, { resolve, reject });
        socket.send(JSON.stringify({ id, method, params }));
      });
    },
    close: () => socket.close(),
  };
}

/** A full, synchronous garbage collection in the inspected process (HeapProfiler.collectGarbage). */
async function forceGc(url: string): Promise<void> {
  const session = await inspectorSession(url);
  try {
    await session.post("HeapProfiler.collectGarbage");
  } finally {
    session.close();
  }
}

async function rss(fixture: Fixture, options: Options): Promise<Record<string, unknown>[]> {
  const configDir = writeBenchConfig(
    {
      issuer: fixture.asIssuer,
      upstream: fixture.upstreamUrl,
      cacheTtlSeconds: 3600,
    },
    fixture.temp,
  );
  // The inspector lets the driver force a full GC before reading memory, so heap figures are live data only.
  // Under --inspect the launcher does not re-execute itself: its start-up settings are given here instead (the
  // same command-line flags, so the process reads the same compile cache as every other gateway).
  // The count bound (the AuthServer's maxEntries) is what this part fills; the byte bound is set out of its way,
  // and its estimate is reported next to the heap it estimates.
  const gateway = await startGateway(
    "gateway-rss",
    configDir,
    "off",
    ["--inspect=127.0.0.1:0", ...commandLineFlags],
    { ...mallocEnv, PHANTOMGATE_TOKEN_CACHE_MAX_BYTES: String(4 * 1024 ** 3) },
  );
  const rows: Record<string, unknown>[] = [];
  try {
    const inspector = await inspectorUrl(gateway.process);
    const url = `http://127.0.0.1:${gateway.port}/hit/rss`;
    const warmToken = await fixture.tokens.token(SCOPE);
    // Warm up with one token so pools, JIT and discovery are in place before the baseline.
    for (let index = 0; index < 300; index += 1)
      await expectOk(url, warmToken, "rss warm-up", gateway.process);
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const snapshot = async (tokens: number, seconds: number): Promise<void> => {
      const { rss: bytes } = memory(gateway.process.pid);
      await forceGc(inspector);
      await new Promise((resolve) => setTimeout(resolve, 500));
      const text = await scrape(gateway.adminUrl);
      const afterGc = memory(gateway.process.pid);
      const row = {
        tokens,
        vmRssBytes: bytes,
        vmRssAfterGcBytes: afterGc.rss,
        vmHwmBytes: afterGc.hwm,
        cacheEntries: metricValue(text, "phantomgate_token_cache_entries"),
        cacheEstimatedBytes: metricValue(text, "phantomgate_token_cache_bytes"),
        cacheEvictions: metricValue(text, "phantomgate_token_cache_evictions_total", { reason: "capacity" }),
        heapUsedAfterGcBytes: metricValue(text, "nodejs_heap_size_used_bytes"),
        fillSeconds: seconds,
      };
      rows.push(row);
      log(
        `rss: ${tokens} tokens cached → VmRSS ${mib(bytes)} (after a full GC ${mib(afterGc.rss)}), heap used after GC ${mib(row.heapUsedAfterGcBytes)}, cache entries ${row.cacheEntries} (estimated ${mib(row.cacheEstimatedBytes)})`,
      );
    };
    await snapshot(0, 0);
    let filled = 0;
    const started = performance.now();
    const concurrency = 32;
    for (const goal of options.rssTokens) {
      log(
        `rss: filling the cache to ${goal} distinct tokens (token from the AS, then one request through the gateway; ${concurrency} at a time)`,
      );
      let lastReport = performance.now();
      await Promise.all(
        Array.from({ length: concurrency }, async () => {
          while (filled < goal) {
            filled += 1;
            const token = await fixture.tokens.token(SCOPE);
            await expectOk(url, token, "rss fill", gateway.process);
            const now = performance.now();
            if (now - lastReport > 5000) {
              lastReport = now;
              const rate = filled / ((now - started) / 1000);
              log(`rss: ${filled}/${goal} tokens (${rate.toFixed(0)} tokens/s)`);
            }
          }
        }),
      );
      await new Promise((resolve) => setTimeout(resolve, 2000));
      await snapshot(goal, (performance.now() - started) / 1000);
    }
  } finally {
    await gateway.process.stop();
  }
  return rows;
}

/** Profile summaries, printed after the tables. */
const profileTexts: string[] = [];

/** A process under a profiler: the cache-hit gateway or the bare dispatch proxy. */
interface Subject {
  readonly process: Spawned;
  readonly port: number;
  readonly adminUrl?: string;
}

/**
 * Runs `run` on the cache-hit gateway (audit to `audit`), then on the bare dispatch proxy, each started with the
 * node flags `flags` and stopped afterwards. The gateway also gets the launcher's start-up settings: under
 * --inspect the launcher does not re-execute itself to add them.
 */
async function eachSubject<T>(
  fixture: Fixture,
  name: string,
  audit: string,
  flags: (what: string) => readonly string[],
  run: (what: string, subject: Subject) => Promise<T>,
): Promise<{ gateway: T; bare: T }> {
  const configDir = writeBenchConfig(
    { issuer: fixture.asIssuer, upstream: fixture.upstreamUrl },
    fixture.temp,
  );
  const runStopped = async (what: string, subject: Subject): Promise<T> => {
    try {
      return await run(what, subject);
    } finally {
      await subject.process.stop(15_000);
    }
  };
  const started = await startGateway(
    `gateway-${name}`,
    configDir,
    audit,
    [...flags("gateway"), ...commandLineFlags],
    mallocEnv,
  );
  const gateway = await runStopped("gateway", started);
  const bareProcess = await startNodeServer(
    `bare-proxy-${name}`,
    SUT_CORE,
    "bare-proxy.ts",
    ["--upstream", fixture.upstreamUrl, "--mode", "dispatch"],
    [...RUNTIME_FLAGS, ...flags("bare-proxy")],
  );
  const bare = await runStopped("bare-proxy", {
    process: bareProcess,
    port: Number(bareProcess.ready["port"]),
  });
  return { gateway, bare };
}

/** The cache-hit variant for `subject`, once it answered 200. */
async function hitVariant(subject: Subject, key: string, label: string, hitToken: string): Promise<Variant> {
  await expectOk(`http://127.0.0.1:${subject.port}/hit/hello`, hitToken, `${label} warm-up`, subject.process);
  return {
    key,
    label,
    port: subject.port,
    path: "/hit/hello",
    authorizations: [`Bearer ${hitToken}`],
    sut: subject.process,
    ...(subject.adminUrl === undefined ? {} : { adminUrl: subject.adminUrl }),
  };
}

/** CPU profiles of the gateway (cache hit, audit file) and, for comparison, of the bare dispatch proxy. */
async function profile(fixture: Fixture, options: Options, hitToken: string): Promise<unknown> {
  const profileDir = (what: string): string => join(fixture.temp, `cpu-profile-${what}`);
  return eachSubject(
    fixture,
    "profile",
    options.profileAudit === "off" ? "off" : join(fixture.temp, "audit-profile.log"),
    (what) => ["--cpu-prof", `--cpu-prof-dir=${profileDir(what)}`],
    async (what, subject) => {
      const variant = await hitVariant(subject, `profile-${what}`, `${what} under --cpu-prof`, hitToken);
      const figures = await measure(fixture.load, variant, {
        mode: "closed",
        connections: options.connections,
        warmupMs: options.warmupMs,
        durationMs: Math.max(options.durationMs, options.quick ? 1500 : 10_000),
      });
      log(`profile of ${what}: ${fixed(figures.result.rps)} rps under --cpu-prof`);
      // The profile is written when the process exits.
      await subject.process.stop(15_000);
      const file = readdirSync(profileDir(what)).find((name) => name.endsWith(".cpuprofile"));
      if (file === undefined) throw new Error(`${what} wrote no .cpuprofile`);
      // Kept outside the repository and the bench's temporary directory, for a look in Chrome DevTools.
      const kept = join(
        tmpdir(),
        `phantomgate-${what}-${new Date().toISOString().replaceAll(":", "")}.cpuprofile`,
      );
      copyFileSync(join(profileDir(what), file), kept);
      const summary = summariseProfile(kept, 25);
      profileTexts.push(
        `\nCPU profile of the ${what} (cache hit, ${fixed(figures.result.rps)} rps under --cpu-prof), saved as ${kept}:\n\n${formatProfile(summary)}`,
      );
      return { file: kept, rps: figures.result.rps, ...summary };
    },
  );
}

/** Average bytes between two samples of the heap profiler: fine enough for objects of tens of bytes per request. */
const ALLOCATION_SAMPLING_BYTES = 4096;

/** One heap-sampling part: which objects count, under which load, and how the result is named. */
interface HeapSampling {
  readonly name: "alloc" | "survivors";
  readonly job: Pick<LoadJob, "mode" | "connections"> & { readonly rate?: number };
  readonly durationMs: number;
  /** false: objects a young-generation collection freed are left out (what remains was promoted). */
  readonly includeObjectsCollectedByMinorGC: boolean;
  /** The log line's words, e.g. "allocations of". */
  readonly logAs: string;
  /** The printed section's title for `what` at `rps`. */
  readonly heading: (what: string, rps: number) => string;
}

/**
 * Runs the gateway (audit file) and, for comparison, the bare dispatch proxy under the inspector with V8's
 * sampling heap profiler on (objects collected by major collections included), after an unsampled warm-up so the
 * JIT and the pools settle first; prints the bytes per cache-hit request by the function that allocated them.
 */
async function sampleHeap(
  fixture: Fixture,
  options: Options,
  hitToken: string,
  spec: HeapSampling,
): Promise<unknown> {
  return eachSubject(
    fixture,
    spec.name,
    join(fixture.temp, `audit-${spec.name}.log`),
    () => ["--inspect=127.0.0.1:0"],
    async (what, subject) => {
      const session = await inspectorSession(await inspectorUrl(subject.process));
      try {
        const variant = await hitVariant(
          subject,
          `${spec.name}-${what}`,
          `${what} under the heap profiler`,
          hitToken,
        );
        const job = { ...spec.job, warmupMs: 0 };
        await measure(fixture.load, variant, { ...job, durationMs: options.warmupMs });
        await session.post("HeapProfiler.enable");
        await session.post("HeapProfiler.startSampling", {
          samplingInterval: ALLOCATION_SAMPLING_BYTES,
          includeObjectsCollectedByMajorGC: true,
          includeObjectsCollectedByMinorGC: spec.includeObjectsCollectedByMinorGC,
        });
        const figures = await measure(fixture.load, variant, { ...job, durationMs: spec.durationMs });
        const { profile: sampled } = (await session.post("HeapProfiler.stopSampling")) as {
          profile: SamplingHeapProfile;
        };
        const summary = summariseAllocations(sampled, figures.result.completedTotal, 25);
        log(`${spec.logAs} ${what}: ${Math.round(summary.bytesPerRequest)} bytes per request`);
        profileTexts.push(`\n${spec.heading(what, figures.result.rps)}:\n\n${formatAllocations(summary)}`);
        return {
          rps: figures.result.rps,
          ...(spec.job.rate === undefined ? {} : { rate: spec.job.rate }),
          ...summary,
        };
      } finally {
        session.close();
      }
    },
  );
}

/**
 * Bytes allocated per cache-hit request at full load, collected objects included (includeObjectsCollectedByMinorGC
 * and MajorGC).
 */
function allocations(fixture: Fixture, options: Options, hitToken: string): Promise<unknown> {
  return sampleHeap(fixture, options, hitToken, {
    name: "alloc",
    job: { mode: "closed", connections: options.connections },
    durationMs: Math.max(options.durationMs, options.quick ? 1500 : 8_000),
    includeObjectsCollectedByMinorGC: true,
    logAs: "allocations of",
    heading: (what, rps) =>
      `Allocations of the ${what} (cache hit, ${fixed(rps)} rps under the heap profiler)`,
  });
}

/** The fixed rate of the survivors part when neither --half-rate nor a measured max gives one. */
const SURVIVORS_DEFAULT_RATE = 8_000;

/**
 * Bytes per cache-hit request that outlive the young generation, at a fixed rate: V8's sampling heap profiler
 * with the objects a minor (young-generation) collection freed left out, so what remains was promoted to the
 * old generation (and is garbage there until an old-space collection, whose pause is the half-load p99's tail)
 * or is still alive at the end.
 */
function survivors(fixture: Fixture, options: Options, hitToken: string, rate: number): Promise<unknown> {
  return sampleHeap(fixture, options, hitToken, {
    name: "survivors",
    job: { mode: "rate", rate, connections: options.halfConnections },
    durationMs: options.quick ? 3_000 : 20_000,
    includeObjectsCollectedByMinorGC: false,
    logAs: "survivors of",
    heading: (what) =>
      `Bytes that outlived the young generation, ${what} (cache hit, ${rate} req/s under the heap profiler)`,
  });
}

// ---- driver -------------------------------------------------------------------------------------------------

async function waitQuiet(seconds: number): Promise<void> {
  if (seconds <= 0) return;
  const deadline = Date.now() + seconds * 1000;
  while ((loadavg()[0] ?? 0) >= 1 && Date.now() < deadline) {
    log(`load average ${loadAverage()}: waiting for the machine to calm down (1-min < 1)`);
    await new Promise((resolve) => setTimeout(resolve, 15_000));
  }
}

async function main(): Promise<void> {
  const options = parseOptions();
  const major = Number(process.versions.node.split(".")[0]);
  if (major < 24)
    throw new Error(
      `Node.js 24 needed (this is ${process.version}): export PATH=$PWD/node_modules/.bin:$PATH`,
    );
  const pinning = checkPinning();
  let pinned = options.pin;
  if (options.pin && !pinning.ok) {
    log(
      `WARNING: cannot pin processes to cores (${pinning.reason}); running unpinned — figures are not comparable.`,
    );
    pinned = false;
  }
  setPinning(pinned);
  // The driver (and everything it forks without taskset) lives on the load core.
  pinProcess(process.pid, LOAD_CORE);

  const wrkVersion = options.generator === "node" ? undefined : ensureWrk(options.install, log);
  if (options.generator === "wrk" && wrkVersion === undefined)
    throw new Error("--generator wrk: wrk is not available");

  await waitQuiet(options.waitQuietSeconds);
  const report: Report = {
    date: new Date().toISOString(),
    node: process.version,
    cpu: cpus()[0]?.model ?? "unknown",
    cores: cpus().length,
    pinned,
    generator:
      wrkVersion === undefined
        ? "built-in Node.js generator"
        : `${wrkVersion} (closed loop); built-in Node.js generator (fixed rate, burst)`,
    loadStart: loadAverage(),
    options: { ...options, parts: [...options.parts] },
    targets: [],
  };
  console.log(
    `phantomgate bench — ${report.date}\nnode ${report.node}, ${report.cores} × ${report.cpu}, pinned: ${pinned ? `process under test → core ${SUT_CORE}; load generator, upstream, AS, driver → core ${LOAD_CORE}` : "no"}\nload generator: ${report.generator}\nload average at start: ${report.loadStart}${options.quick ? "\nBENCH_QUICK=1: smoke run, figures are indicative only" : ""}\n`,
  );

  const temp = mkdtempSync(join(tmpdir(), "phantomgate-bench-"));
  tempDir = temp;
  try {
    log(warmCompileCache());
    log("starting the demo AS, hello servers, bare proxy and load generator");
    const [asProcess, upstream, helloDirect, generator] = await Promise.all([
      spawnPinned({
        name: "demo-as",
        core: LOAD_CORE,
        args: [join(repo, "src/demo/auth-server-main.ts"), "--port", "0"],
        isReady: (line) => line["ready"] === true,
      }),
      startNodeServer("hello-upstream", LOAD_CORE, "hello-server.ts"),
      startNodeServer("hello-direct", SUT_CORE, "hello-server.ts", [], RUNTIME_FLAGS),
      LoadGenerator.start(),
    ]);
    const upstreamUrl = `http://127.0.0.1:${Number(upstream.ready["port"])}`;
    const bareArgs = (mode: "request" | "dispatch"): string[] => ["--upstream", upstreamUrl, "--mode", mode];
    const [bareProxy, bareDispatchProxy] = await Promise.all([
      startNodeServer("bare-proxy", SUT_CORE, "bare-proxy.ts", bareArgs("request"), RUNTIME_FLAGS),
      startNodeServer("bare-proxy-dispatch", SUT_CORE, "bare-proxy.ts", bareArgs("dispatch"), RUNTIME_FLAGS),
    ]);
    const asIssuer = String(asProcess.ready["issuer"]);
    const discovery = JSON.parse((await get(`${asIssuer}/.well-known/openid-configuration`)).body) as {
      token_endpoint: string;
    };
    const tokens = tokenSource(discovery.token_endpoint);
    const load: Load = {
      generator,
      wrk: wrkVersion !== undefined,
      temp,
      pinned,
      maxOtherCpu: options.maxOtherCpu,
      retries: options.retries,
    };
    const fixture: Fixture = { load, asIssuer, tokens, upstreamUrl, temp };

    log("getting tokens");
    const hitToken = await tokens.token(SCOPE);
    const jwtToken = await tokens.token(SCOPE, JWT_AUDIENCE);

    const needGateways = options.parts.has("main") || options.parts.has("half");
    if (needGateways) {
      const configDir = writeBenchConfig({ issuer: asIssuer, upstream: upstreamUrl }, temp);
      const auditFile = join(temp, "audit.log");
      const auditPipe = join(temp, "audit.fifo");
      startLogCollector(auditPipe, join(temp, "audit-collected.log"));
      const tuned = options.tunedFlags.length > 0;
      const [gatewayOff, gatewayFile, gatewayPipe, gatewayTuned, bareTunedProxy] = await Promise.all([
        startGateway("gateway-audit-off", configDir, "off"),
        startGateway("gateway-audit-file", configDir, auditFile),
        startGateway("gateway-audit-pipe", configDir, auditPipe),
        tuned
          ? startGateway("gateway-tuned", configDir, join(temp, "audit-tuned.log"), options.tunedFlags)
          : undefined,
        tuned
          ? startNodeServer("bare-proxy-tuned", SUT_CORE, "bare-proxy.ts", bareArgs("dispatch"), [
              ...options.tunedFlags,
              runTimeFlag,
            ])
          : undefined,
      ]);
      const missTokens = await manyTokens(tokens, options.missTokens, SCOPE);
      const bearer = (token: string): string => `Bearer ${token}`;
      const gatewayVariant = (
        gateway: Gateway,
        key: string,
        label: string,
        path: string,
        pool: readonly string[],
      ): Variant => ({
        key,
        label,
        port: gateway.port,
        path,
        authorizations: pool.map(bearer),
        sut: gateway.process,
        adminUrl: gateway.adminUrl,
      });
      /** A baseline server (hello, bare proxies): the cache-hit path with the cache-hit token. */
      const serverVariant = (server: Spawned, key: string, label: string): Variant => ({
        key,
        label,
        port: Number(server.ready["port"]),
        path: "/hit/hello",
        authorizations: [bearer(hitToken)],
        sut: server,
      });
      const hello = serverVariant(helloDirect, "hello", "node:http hello (direct)");
      const bare = serverVariant(bareProxy, "bare", "bare undici proxy (request + pipeline)");
      const bareDispatch = serverVariant(
        bareDispatchProxy,
        "bare-dispatch",
        "bare undici proxy (dispatch, as the gateway)",
      );
      const hitOff = gatewayVariant(
        gatewayOff,
        "hit-off",
        "gateway phantom, cache hit, audit off",
        "/hit/hello",
        [hitToken],
      );
      const hitFile = gatewayVariant(
        gatewayFile,
        "hit-file",
        "gateway phantom, cache hit, audit file",
        "/hit/hello",
        [hitToken],
      );
      const hitPipe = gatewayVariant(
        gatewayPipe,
        "hit-pipe",
        "gateway phantom, cache hit, audit to a pipe (as stdout in a container)",
        "/hit/hello",
        [hitToken],
      );
      const jwtFile = gatewayVariant(
        gatewayFile,
        "jwt-file",
        "gateway jwt mode (by value), audit file",
        "/jwt/hello",
        [jwtToken],
      );
      const missFile = gatewayVariant(
        gatewayFile,
        "miss-file",
        `gateway phantom, cache miss (${missTokens.length} tokens), audit file`,
        "/miss/hello",
        missTokens,
      );
      const tunedLabel = options.tunedFlags.join(" ");
      const bareTuned =
        bareTunedProxy === undefined
          ? undefined
          : serverVariant(bareTunedProxy, "bare-tuned", `bare undici proxy (dispatch), node ${tunedLabel}`);
      const hitTuned =
        gatewayTuned === undefined
          ? undefined
          : gatewayVariant(
              gatewayTuned,
              "hit-file-tuned",
              `gateway phantom, cache hit, audit file, node ${tunedLabel}`,
              "/hit/hello",
              [hitToken],
            );
      const tunedVariants = [bareTuned, hitTuned].filter((variant) => variant !== undefined);
      const mainVariants = [
        hello,
        bare,
        bareDispatch,
        hitOff,
        hitFile,
        hitPipe,
        jwtFile,
        missFile,
        ...tunedVariants,
      ];
      log("checking every variant answers 200");
      for (const variant of mainVariants) {
        const token = variant.authorizations[0]?.slice("Bearer ".length);
        await expectOk(`http://127.0.0.1:${variant.port}${variant.path}`, token, variant.label, variant.sut);
      }

      let gatewayMaxRps = Number.NaN;
      if (options.parts.has("main")) {
        log(
          `main: ${options.rounds} round(s) × ${mainVariants.length} variants, ${options.warmupMs / 1000} s warm-up + ${options.durationMs / 1000} s each, ${options.connections} connections`,
        );
        const summaries = await interleave(load, mainVariants, options.rounds, {
          mode: "closed",
          connections: options.connections,
          warmupMs: options.warmupMs,
          durationMs: options.durationMs,
        });
        report.main = summaries;
        gatewayMaxRps = summaries.find((s) => s.key === "hit-file")?.rps ?? Number.NaN;
      }
      if (options.parts.has("half")) {
        if (!Number.isFinite(gatewayMaxRps) && !Number.isFinite(options.halfRate)) {
          log("half: measuring the gateway's max rps first (main part not run)");
          gatewayMaxRps = (
            await measure(load, hitFile, {
              mode: "closed",
              connections: options.connections,
              warmupMs: options.warmupMs,
              durationMs: options.durationMs,
            })
          ).result.rps;
        }
        const rate = Number.isFinite(options.halfRate)
          ? options.halfRate
          : Math.max(100, Math.round(gatewayMaxRps / 2 / 100) * 100);
        // node:http hello at the same rate is the floor: the latency the machine and the load generator add by
        // themselves, whatever serves the requests.
        const halfVariants = [hello, bare, bareDispatch, hitFile, hitPipe, hitOff, ...tunedVariants];
        log(
          `half: fixed rate ${rate} req/s, ${options.halfRounds} round(s) × ${halfVariants.length} variants, ${options.halfConnections} connections`,
        );
        const variants = await interleave(load, halfVariants, options.halfRounds, {
          mode: "rate",
          rate,
          connections: options.halfConnections,
          warmupMs: options.halfWarmupMs,
          durationMs: options.durationMs,
        });
        report.half = { rate, variants };
      }
      // Audit volume: bytes written per request by the audit-file gateway.
      const requestsServed = metricValue(await scrape(gatewayFile.adminUrl), "phantomgate_requests_total");
      await gatewayFile.process.stop();
      await gatewayPipe.process.stop();
      await gatewayOff.process.stop();
      await gatewayTuned?.process.stop();
      await bareTunedProxy?.stop();
      try {
        report.auditBytesPerRequest = statSync(auditFile).size / requestsServed;
      } catch {
        // no audit file: nothing was written
      }
    }

    if (options.parts.has("single-flight")) {
      log(
        `single-flight: ${options.singleFlightRequests} concurrent requests with one fresh token (AS in the driver process)`,
      );
      report.singleFlight = await singleFlight(fixture, options);
    }
    if (options.parts.has("rss") && options.rssTokens.length > 0) {
      report.rss = await rss(fixture, options);
    }
    if (options.parts.has("profile")) {
      report.profile = await profile(fixture, options, hitToken);
    }
    if (options.parts.has("alloc")) {
      report.alloc = await allocations(fixture, options, hitToken);
    }
    if (options.parts.has("survivors")) {
      const rate = Number.isFinite(options.halfRate)
        ? options.halfRate
        : (report.half?.rate ?? SURVIVORS_DEFAULT_RATE);
      report.survivors = await survivors(fixture, options, hitToken, rate);
    }
    await tokens.close();
    report.loadEnd = loadAverage();
    printReport(report);
    if (options.json !== undefined) {
      writeFileSync(options.json, `${JSON.stringify(report, null, 2)}\n`);
      console.log(`\nJSON written to ${options.json}`);
    }
  } finally {
    await stopAll();
    rmSync(temp, { recursive: true, force: true });
  }
}

/** Gateway variant, baseline variant, and how to name the pair in the targets table. */
const comparisons = [
  ["hit-file", "bare", "audit file"],
  ["hit-pipe", "bare", "audit pipe"],
  ["hit-off", "bare", "audit off"],
  ["hit-file", "bare-dispatch", "audit file, vs dispatch baseline"],
  ["hit-pipe", "bare-dispatch", "audit pipe, vs dispatch baseline"],
  ["hit-off", "bare-dispatch", "audit off, vs dispatch baseline"],
  ["hit-file-tuned", "bare-tuned", "audit file, both tuned, vs dispatch baseline"],
] as const;

function printReport(report: Report): void {
  const targets = report.targets;
  if (report.main !== undefined) {
    console.log(`\nMax throughput (closed loop), median of ${String(report.options["rounds"])} round(s):`);
    printMain(report.main);
    for (const s of report.main) {
      if (s.otherCpu > 10) {
        console.log(
          `note: ${s.label}: processes outside the benchmark used ${fixed(s.otherCpu)} % of a core during its runs (median) — its figures are disturbed.`,
        );
      }
      if (s.key !== "miss-file" && s.sutCpu < 90) {
        console.log(
          `note: ${s.label} used only ${fixed(s.sutCpu)} % of core 0: it was not the bottleneck (core 1 at ${fixed(s.core1)} %: load generator/upstream, or other load on the machine) — its rps is a lower bound.`,
        );
      }
    }
    const by = (key: string): VariantSummary | undefined => report.main?.find((s) => s.key === key);
    const hello = by("hello");
    for (const [key, bareKey, audit] of comparisons) {
      const hit = by(key);
      const bare = by(bareKey);
      if (hit === undefined || bare === undefined || hello === undefined) continue;
      const vsBare = hit.rps / bare.rps;
      const vsHello = hit.rps / hello.rps;
      targets.push({
        name: `cache-hit (${audit}) / bare proxy rps`,
        value: vsBare.toFixed(3),
        target: "≥ 0.95",
        met: vsBare >= 0.95,
      });
      if (bareKey === "bare-dispatch") continue;
      targets.push({
        name: `cache-hit (${audit.replace(", vs dispatch baseline", "")}) / node:http hello rps`,
        value: vsHello.toFixed(3),
        target: "≥ 0.35",
        met: vsHello >= 0.35,
      });
    }
    const miss = by("miss-file");
    const hitFile = by("hit-file");
    if (miss !== undefined && hitFile !== undefined) {
      targets.push({
        name: "cache-miss / cache-hit rps (audit file; AS-bound, informational)",
        value: (miss.rps / hitFile.rps).toFixed(3),
        target: "-",
        met: undefined,
      });
    }
  }
  if (report.half !== undefined) {
    printHalf(report.half.rate, report.half.variants);
    for (const [key, bareKey, audit] of comparisons) {
      const hit = report.half.variants.find((s) => s.key === key);
      const bare = report.half.variants.find((s) => s.key === bareKey);
      if (hit === undefined || bare === undefined) continue;
      // Both were measured once per round, back to back: the median of the per-round differences cancels
      // the drift between rounds that a difference of medians keeps.
      const added = median(hit.roundsP99.map((p99, round) => p99 - (bare.roundsP99[round] ?? Number.NaN)));
      targets.push({
        name: `added p99 at ${report.half.rate} req/s, gateway (${audit}) − bare proxy (median of per-round differences)`,
        value: `${added.toFixed(3)} ms`,
        target: "≤ 0.3 ms",
        met: added <= 0.3,
      });
    }
    const floor = report.half.variants.find((s) => s.key === "hello");
    if (floor !== undefined) {
      console.log(
        `\nFloor: node:http hello answered the same fixed rate with p99 ${ms(floor.p99)} ms (per round: ${floor.roundsP99.map((p99) => ms(p99)).join(" / ")}). A server doing nothing at ${fixed(floor.sutCpu)} % of a core shows what the machine and the load generator add by themselves; differences of p99 smaller than its spread are not resolved.`,
      );
    }
  }
  if (report.auditBytesPerRequest !== undefined) {
    console.log(`\nAudit file: ${report.auditBytesPerRequest.toFixed(0)} bytes per request.`);
  }
  if (report.singleFlight !== undefined) {
    const sf = report.singleFlight;
    console.log(
      `\nSingle-flight: ${String(sf["requests"])} concurrent requests, one fresh token → the AS saw ${String(sf["introspectionsSeenByAs"])} introspection(s) (gateway counted ${String(sf["gatewayIntrospectionCalls"])}); statuses ${JSON.stringify(sf["statuses"])}; cache misses joined to the flight ${String(sf["cacheMisses"])}, hits ${String(sf["cacheHits"])}; burst took ${fixed(Number(sf["burstMs"]), 1)} ms.`,
    );
    targets.push({
      name: `single-flight: introspections for ${String(sf["requests"])} concurrent requests`,
      value: String(sf["introspectionsSeenByAs"]),
      target: "exactly 1",
      met: sf["introspectionsSeenByAs"] === 1,
    });
  }
  if (report.rss !== undefined) {
    console.log(
      "\nGateway memory with distinct cached tokens (VmRSS from /proc/<pid>/status; heap after a forced full GC):",
    );
    const base = report.rss[0];
    const baseRss = Number(base?.["vmRssBytes"]);
    const baseHeap = Number(base?.["heapUsedAfterGcBytes"]);
    console.log(
      table(
        [
          "cached tokens",
          "VmRSS",
          "Δ VmRSS",
          "Δ VmRSS/token",
          "VmRSS after GC",
          "VmHWM",
          "heap used after GC",
          "Δ heap/token",
          "cache entries",
          "evictions",
          "fill s",
        ],
        report.rss.map((row) => {
          const tokens = Number(row["tokens"]);
          const rssBytes = Number(row["vmRssBytes"]);
          const heap = Number(row["heapUsedAfterGcBytes"]);
          return [
            String(tokens),
            mib(rssBytes),
            mib(rssBytes - baseRss),
            tokens === 0 ? "-" : `${((rssBytes - baseRss) / tokens).toFixed(0)} B`,
            mib(Number(row["vmRssAfterGcBytes"])),
            mib(Number(row["vmHwmBytes"])),
            mib(heap),
            tokens === 0 ? "-" : `${((heap - baseHeap) / tokens).toFixed(0)} B`,
            String(row["cacheEntries"]),
            String(row["cacheEvictions"]),
            fixed(Number(row["fillSeconds"]), 0),
          ];
        }),
      ),
    );
  }
  if (targets.length > 0) {
    console.log("\nTargets:");
    console.log(
      table(
        ["measure", "value", "target", "met"],
        targets.map((t) => [t.name, t.value, t.target, t.met === undefined ? "-" : t.met ? "yes" : "NO"]),
      ),
    );
  }
  for (const text of profileTexts) console.log(text);
  console.log(`\nload average at start: ${report.loadStart}; at end: ${report.loadEnd ?? "-"}`);
}

let interrupted = false;
/** Removed on exit, also after Ctrl-C. */
let tempDir: string | undefined;
const onSignal = (signal: NodeJS.Signals): void => {
  if (interrupted) return;
  interrupted = true;
  log(`${signal}: stopping every child process`);
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
  await stopAll(2000);
  process.exitCode = 1;
});
