// Runs the demo APIs (echo, invoices, video) in one process of their own; prints one ready line as JSON.
import { parseArgs } from "node:util";
import { startEchoApi } from "./echo-api.ts";
import { createInvoicesApi } from "./invoices-api.ts";
import { createVideoApi } from "./video-api.ts";

const { values } = parseArgs({
  options: {
    "echo-port": { type: "string", default: "9101" },
    "invoices-port": { type: "string", default: "9102" },
    "video-port": { type: "string", default: "9103" },
    issuer: { type: "string", default: "http://127.0.0.1:9000" },
    "as-jwks": { type: "string" },
    "gateway-jwks": { type: "string", default: "http://127.0.0.1:9901/.well-known/jwks.json" },
    "mint-issuer": { type: "string", default: "urn:phantomgate:gateway" },
  },
});

const echo = await startEchoApi(Number(values["echo-port"]));
const invoices = createInvoicesApi({
  issuer: values.issuer,
  jwksUri: values["as-jwks"] ?? `${values.issuer}/jwks`,
});
await invoices.listen({ port: Number(values["invoices-port"]), host: "127.0.0.1" });
const video = createVideoApi({ issuer: values["mint-issuer"], jwksUri: values["gateway-jwks"], audience: "video-api" });
await video.listen({ port: Number(values["video-port"]), host: "127.0.0.1" });

const portOf = (address: ReturnType<typeof invoices.server.address>): number =>
  typeof address === "object" && address !== null ? address.port : 0;
process.stdout.write(
  `${JSON.stringify({ ready: true, echoPort: echo.port, invoicesPort: portOf(invoices.server.address()), videoPort: portOf(video.server.address()) })}\n`,
);

const stop = (): void => {
  echo.server.close();
  void Promise.all([invoices.close(), video.close()]).then(() => process.exit(0));
};
process.once("SIGINT", stop);
process.once("SIGTERM", stop);
