/** Entry point of the TypeScript interop peer: JSON lines on stdin and stdout (PEER.md). */

import { createInterface } from "node:readline";

import { serve } from "./peer.js";

process.on("uncaughtException", (error) => {
  process.stderr.write(`peer: uncaught: ${error.stack ?? String(error)}\n`);
});
process.on("unhandledRejection", (reason) => {
  process.stderr.write(`peer: unhandled rejection: ${String(reason)}\n`);
});

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity, terminal: false });
const status = await serve(lines, (line) => {
  process.stdout.write(line);
});
lines.close();
process.stdin.pause();
process.exitCode = status;
