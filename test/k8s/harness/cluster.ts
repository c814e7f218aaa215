// Owns the real Kubernetes control plane of the tests: etcd + kube-apiserver on 127.0.0.1, started the way
// controller-runtime's envtest starts them (RBAC on, client-certificate admin, service-account signing keys
// so TokenRequest/TokenReview work). No controller-manager runs: no garbage collection, namespaces never
// finish terminating, Deployments create no Pods. Binaries come from scripts/k8s-tools.sh (built from the
// Go module proxy, cached outside the repo) unless KUBE_APISERVER / ETCD / KUBECTL / HELM point elsewhere.
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { closeSync, existsSync, openSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { request } from "node:https";
import { createServer } from "node:net";
import { networkInterfaces, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { stringify as toYaml } from "yaml";

const execFileAsync = promisify(execFile);

/** Repository root (this file is test/k8s/harness/cluster.ts). */
export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
const toolsScript = join(repoRoot, "scripts/k8s-tools.sh");
/** Temp data dirs of test clusters start with this, so a later run can reap those of a killed run. */
const tempPrefix = "phantomgate-k8s-";

export interface K8sTools {
  readonly kubeApiserver: string;
  readonly kubectl: string;
  readonly etcd: string;
  readonly helm: string;
  /** Versions pinned in scripts/k8s-tools.sh, e.g. `v1.35.4`. */
  readonly kubeVersion: string;
  readonly etcdVersion: string;
  readonly helmVersion: string;
}

export interface StartTestClusterOptions {
  /**
   * Directory for certificates, kubeconfig, logs and etcd data. Created if missing and kept on `stop()`
   * (the caller owns it). Default: a fresh temp dir, removed on `stop()`.
   */
  dataDir?: string;
  /**
   * Leave the servers running when this process exits (for `make dev-cluster`): no exit hooks, children
   * unreferenced. Stop them later with `stop()` or `stopClusterInDir(dataDir)`.
   */
  detached?: boolean;
  /** How long to wait for etcd and the API server to become ready. Default 120 s. */
  readyTimeoutMs?: number;
  /** Build the binaries when missing (runs `scripts/k8s-tools.sh ensure`). Default true. */
  ensureTools?: boolean;
}

export interface CommandResult {
  readonly stdout: string;
  readonly stderr: string;
}

export interface RunOptions {
  /** Written to the command's standard input. */
  input?: string;
  /** Resolve instead of rejecting on a non-zero exit; the code is in `exitCode`. */
  allowFailure?: boolean;
}

export interface TestCluster {
  /** Admin kubeconfig (client certificate in group system:masters) inside `dataDir`. */
  readonly kubeconfigPath: string;
  /** `https://127.0.0.1:<port>` */
  readonly server: string;
  readonly caPem: string;
  /** Admin client certificate and key, PEM. */
  readonly adminCert: string;
  readonly adminKey: string;
  readonly dataDir: string;
  readonly etcdUrl: string;
  /** The non-loopback address given to --advertise-address (nothing listens there). */
  readonly advertiseAddress: string;
  readonly tools: K8sTools;
  readonly pids: { readonly etcd: number; readonly kubeApiserver: number };
  readonly logs: { readonly etcd: string; readonly kubeApiserver: string };
  /** Runs the matching kubectl with this cluster's admin kubeconfig. */
  kubectl(args: readonly string[], options?: RunOptions): Promise<CommandResult & { exitCode: number }>;
  /**
   * Writes `<dataDir>/kubeconfig-<name>` that authenticates with a bearer token only (e.g. a ServiceAccount
   * token from the TokenRequest API), for running a process under that identity. Returns its path.
   */
  writeTokenKubeconfig(name: string, token: string): Promise<string>;
  /** Runs helm with this cluster's admin kubeconfig and helm's state dirs inside `dataDir`. */
  helm(args: readonly string[], options?: RunOptions): Promise<CommandResult & { exitCode: number }>;
  /** Stops both servers (process groups) and removes the data dir if it was a temp dir. Idempotent. */
  stop(): Promise<void>;
}

/**
 * Builds the tools when missing; safe to call from several processes at once (the script locks). The
 * script's progress and errors go to this process's stderr: a first build takes many minutes.
 */
export async function ensureK8sTools(): Promise<void> {
  const child = spawn("bash", [toolsScript, "ensure"], {
    cwd: repoRoot,
    stdio: ["ignore", "inherit", "inherit"],
  });
  const [code, signal] = (await once(child, "exit")) as [number | null, NodeJS.Signals | null];
  if (code !== 0) {
    throw new Error(
      `scripts/k8s-tools.sh ensure failed (${code ?? signal ?? "?"}); its error is printed above`,
    );
  }
}

/** Paths of the binaries: scripts/k8s-tools.sh print-env, overridden by KUBE_APISERVER/ETCD/KUBECTL/HELM. */
export async function resolveK8sTools(): Promise<K8sTools> {
  const { stdout } = await execFileAsync("bash", [toolsScript, "print-env"], { cwd: repoRoot });
  const printed = new Map<string, string>();
  for (const line of stdout.split("\n")) {
    const eq = line.indexOf("=");
    if (eq > 0) printed.set(line.slice(0, eq), line.slice(eq + 1));
  }
  // Binary paths may be overridden from the environment; versions are always the pinned ones.
  const pick = (key: string, overridable = true): string => {
    const fromEnv = overridable ? process.env[key] : undefined;
    const value = fromEnv !== undefined && fromEnv !== "" ? fromEnv : printed.get(key);
    if (value === undefined || value === "") throw new Error(`scripts/k8s-tools.sh print-env gave no ${key}`);
    return value;
  };
  return {
    kubeApiserver: pick("KUBE_APISERVER"),
    kubectl: pick("KUBECTL"),
    etcd: pick("ETCD"),
    helm: pick("HELM"),
    kubeVersion: pick("KUBE_VERSION", false),
    etcdVersion: pick("ETCD_VERSION", false),
    helmVersion: pick("HELM_VERSION", false),
  };
}

/** The first non-internal IPv4 address of this host, for --advertise-address. */
export function findAdvertiseAddress(): string {
  for (const addresses of Object.values(networkInterfaces())) {
    for (const address of addresses ?? []) {
      if (address.family === "IPv4" && !address.internal && !address.address.startsWith("127.")) {
        return address.address;
      }
    }
  }
  throw new Error(
    "kube-apiserver needs a non-loopback IPv4 address for --advertise-address (it rejects 127.0.0.1 and, " +
      'with no default route, fails with "unable to find suitable network address"), but this host has ' +
      "no non-internal IPv4 interface (os.networkInterfaces()). Bring one up, e.g. " +
      "`ip link add pg0 type dummy && ip addr add 192.0.2.10/32 dev pg0 && ip link set pg0 up`.",
  );
}

/** A port that was free on 127.0.0.1 a moment ago (the caller retries if someone takes it first). */
export async function findFreePort(): Promise<number> {
  const server = createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const address = server.address();
  server.close();
  await once(server, "close");
  if (address === null || typeof address === "string") throw new Error("could not get a free port");
  return address.port;
}

/** Starts etcd and kube-apiserver and waits until the API server is ready to serve. */
export async function startTestCluster(options: StartTestClusterOptions = {}): Promise<TestCluster> {
  const readyTimeoutMs = options.readyTimeoutMs ?? 120_000;
  const detached = options.detached ?? false;
  if (options.ensureTools ?? true) {
    const overridden = ["KUBE_APISERVER", "ETCD", "KUBECTL", "HELM"].every((k) => Boolean(process.env[k]));
    if (!overridden) await ensureK8sTools();
  }
  const tools = await resolveK8sTools();
  for (const [name, path] of Object.entries({
    "kube-apiserver": tools.kubeApiserver,
    etcd: tools.etcd,
    kubectl: tools.kubectl,
  })) {
    if (!existsSync(path)) {
      throw new Error(`${name} not found at ${path}; build it with \`make k8s-tools\` or set its env var`);
    }
  }
  const advertiseAddress = findAdvertiseAddress();

  if (options.dataDir === undefined) reapStaleTestClusters();
  const ownsDataDir = options.dataDir === undefined;
  const dataDir =
    options.dataDir === undefined ? await mkdtemp(join(tmpdir(), tempPrefix)) : resolve(options.dataDir);
  await mkdir(dataDir, { recursive: true });
  const pki = join(dataDir, "pki");
  await mkdir(pki, { recursive: true });
  const logs = { etcd: join(dataDir, "etcd.log"), kubeApiserver: join(dataDir, "kube-apiserver.log") };

  const procs: { etcd?: ChildProcess; kubeApiserver?: ChildProcess } = {};
  // API server first, so it does not log a storm of etcd connection errors on the way down.
  const running = (): ChildProcess[] =>
    [procs.kubeApiserver, procs.etcd].filter((c): c is ChildProcess => c !== undefined);
  let stopped = false;
  const killAll = (signal: NodeJS.Signals): void => {
    for (const child of running()) killGroup(child.pid, signal);
  };
  const onExit = (): void => {
    killAll("SIGKILL");
    if (ownsDataDir) rmSync(dataDir, { recursive: true, force: true });
  };
  // Recorded as soon as each server starts, so `stopClusterInDir` and the reaper can find them.
  const recordPids = (): Promise<void> =>
    writeFile(
      join(dataDir, "pids.json"),
      JSON.stringify({ etcd: procs.etcd?.pid, kubeApiserver: procs.kubeApiserver?.pid }) + "\n",
    );
  if (!detached) registerExitHook(onExit);

  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    for (const child of running()) await stopChild(child);
    unregisterExitHook(onExit);
    if (ownsDataDir) await rm(dataDir, { recursive: true, force: true });
  };

  try {
    const certs = await generateCertificates(pki, advertiseAddress);
    await writeFile(
      join(dataDir, "owner.json"),
      JSON.stringify({ ownerPid: detached ? null : process.pid, dataDir }) + "\n",
    );

    const etcd = await retryOnPortClash(logs.etcd, async () => {
      const port = await findFreePort();
      const url = `http://127.0.0.1:${port}`;
      const child = spawnLogged(
        tools.etcd,
        [
          "--name=phantomgate",
          `--data-dir=${join(dataDir, "etcd")}`,
          `--listen-client-urls=${url}`,
          `--advertise-client-urls=${url}`,
          // Port 0: a single member needs no known peer port (envtest does the same).
          "--listen-peer-urls=http://127.0.0.1:0",
          "--unsafe-no-fsync",
          "--log-level=warn",
        ],
        logs.etcd,
      );
      procs.etcd = child;
      await recordPids();
      await waitFor(child, logs.etcd, "etcd", readyTimeoutMs, () => etcdHealthy(url));
      return { child, url };
    });

    const apiserver = await retryOnPortClash(logs.kubeApiserver, async () => {
      const port = await findFreePort();
      const server = `https://127.0.0.1:${port}`;
      const child = spawnLogged(
        tools.kubeApiserver,
        [
          `--etcd-servers=${etcd.url}`,
          "--bind-address=127.0.0.1",
          `--secure-port=${port}`,
          `--advertise-address=${advertiseAddress}`,
          `--tls-cert-file=${certs.servingCertFile}`,
          `--tls-private-key-file=${certs.servingKeyFile}`,
          `--client-ca-file=${certs.caFile}`,
          "--authorization-mode=RBAC",
          "--service-cluster-ip-range=10.0.0.0/24",
          "--allow-privileged=true",
          // No controller-manager runs to create default ServiceAccounts, so don't require them.
          "--disable-admission-plugins=ServiceAccount",
          "--service-account-issuer=https://kubernetes.default.svc",
          `--service-account-key-file=${certs.saPublicKeyFile}`,
          `--service-account-signing-key-file=${certs.saPrivateKeyFile}`,
          "--api-audiences=https://kubernetes.default.svc",
          "--profiling=false",
        ],
        logs.kubeApiserver,
      );
      procs.kubeApiserver = child;
      await recordPids();
      const tls = { ca: certs.caPem, cert: certs.adminCert, key: certs.adminKey };
      await waitFor(child, logs.kubeApiserver, "kube-apiserver", readyTimeoutMs, async () => {
        if ((await httpsGet(`${server}/readyz`, tls)).status !== 200) return false;
        // The bootstrap controller creates "default" shortly after; tests use it straight away.
        return (await httpsGet(`${server}/api/v1/namespaces/default`, tls)).status === 200;
      });
      return { child, server };
    });

    const kubeconfigPath = join(dataDir, "kubeconfig");
    await writeFile(
      kubeconfigPath,
      renderKubeconfig(apiserver.server, certs.caPem, {
        "client-certificate-data": b64(certs.adminCert),
        "client-key-data": b64(certs.adminKey),
      }),
      { mode: 0o600 },
    );
    const pids = { etcd: etcd.child.pid ?? -1, kubeApiserver: apiserver.child.pid ?? -1 };
    if (detached) for (const child of running()) child.unref();

    const helmEnv = {
      HELM_CACHE_HOME: join(dataDir, "helm/cache"),
      HELM_CONFIG_HOME: join(dataDir, "helm/config"),
      HELM_DATA_HOME: join(dataDir, "helm/data"),
    };
    return {
      kubeconfigPath,
      server: apiserver.server,
      caPem: certs.caPem,
      adminCert: certs.adminCert,
      adminKey: certs.adminKey,
      dataDir,
      etcdUrl: etcd.url,
      advertiseAddress,
      tools,
      pids,
      logs,
      kubectl: (args, runOptions) =>
        run(tools.kubectl, ["--kubeconfig", kubeconfigPath, ...args], {}, runOptions),
      writeTokenKubeconfig: async (name, token) => {
        const path = join(dataDir, `kubeconfig-${name}`);
        await writeFile(path, renderKubeconfig(apiserver.server, certs.caPem, { token }), { mode: 0o600 });
        return path;
      },
      helm: (args, runOptions) =>
        run(tools.helm, ["--kubeconfig", kubeconfigPath, ...args], helmEnv, runOptions),
      stop,
    };
  } catch (error) {
    // Keep the data dir: its logs say why. A later run reaps it (its owner is gone by then).
    for (const child of running()) await stopChild(child);
    unregisterExitHook(onExit);
    throw error;
  }
}

/**
 * Stops the servers recorded in `<dataDir>/pids.json` (a detached cluster, e.g. `make dev-cluster`), after
 * checking each pid still runs a command that names that dir. Returns how many were running.
 */
export async function stopClusterInDir(dataDir: string): Promise<number> {
  const dir = resolve(dataDir);
  let pids: number[];
  try {
    const parsed = JSON.parse(await readFile(join(dir, "pids.json"), "utf8")) as Record<string, number>;
    // kube-apiserver first, then etcd.
    pids = [parsed["kubeApiserver"], parsed["etcd"]].filter((p): p is number => typeof p === "number");
  } catch {
    return 0;
  }
  let running = 0;
  for (const pid of pids) {
    if (!commandLineMentions(pid, dir)) continue;
    running++;
    killGroup(pid, "SIGTERM");
    const deadline = Date.now() + 15_000;
    while (isAlive(pid) && Date.now() < deadline) await sleep(100);
    if (isAlive(pid)) killGroup(pid, "SIGKILL");
  }
  return running;
}

/** Whether the servers recorded in `<dataDir>/pids.json` are running. */
export function clusterRunningInDir(dataDir: string): boolean {
  const dir = resolve(dataDir);
  try {
    const parsed = JSON.parse(readFileSync(join(dir, "pids.json"), "utf8")) as Record<string, number>;
    return [parsed["kubeApiserver"], parsed["etcd"]].every(
      (pid) => typeof pid === "number" && commandLineMentions(pid, dir),
    );
  } catch {
    return false;
  }
}

// ---- certificates ------------------------------------------------------------------------------------

interface Certificates {
  caFile: string;
  caPem: string;
  servingCertFile: string;
  servingKeyFile: string;
  adminCert: string;
  adminKey: string;
  saPrivateKeyFile: string;
  saPublicKeyFile: string;
}

async function openssl(args: readonly string[]): Promise<void> {
  try {
    await execFileAsync("openssl", args);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") {
      throw new Error("openssl not found on PATH: apt-get install -y openssl", { cause: error });
    }
    const stderr = (error as { stderr?: unknown }).stderr;
    throw new Error(
      `openssl ${args.join(" ")} failed: ${typeof stderr === "string" ? stderr : String(error)}`,
      { cause: error },
    );
  }
}

/** CA, API server serving cert, admin client cert (O=system:masters), service-account key pair. */
async function generateCertificates(dir: string, advertiseAddress: string): Promise<Certificates> {
  const p = (name: string): string => join(dir, name);
  const days = "365";
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-noenc"];
  await openssl([
    "req",
    "-x509",
    ...ec,
    "-keyout",
    p("ca.key"),
    "-out",
    p("ca.crt"),
    "-days",
    days,
    "-subj",
    "/CN=phantomgate-test-ca",
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
  ]);
  const issue = async (name: string, subject: string, extensions: string): Promise<void> => {
    await openssl(["req", ...ec, "-keyout", p(`${name}.key`), "-out", p(`${name}.csr`), "-subj", subject]);
    await writeFile(p(`${name}.ext`), extensions);
    await openssl([
      "x509",
      "-req",
      "-in",
      p(`${name}.csr`),
      "-CA",
      p("ca.crt"),
      "-CAkey",
      p("ca.key"),
      "-set_serial",
      `0x${Date.now().toString(16)}${Math.floor(Math.random() * 0xffff).toString(16)}`,
      "-days",
      days,
      "-extfile",
      p(`${name}.ext`),
      "-out",
      p(`${name}.crt`),
    ]);
  };
  const sans = [
    "IP:127.0.0.1",
    `IP:${advertiseAddress}`,
    "IP:10.0.0.1",
    "DNS:localhost",
    "DNS:kubernetes",
    "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc",
    "DNS:kubernetes.default.svc.cluster.local",
  ];
  await issue(
    "serving",
    "/CN=kube-apiserver",
    `subjectAltName=${sans.join(",")}\nextendedKeyUsage=serverAuth\n` +
      "keyUsage=critical,digitalSignature,keyEncipherment\nbasicConstraints=critical,CA:FALSE\n",
  );
  await issue(
    "admin",
    "/O=system:masters/CN=phantomgate-admin",
    "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n" +
      "basicConstraints=critical,CA:FALSE\n",
  );
  await openssl(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", p("sa.key")]);
  await openssl(["pkey", "-in", p("sa.key"), "-pubout", "-out", p("sa.pub")]);
  return {
    caFile: p("ca.crt"),
    caPem: await readFile(p("ca.crt"), "utf8"),
    servingCertFile: p("serving.crt"),
    servingKeyFile: p("serving.key"),
    adminCert: await readFile(p("admin.crt"), "utf8"),
    adminKey: await readFile(p("admin.key"), "utf8"),
    saPrivateKeyFile: p("sa.key"),
    saPublicKeyFile: p("sa.pub"),
  };
}

const b64 = (pem: string): string => Buffer.from(pem).toString("base64");

function renderKubeconfig(server: string, caPem: string, user: Record<string, string>): string {
  return toYaml({
    apiVersion: "v1",
    kind: "Config",
    clusters: [{ name: "phantomgate-test", cluster: { server, "certificate-authority-data": b64(caPem) } }],
    users: [{ name: "phantomgate-user", user }],
    contexts: [
      { name: "phantomgate-test", context: { cluster: "phantomgate-test", user: "phantomgate-user" } },
    ],
    "current-context": "phantomgate-test",
  });
}

// ---- processes ---------------------------------------------------------------------------------------

/** Own process group (so stop() also reaches any children), output appended to a log file. */
function spawnLogged(command: string, args: readonly string[], logFile: string): ChildProcess {
  const fd = openSync(logFile, "a");
  try {
    const child = spawn(command, args, { stdio: ["ignore", fd, fd], detached: true });
    // Without a listener a failed spawn (ENOENT) would be thrown as an uncaught error.
    child.on("error", () => undefined);
    if (child.pid === undefined) throw new Error(`could not start ${command} (missing or not executable?)`);
    return child;
  } finally {
    closeSync(fd);
  }
}

function killGroup(pid: number | undefined, signal: NodeJS.Signals): void {
  if (pid === undefined || pid <= 0) return;
  try {
    process.kill(-pid, signal);
  } catch {
    // Already gone.
  }
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  const exited = once(child, "exit");
  killGroup(child.pid, "SIGTERM");
  const timer = setTimeout(() => killGroup(child.pid, "SIGKILL"), 10_000);
  await exited;
  clearTimeout(timer);
  killGroup(child.pid, "SIGKILL"); // anything left in the group
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Guards against pid reuse before signalling a recorded pid. */
function commandLineMentions(pid: number, text: string): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(text);
  } catch {
    return false;
  }
}

const exitHooks = new Set<() => void>();
let exitHooksInstalled = false;
const fatalSignals: NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP"];

function runExitHooks(): void {
  for (const hook of exitHooks) hook();
  exitHooks.clear();
}

function onFatalSignal(signal: NodeJS.Signals): void {
  runExitHooks();
  // Keep the default behaviour (terminate) unless someone else also handles the signal.
  if (process.listenerCount(signal) === 1) {
    process.removeListener(signal, onFatalSignal);
    process.kill(process.pid, signal);
  }
}

/** Kills the clusters of this process when it exits or is told to stop, so no server outlives it. */
function registerExitHook(hook: () => void): void {
  exitHooks.add(hook);
  if (exitHooksInstalled) return;
  exitHooksInstalled = true;
  process.on("exit", runExitHooks);
  for (const signal of fatalSignals) process.on(signal, onFatalSignal);
}

function unregisterExitHook(hook: () => void): void {
  exitHooks.delete(hook);
}

/**
 * Temp clusters whose owning process died without cleaning up (SIGKILL, crash): kill what still runs
 * there and remove the dir. Only dirs with our prefix, and only processes whose command line names the dir.
 */
function reapStaleTestClusters(): void {
  let entries: string[];
  try {
    entries = readdirSync(tmpdir()).filter((name) => name.startsWith(tempPrefix));
  } catch {
    return;
  }
  for (const name of entries) {
    const dir = join(tmpdir(), name);
    try {
      const owner = JSON.parse(readFileSync(join(dir, "owner.json"), "utf8")) as { ownerPid?: unknown };
      if (typeof owner.ownerPid !== "number" || isAlive(owner.ownerPid)) continue;
    } catch {
      continue; // being created right now, or not ours
    }
    try {
      const pids = JSON.parse(readFileSync(join(dir, "pids.json"), "utf8")) as Record<string, unknown>;
      for (const pid of Object.values(pids)) {
        if (typeof pid === "number" && commandLineMentions(pid, dir)) killGroup(pid, "SIGKILL");
      }
    } catch {
      // Died before recording pids: look for processes that name the dir.
      for (const entry of readdirSync("/proc")) {
        const pid = Number(entry);
        if (Number.isInteger(pid) && pid !== process.pid && commandLineMentions(pid, dir)) {
          killGroup(pid, "SIGKILL");
        }
      }
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---- readiness ---------------------------------------------------------------------------------------

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

class PortClashError extends Error {}

function logTail(logFile: string, lines = 25): string {
  try {
    return readFileSync(logFile, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

/** Polls `probe` until true; fails fast if the process exits, with the log's tail and path. */
async function waitFor(
  child: ChildProcess,
  logFile: string,
  name: string,
  timeoutMs: number,
  probe: () => Promise<boolean>,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError = "";
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) {
      const tail = logTail(logFile);
      const message =
        `${name} exited before it was ready (code ${child.exitCode ?? "none"}, signal ` +
        `${child.signalCode ?? "none"}); log: ${logFile}\n${tail}`;
      if (/address already in use/i.test(tail)) throw new PortClashError(message);
      throw new Error(message);
    }
    try {
      if (await probe()) return;
    } catch (error) {
      lastError = error instanceof Error ? error.message : String(error);
    }
    if (Date.now() > deadline) {
      throw new Error(
        `${name} was not ready within ${timeoutMs} ms (last probe error: ${lastError || "none"}); ` +
          `log: ${logFile}\n${logTail(logFile)}`,
      );
    }
    await sleep(250);
  }
}

/** A free port can be taken between finding it and binding it: try again with another one. */
async function retryOnPortClash<T>(logFile: string, attempt: () => Promise<T>): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await attempt();
    } catch (error) {
      if (!(error instanceof PortClashError) || i >= 3) throw error;
      await writeFile(logFile, `--- port clash, retrying (attempt ${i + 1}) ---\n`, { flag: "a" });
    }
  }
}

async function etcdHealthy(url: string): Promise<boolean> {
  const response = await fetch(`${url}/health`, { signal: AbortSignal.timeout(2_000) });
  const body = (await response.json()) as { health?: unknown };
  return response.ok && body.health === "true";
}

function httpsGet(
  url: string,
  tls: { ca: string; cert: string; key: string },
): Promise<{ status: number; body: string }> {
  return new Promise((resolvePromise, reject) => {
    const req = request(url, { ...tls, method: "GET", timeout: 5_000, agent: false }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => (body += chunk));
      res.on("end", () => resolvePromise({ status: res.statusCode ?? 0, body }));
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error(`GET ${url} timed out`)));
    req.on("error", reject);
    req.end();
  });
}

// ---- running the clients -----------------------------------------------------------------------------

function run(
  command: string,
  args: readonly string[],
  env: Record<string, string>,
  options: RunOptions = {},
): Promise<CommandResult & { exitCode: number }> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(command, args, {
      env: { ...process.env, ...env },
      stdio: ["pipe", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
    child.on("error", reject);
    child.on("close", (code, signal) => {
      const exitCode = code ?? 128;
      if (exitCode !== 0 && options.allowFailure !== true) {
        reject(
          new Error(
            `${command} ${args.join(" ")} exited with ${code ?? signal ?? "?"}\n${stderr.trim()}\n${stdout.trim()}`,
          ),
        );
        return;
      }
      resolvePromise({ stdout, stderr, exitCode });
    });
    child.stdin.end(options.input ?? "");
  });
}
