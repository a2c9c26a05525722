// Inflate Deflated Image Frame Compression (Sup 244) fragments with Node's zlib (an inflater no one here wrote).
// stdin: JSON array of base64 fragments (one per frame, as the file stores them).
// stdout: JSON array of base64 inflated frames; a fragment that is not raw DEFLATE fails the whole run (exit 1).
import { inflateRawSync } from "node:zlib";

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const fragments = JSON.parse(Buffer.concat(chunks).toString("utf8"));
const frames = fragments.map((text, index) => {
  try {
    return inflateRawSync(Buffer.from(text, "base64")).toString("base64");
  } catch (error) {
    process.stderr.write(`fragment ${index + 1}: ${error.message}\n`);
    process.exit(1);
  }
});
process.stdout.write(JSON.stringify(frames));
