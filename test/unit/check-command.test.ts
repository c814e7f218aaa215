// `phantomgate check` end to end through its Command interface, with in-memory output streams.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { MemoryStream } from "../helpers/memory-stream.ts";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { checkCommand } from "../../src/cli/commands/check.ts";

const examples = resolve(import.meta.dirname, "../../examples");

async function runCheck(...argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const stdout = new MemoryStream();
  const stderr = new MemoryStream();
  const code = await checkCommand.run(argv, { stdout, stderr, env: {} });
  return { code, stdout: stdout.text, stderr: stderr.text };
}

let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "phantomgate-check-"));
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const brokenRoute = `apiVersion: phantomgate.dev/v1alpha1
kind: ApiRoute
metadata: { name: typo, namespace: default }
spec:
  scopePolicyRefs: [{ name: billing }]
  authServerRef: { name: demo }
  rules:
    - matches: [{ path: { value: /typo } }]
      authentication: { mode: phantom }
      requiredScopes: { allOf: [raed_invoice] }
      backendRefs: [{ url: "http://127.0.0.1:9101" }]
`;

describe("phantomgate check", () => {
  it("prints the demo routes most specific first and exits 0", async () => {
    const { code, stdout, stderr } = await runCheck("-f", examples);

    expect(code).toBe(0);
    expect(stderr).toBe("");
    const lines = stdout.split("\n");
    expect(lines[0]).toMatch(/^Compiled 5 routes from 7 objects \(revision [0-9a-f]{16}\)\.$/);
    expect(lines[2]).toMatch(/^ID\s+RULE\s+HOSTS\s+PATH\s+METHODS\s+MODE\s+SCOPES\s+BACKENDS$/);
    const ids = lines.slice(3, 8).map((line) => line.split(/\s+/).slice(0, 2));
    // The rule names of examples/routes.yaml, which name the routes too.
    expect(ids).toEqual([
      ["default/echo#public", "public"],
      ["default/invoices#read", "read"],
      ["default/invoices#write", "write"],
      ["default/video#stream", "stream"],
      ["default/echo#echo", "echo"],
    ]);
    expect(stdout).toContain("prefix /video");
    expect(stdout).toContain("mint (aud video-api)");
    expect(stdout).toContain("DELETE,PATCH,POST,PUT");
    expect(stdout).toContain("No problems.");
    expect(stdout).not.toContain("gateway-secret");
  });

  it("prints every problem with file, object and message, and exits 1", async () => {
    await writeFile(join(dir, "typo.yaml"), brokenRoute);
    await writeFile(join(dir, "broken.yaml"), "kind: [unclosed\n");

    const { code, stdout } = await runCheck("-f", examples, "--filename", dir);

    expect(code).toBe(1);
    expect(stdout).toContain("2 problems:");
    expect(stdout).toContain(`${join(dir, "broken.yaml")}: YAML syntax error at line`);
    expect(stdout).toContain(`${join(dir, "typo.yaml")} (document 1): ApiRoute default/typo: UnknownScope`);
    expect(stdout).toContain(
      "    spec.rules[0].requiredScopes.allOf[0]: scope 'raed_invoice' is not defined in ScopePolicy default/billing",
    );
    expect(stdout).toContain("default/echo#echo");
  });

  it("notes rule names its routes' ids cannot use (shared in a route, or digits only)", async () => {
    const rule = (name: string, path: string) => `
    - name: "${name}"
      matches: [{ path: { type: PathPrefix, value: ${path} } }]
      authentication: { mode: none }
      backendRefs: [{ url: "http://127.0.0.1:9101" }]`;
    await writeFile(
      join(dir, "names.yaml"),
      `apiVersion: phantomgate.dev/v1alpha1
kind: ApiRoute
metadata: { name: names, namespace: default }
spec:
  rules:${rule("same", "/n1")}${rule("same", "/n2")}${rule("7", "/n3")}${rule("own", "/n4")}
`,
    );
    const { code, stdout } = await runCheck("-f", examples, "--filename", dir);
    expect(code).toBe(0);
    expect(stdout).toContain("default/names#own");
    const notes = stdout.split("\n").filter((line) => line.startsWith("  default/names#"));
    expect(notes).toEqual([
      '  default/names#0: name "same"',
      '  default/names#1: name "same"',
      '  default/names#2: name "7"',
    ]);
    // The demo's own names are all used: no note for them.
    const demo = await runCheck("-f", examples);
    expect(demo.stdout).not.toContain("Rule names not used");
  });

  it("shows the audiences a rule accepts in its mode column", async () => {
    await writeFile(
      join(dir, "billing.yaml"),
      `apiVersion: phantomgate.dev/v1alpha1
kind: ApiRoute
metadata: { name: billing, namespace: default }
spec:
  scopePolicyRefs: [{ name: billing }]
  authServerRef: { name: demo }
  rules:
    - matches: [{ path: { value: /billing } }]
      authentication: { mode: phantom, acceptedAudiences: [urn:a, urn:b] }
      backendRefs: [{ url: "http://127.0.0.1:9101" }]
    - matches: [{ path: { value: /billing-exchanged } }]
      authentication: { mode: exchange, audience: ledger, acceptedAudiences: [urn:a] }
      backendRefs: [{ url: "http://127.0.0.1:9101" }]
`,
    );

    const { code, stdout } = await runCheck("-f", examples, "-f", dir);

    expect(code).toBe(0);
    expect(stdout).toContain("phantom (accepts aud urn:a | urn:b)");
    expect(stdout).toContain("exchange (aud ledger; accepts aud urn:a)");
  });

  it("reads a file named twice (or as a directory and a file in it) once", async () => {
    const once = await runCheck("-f", examples);
    const twice = await runCheck("-f", examples, "-f", join(examples, "routes.yaml"), "-f", examples);
    expect(twice.code).toBe(0);
    expect(twice.stdout).toBe(once.stdout);
  });

  it("exits 1 for a directory without manifest files", async () => {
    const { code, stdout } = await runCheck("-f", dir);
    expect(code).toBe(1);
    expect(stdout).toContain("no manifest files (*.yaml, *.yml, *.json) in this directory");
  });

  it("checks a single file too", async () => {
    const file = join(dir, "typo.yaml");
    await writeFile(file, brokenRoute);

    const { code, stdout } = await runCheck("-f", file);

    expect(code).toBe(1);
    expect(stdout).toMatch(/^Compiled 0 routes from 1 object /);
    expect(stdout).toContain("UnknownScopePolicy");
  });

  it("escapes control characters that come from the files, so they cannot rewrite the terminal", async () => {
    const file = join(dir, "evil\nfake.yaml");
    await writeFile(
      file,
      'apiVersion: phantomgate.dev/v1alpha1\nkind: ApiRoute\nmetadata: { name: x, namespace: "\\e[2J\\u202e" }\n',
    );

    const { code, stdout } = await runCheck("-f", file);

    expect(code).toBe(1);
    expect(stdout).not.toContain("\u001b");
    expect(stdout).not.toContain("\u202e");
    expect(stdout).toContain(
      `${join(dir, "evil\\u000afake.yaml")} (document 1): ApiRoute \\u001b[2J\\u202e/x: Invalid`,
    );
  });

  it("reports a file the YAML reader refuses (an alias bomb) as a problem, and exits 1", async () => {
    const file = join(dir, "laughs.yaml");
    const row = (alias: string) => `[${Array.from({ length: 9 }, () => alias).join(", ")}]`;
    await writeFile(
      file,
      `a: &a ${row("lol")}\nb: &b ${row("*a")}\nc: &c ${row("*b")}\nd: &d ${row("*c")}\ne: &e ${row("*d")}\n`,
    );

    const { code, stdout } = await runCheck("-f", file);

    expect(code).toBe(1);
    expect(stdout).toContain(`${file}: document 1: Excessive alias count`);
  });

  it("writes JSON without client secrets", async () => {
    await writeFile(join(dir, "typo.yaml"), brokenRoute);

    const good = await runCheck("-f", examples, "-o", "json");
    const bad = await runCheck("-f", examples, "-f", dir, "--output=json");

    expect(good.code).toBe(0);
    const output = JSON.parse(good.stdout) as {
      ok: boolean;
      revision: string;
      routes: { id: string; ruleName?: string }[];
      authServers: { id: string; client: object }[];
      problems: unknown[];
    };
    expect(output.ok).toBe(true);
    expect(output.routes).toHaveLength(5);
    expect(output.routes.find((route) => route.id === "default/video#stream")?.ruleName).toBe("stream");
    expect(output.authServers[0]?.client).toEqual({ id: "gateway", method: "client_secret_basic" });
    expect(good.stdout).not.toContain("gateway-secret");

    expect(bad.code).toBe(1);
    expect((JSON.parse(bad.stdout) as { problems: unknown[] }).problems).toEqual([
      {
        file: join(dir, "typo.yaml"),
        document: 1,
        kind: "ApiRoute",
        namespace: "default",
        name: "typo",
        reason: "UnknownScope",
        message:
          "spec.rules[0].requiredScopes.allOf[0]: scope 'raed_invoice' is not defined in ScopePolicy default/billing",
      },
    ]);
  });

  it.each([
    [[], "missing -f DIR|FILE"],
    [["-f", examples, "--output", "yaml"], "--output must be text or json"],
    [["-f", examples, "--verbose"], "--verbose"],
    [["-f", examples, "extra"], "extra"],
    [["-f"], "-f"],
  ])("exits 2 on usage error %j", async (argv, message) => {
    const { code, stdout, stderr } = await runCheck(...argv);
    expect(code).toBe(2);
    expect(stdout).toBe("");
    expect(stderr).toContain(message);
    expect(stderr).toContain("phantomgate check --help");
  });

  it("exits 2 when a path cannot be read", async () => {
    const { code, stderr } = await runCheck("-f", join(dir, "missing"));
    expect(code).toBe(2);
    expect(stderr).toContain("ENOENT");
  });

  it("lists its flags in --help", async () => {
    const { code, stdout } = await runCheck("--help");
    expect(code).toBe(0);
    expect(stdout).toBe(checkCommand.help);
    for (const flag of ["-f, --filename", "-o, --output", "-h, --help", "Exit status"]) {
      expect(checkCommand.help).toContain(flag);
    }
  });
});
