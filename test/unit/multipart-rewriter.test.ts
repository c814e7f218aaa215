// The multipart rewriter on its own: a chunk larger than the parser takes at once is fed in pieces, and the
// rewritten body has the same parts whatever the chunking.
import { describe, expect, it } from "vitest";
import type { GatewayError } from "../../src/errors/catalogue.ts";
import { createMultipartRewriter } from "../../src/gateway/firewall/multipart-rewrite.ts";

async function rewrite(
  contentType: string,
  chunks: readonly Buffer[],
): Promise<{ body: Buffer; boundary: string }> {
  const rewriter = createMultipartRewriter(contentType);
  const out: Buffer[] = [];
  let failed: GatewayError | undefined;
  rewriter.start({ push: (data) => out.push(data), fail: (refusal) => (failed = refusal) });
  for (const chunk of chunks) await new Promise<void>((resolve) => rewriter.write(chunk, resolve));
  const refusal = await new Promise<GatewayError | undefined>((resolve) => rewriter.end(resolve));
  expect(refusal ?? failed).toBeUndefined();
  const boundary = /boundary=(\S+)$/.exec(rewriter.contentType)?.[1] ?? "";
  return { body: Buffer.concat(out), boundary };
}

function body(boundary: string, file: Buffer): Buffer {
  return Buffer.concat([
    Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n`),
    Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="f"; filename="f.bin"\r\n`),
    Buffer.from("Content-Type: application/octet-stream\r\n\r\n"),
    file,
    Buffer.from(`\r\n--${boundary}--\r\n`),
  ]);
}

describe("createMultipartRewriter", () => {
  const file = Buffer.alloc(300_000);
  for (let i = 0; i < file.length; i++) file[i] = (i * 31) % 256;

  it("takes a body in one chunk far larger than the parser's mark (it once waited for good)", async () => {
    const { body: out, boundary } = await rewrite("multipart/form-data; boundary=q", [body("q", file)]);
    expect(out.equals(body(boundary, file))).toBe(true);
  });

  it("writes the same body whatever the chunking", async () => {
    const input = body("q", file);
    for (const size of [1_000, 65_536, 70_001]) {
      const chunks: Buffer[] = [];
      for (let at = 0; at < input.length; at += size) chunks.push(input.subarray(at, at + size));
      const { body: out, boundary } = await rewrite("multipart/form-data; boundary=q", chunks);
      expect(out.equals(body(boundary, file)), `chunks of ${size}`).toBe(true);
    }
  });
});
