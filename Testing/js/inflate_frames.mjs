// Node's zlib (an implementation no one here wrote) on Deflated Image Frame Compression (Sup 244) frames.
// `node inflate_frames.mjs` inflates, `node inflate_frames.mjs deflate` deflates (a foreign writer for the tests).
// stdin: JSON array of base64 buffers (one per frame); stdout: JSON array of base64 results.
// A buffer that is not raw DEFLATE (RFC 1951, no zlib header) fails the whole run (exit 1).
import { deflateRawSync, inflateRawSync } from "node:zlib";

const transform = process.argv[2] === "deflate" ? deflateRawSync : inflateRawSync;
const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const buffers = JSON.parse(Buffer.concat(chunks).toString("utf8"));
const results = buffers.map((text, index) => {
  try {
    return transform(Buffer.from(text, "base64")).toString("base64");
  } catch (error) {
    process.stderr.write(`frame ${index + 1}: ${error.message}\n`);
    process.exit(1);
  }
});
process.stdout.write(JSON.stringify(results));
