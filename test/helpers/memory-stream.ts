// A Writable that keeps what is written, as text: the stdout and stderr of a command run in-process.
import { Writable } from "node:stream";

export class MemoryStream extends Writable {
  text = "";
  override _write(chunk: Buffer | string, _encoding: BufferEncoding, callback: () => void): void {
    this.text += chunk.toString();
    callback();
  }
}
