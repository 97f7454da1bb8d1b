/**
 * Entry point of the TypeScript interop peer: JSON lines on stdin and stdout (PEER.md).
 * `CIPHERPOST_PEER_SPQR` (`off`, `offered`, `required`; default `off`) sets the SPQR
 * settings of the sessions it creates, as for the Python peer.
 */

import { createInterface } from "node:readline";

import { Peer, serve, spqrFromEnvironment } from "./peer.js";

process.on("uncaughtException", (error) => {
  process.stderr.write(`peer: uncaught: ${error.stack ?? String(error)}\n`);
});
process.on("unhandledRejection", (reason) => {
  process.stderr.write(`peer: unhandled rejection: ${String(reason)}\n`);
});

let spqr;
try {
  spqr = spqrFromEnvironment();
} catch (error) {
  process.stderr.write(`peer: ${String(error)}\n`);
  process.exit(2);
}

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity, terminal: false });
const status = await serve(lines, (line) => {
  process.stdout.write(line);
}, new Peer(undefined, undefined, spqr));
lines.close();
process.stdin.pause();
process.exitCode = status;
