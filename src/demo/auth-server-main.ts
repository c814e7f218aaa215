// Process entry for the demo AS: `node src/demo/auth-server-main.ts --port 9000 [--issuer URL]`; one ready line on stdout, logs on stderr.
import { parseArgs } from "node:util";

import { z } from "zod";

import { startDemoAuthServer } from "./auth-server.ts";
import { stopOnSignalOrParentGone } from "./parent-watch.ts";

/** The demo contract's issuer is http://127.0.0.1:9000. */
const DEFAULT_PORT = 9000;

const Flags = z
  .object({
    port: z.coerce.number().int().min(0).max(65_535).default(DEFAULT_PORT),
    issuer: z.url({ protocol: /^https?$/ }).optional(),
    "access-token-ttl-seconds": z.coerce.number().int().positive().optional(),
  })
  .strict();

async function main(): Promise<number> {
  let flags: z.infer<typeof Flags>;
  try {
    const { values } = parseArgs({
      options: {
        port: { type: "string" },
        issuer: { type: "string" },
        "access-token-ttl-seconds": { type: "string" },
      },
      strict: true,
      allowPositionals: false,
    });
    flags = Flags.parse(values);
  } catch (error) {
    const reason = error instanceof z.ZodError ? z.prettifyError(error) : String(error);
    process.stderr.write(
      `demo-auth-server: ${reason}\nusage: auth-server-main.ts [--port N] [--issuer URL] [--access-token-ttl-seconds N]\n`,
    );
    return 2;
  }

  const server = await startDemoAuthServer({
    port: flags.port,
    ...(flags.issuer === undefined ? {} : { issuer: flags.issuer }),
    ...(flags["access-token-ttl-seconds"] === undefined
      ? {}
      : { accessTokenTtlSeconds: flags["access-token-ttl-seconds"] }),
  });

  await new Promise<void>((resolve) => {
    stopOnSignalOrParentGone(() => void server.close().then(resolve));
    // Parents (the demo command, tests) wait for this exact line before sending traffic.
    process.stdout.write(`${JSON.stringify({ ready: true, issuer: server.issuer, port: server.port })}\n`);
  });
  process.stderr.write("demo-auth-server: stopped\n");
  return 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    const description = error instanceof Error ? `${error.name}: ${error.message}` : "unknown error";
    process.stderr.write(`demo-auth-server: failed to start: ${description}\n`);
    process.exitCode = 1;
  },
);
