// HTTP helpers for tests: tokens from the demo AS, and raw requests that no client library normalises.
import { connect } from "node:net";

export async function getToken(
  tokenEndpoint: string,
  scope: string,
  options: { clientId?: string; secret?: string; resource?: string } = {},
): Promise<string> {
  const form = new URLSearchParams({ grant_type: "client_credentials", scope });
  if (options.resource !== undefined) form.set("resource", options.resource);
  const basic = Buffer.from(
    `${options.clientId ?? "demo-client"}:${options.secret ?? "demo-secret"}`,
  ).toString("base64");
  const response = await fetch(tokenEndpoint, {
    method: "POST",
    headers: { authorization: `Basic ${basic}`, "content-type": "application/x-www-form-urlencoded" },
    body: form,
  });
  const body = (await response.json()) as { access_token?: string; error?: string };
  if (body.access_token === undefined) throw new Error(`token request failed: ${JSON.stringify(body)}`);
  return body.access_token;
}

export interface RawResponse {
  readonly status: number;
  readonly head: string;
  readonly body: string;
}

/** Sends `request` verbatim (CRLF line ends added) and reads until the server closes or a full response arrives. */
export function rawRequest(port: number, lines: readonly string[], body = ""): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, "127.0.0.1");
    let data = "";
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => {
      data += chunk;
      const split = data.indexOf("\r\n\r\n");
      if (split === -1) return;
      const head = data.slice(0, split);
      const length = /\r\ncontent-length: *(\d+)/i.exec(head)?.[1];
      if (length !== undefined && Buffer.byteLength(data.slice(split + 4)) >= Number(length)) socket.end();
    });
    socket.on("error", reject);
    socket.on("close", () => {
      const split = data.indexOf("\r\n\r\n");
      const head = split === -1 ? data : data.slice(0, split);
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? "0");
      resolve({ status, head, body: split === -1 ? "" : data.slice(split + 4) });
    });
    socket.write(`${lines.join("\r\n")}\r\n\r\n${body}`);
  });
}
