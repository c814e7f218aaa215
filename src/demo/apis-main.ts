// Runs the demo APIs (echo, invoices, video, ledger helper, payments) in one process of their own; prints one ready
// line as JSON on stdout. The API-to-API audit lines of the invoices and payments APIs go to stderr.
import type { AddressInfo } from "node:net";
import { parseArgs } from "node:util";
import { createJsonLineAuditSink } from "../sdk/index.ts";
import { startEchoApi } from "./echo-api.ts";
import { createInvoicesApi } from "./invoices-api.ts";
import { createLedgerHelper } from "./ledger-helper.ts";
import { createPaymentsApi } from "./payments-api.ts";
import { stopOnSignalOrParentGone } from "./parent-watch.ts";
import { createVideoApi } from "./video-api.ts";

const { values } = parseArgs({
  options: {
    "echo-port": { type: "string", default: "9101" },
    "invoices-port": { type: "string", default: "9102" },
    "video-port": { type: "string", default: "9103" },
    "ledger-port": { type: "string", default: "9104" },
    "payments-port": { type: "string", default: "9105" },
    issuer: { type: "string", default: "http://127.0.0.1:9000" },
    "as-jwks": { type: "string" },
    "token-endpoint": { type: "string" },
    "gateway-jwks": { type: "string", default: "http://127.0.0.1:9901/.well-known/jwks.json" },
    "mint-issuer": { type: "string", default: "urn:phantomgate:gateway" },
  },
});

const host = "127.0.0.1";
const issuer = values.issuer;
const jwksUri = values["as-jwks"] ?? `${issuer}/jwks`;
const audit = createJsonLineAuditSink(process.stderr);

const echo = await startEchoApi(Number(values["echo-port"]));
const ledger = createLedgerHelper({ issuer, jwksUri });
await ledger.listen({ port: Number(values["ledger-port"]), host });
const ledgerUrl = `http://${host}:${portOf(ledger.server.address())}`;
const payments = createPaymentsApi({ issuer, jwksUri, ledgerUrl, audit });
await payments.listen({ port: Number(values["payments-port"]), host });
const invoices = createInvoicesApi({
  issuer,
  jwksUri,
  tokenEndpoint: values["token-endpoint"] ?? `${issuer}/token`,
  ledgerUrl,
  paymentsUrl: `http://${host}:${portOf(payments.server.address())}`,
  audit,
});
await invoices.listen({ port: Number(values["invoices-port"]), host });
const video = createVideoApi({
  issuer: values["mint-issuer"],
  jwksUri: values["gateway-jwks"],
  audience: "video-api",
});
await video.listen({ port: Number(values["video-port"]), host });

function portOf(address: AddressInfo | string | null): number {
  return typeof address === "object" && address !== null ? address.port : 0;
}

process.stdout.write(
  `${JSON.stringify({
    ready: true,
    echoPort: echo.port,
    invoicesPort: portOf(invoices.server.address()),
    videoPort: portOf(video.server.address()),
    ledgerPort: portOf(ledger.server.address()),
    paymentsPort: portOf(payments.server.address()),
  })}\n`,
);

const stop = (): void => {
  echo.server.close();
  void Promise.all([invoices.close(), video.close(), payments.close(), ledger.close()]).then(() =>
    process.exit(0),
  );
};
stopOnSignalOrParentGone(stop);
